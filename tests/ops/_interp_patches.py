"""Test-harness patch for the Triton interpreter (TRITON_INTERPRET=1); imported by _interp_cases.py.

Multi-config `@triton.autotune` benchmarks its configs by timing them on a GPU, which the interpreter cannot do;
the stub reports equal timings so the first config is used. Our kernels do not autotune today; the stub keeps that
from breaking CPU tests if one ever does.
"""

from __future__ import annotations


def install() -> None:
    try:
        from triton.runtime import autotuner

        def _equal_timings(self, *args, **kwargs):
            return [0.0, 0.0, 0.0]

        autotuner.Autotuner._bench = _equal_timings
    except Exception:  # pragma: no cover - autotuner internals moved; nothing of ours autotunes
        pass
