"""Inference engine: static state pool, linear (YOCO) prefill, batched decode, sampling, `Generator`."""

from sambay.engine.decode import decode_step
from sambay.engine.generator import GenerationChunk, GenerationResult, Generator, Timings
from sambay.engine.prefill import prefill
from sambay.engine.sampling import Sampler, SamplingParams
from sambay.engine.state import InferenceState, allocated_bytes
from sambay.engine.text import ByteTokenizer

__all__ = ["ByteTokenizer", "GenerationChunk", "GenerationResult", "Generator", "InferenceState", "Sampler",
           "SamplingParams", "Timings", "allocated_bytes", "decode_step", "prefill"]
