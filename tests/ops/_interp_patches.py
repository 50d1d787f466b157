"""Test-harness patches for the Triton interpreter (TRITON_INTERPRET=1); imported by _interp_cases.py.

1. `tl.associative_scan` with a user combine function runs in the interpreter one *element* at a time
   (`ScanOps.generic_scan`: one Python call of the combine per element, ~1 s per 25k elements). We replace
   it with the same left fold done one *slice* along the scan axis at a time: the combine is elementwise,
   so applying it to whole slices gives identical results, about 100x faster.
2. Multi-config `@triton.autotune` needs a GPU to benchmark configs (KERNELS_AND_ENGINE.md section 7); the
   stub reports equal timings so the first config is used. Our kernels do not autotune today; the stub
   keeps that from breaking CPU tests if one ever does.
"""

from __future__ import annotations

import numpy as np


def install() -> None:
    from triton.runtime import interpreter as I

    def generic_scan(self, input):
        datas = [arg.handle.data for arg in input]
        axis = self.axis
        outs = [np.empty_like(d) for d in datas]
        length = datas[0].shape[axis]
        acc = None
        for i in range(length):
            cur = tuple(
                self.to_tensor(np.ascontiguousarray(np.take(d, i, axis=axis)), input[k].dtype)
                for k, d in enumerate(datas)
            )
            if acc is None:
                acc = cur
            else:
                ret = self.combine_fn.fn(*acc, *cur)
                acc = ret if isinstance(ret, tuple) else (ret,)
            for k, o in enumerate(outs):
                sl = [slice(None)] * o.ndim
                sl[axis] = i
                o[tuple(sl)] = acc[k].handle.data
        return [self.to_tensor(o, input[k].dtype) for k, o in enumerate(outs)]

    I.ScanOps.generic_scan = generic_scan

    try:
        from triton.runtime import autotuner

        def _equal_timings(self, *args, **kwargs):
            return [0.0, 0.0, 0.0]

        autotuner.Autotuner._bench = _equal_timings
    except Exception:  # pragma: no cover - autotuner internals moved; nothing of ours autotunes
        pass
