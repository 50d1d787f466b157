"""Inference engine: `Engine` (scheduler, model runner, output processing) over a static state pool, linear
prefill, batched decode, sampling, and `Generator`, its synchronous client."""

from sambay.engine.core import Engine, EngineDeadError, EngineStats, OutputStream
from sambay.engine.decode import decode_step
from sambay.engine.generator import GenerationChunk, GenerationResult, Generator, Timings
from sambay.engine.prefill import prefill
from sambay.engine.request import RequestOutput
from sambay.engine.sampling import Sampler, SamplingParams
from sambay.engine.state import InferenceState, allocated_bytes
from sambay.engine.text import ByteTokenizer

__all__ = ["ByteTokenizer", "Engine", "EngineDeadError", "EngineStats", "OutputStream", "RequestOutput", "GenerationChunk", "GenerationResult", "Generator", "InferenceState", "Sampler",
           "SamplingParams", "Timings", "allocated_bytes", "decode_step", "prefill"]
