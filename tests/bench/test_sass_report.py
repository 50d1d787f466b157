"""`tools/sass.py`'s loop report: the load-to-use distance that exposes a prefetch defeated by a copy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("triton")
_spec = importlib.util.spec_from_file_location(
    "sass_tool", Path(__file__).resolve().parents[2] / "tools" / "sass.py")
sass = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sass)


def _sass(*lines: str) -> str:
    return "\n".join(f"        /*{0x100 + 16 * i:04x}*/                   {line} ;" for i, line in enumerate(lines))


def test_a_register_copy_of_a_prefetched_load_at_the_loop_end_is_a_short_load_to_use():
    text = _sass(
        "SHF.L.U32 R5, R11, 0x10, RZ",  # uses last iteration's copy: fine
        "@P0 LDG.E.U16 R10, desc[UR4][R2.64]",  # prefetch of the next token
        "LEA R2, P0, R4, UR10, 0x1",  # UR10 is not R10
        "FADD R6, R5, R7",
        "PRMT R11, R10, 0x7610, R11",  # the copy into the loop-carried register: waits for the load
        "@P1 BRA 0x100",
    )
    [(lo, hi, ops, use)] = sass.loops(text)
    assert (lo, hi, ops["LDG"]) == (0x100, 0x150, 1)
    assert use == (3, 0x110, "PRMT")


def test_a_prefetch_first_read_in_the_next_iteration_follows_the_back_edge():
    text = _sass(
        "SHF.L.U32 R5, R10, 0x10, RZ",  # reads the load issued in the previous iteration
        "@P0 LDG.E.128 R8, desc[UR4][R2.64]",  # R8..R11
        "FADD R6, R5, R7",
        "@P1 BRA 0x100",
    )
    [(_, _, _, use)] = sass.loops(text)
    assert use == (3, 0x110, "SHF.L.U32")
