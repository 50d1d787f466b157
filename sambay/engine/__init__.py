"""Inference engine: static state pool, linear (YOCO) prefill, batched decode, sampling, `Generator`."""

from sambay.engine.decode import decode_step
from sambay.engine.prefill import prefill
from sambay.engine.state import InferenceState, allocated_bytes

__all__ = ["InferenceState", "allocated_bytes", "decode_step", "prefill"]
