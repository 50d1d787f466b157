"""Comparing the tensor names and shapes of a checkpoint with a model, before any data is loaded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sambay.interop.errors import CheckpointError
from sambay.interop.messages import natural_key
from sambay.interop.safetensors_header import TensorInfo

__all__ = ["check_state_dict"]


def _shape_of(value: Any) -> tuple[int, ...]:
    if isinstance(value, TensorInfo):
        return tuple(value.shape)
    shape = getattr(value, "shape", value)
    return tuple(int(d) for d in shape)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def check_state_dict(
    expected: Mapping[str, Any],
    found: Mapping[str, Any],
    context: str = "checkpoint",
    *,
    max_items: int = 20,
) -> None:
    """Compare tensor names and shapes; raise one :class:`CheckpointError` listing every problem.

    ``expected`` (usually the model) and ``found`` (usually the checkpoint) map names to shapes; a value
    may be a shape tuple / ``torch.Size``, a tensor, or a :class:`TensorInfo` (so the output of
    ``read_checkpoint_header`` can be passed directly). The message lists missing tensors,
    unexpected tensors and shape mismatches as ``name: expected (a, b), found (c, d)``, each list
    naturally sorted and cut after ``max_items`` with a count of the rest.
    """
    exp = {k: _shape_of(v) for k, v in expected.items()}
    got = {k: _shape_of(v) for k, v in found.items()}
    missing = sorted((k for k in exp if k not in got), key=natural_key)
    unexpected = sorted((k for k in got if k not in exp), key=natural_key)
    mismatched = sorted((k for k in exp if k in got and exp[k] != got[k]), key=natural_key)
    if not (missing or unexpected or mismatched):
        return
    counts = []
    if missing:
        counts.append(f"{len(missing)} missing")
    if unexpected:
        counts.append(f"{len(unexpected)} unexpected")
    if mismatched:
        counts.append(f"{len(mismatched)} with the wrong shape")
    lines = [f"{context}: tensors do not match the model ({', '.join(counts)}; "
             f"expected {len(exp)} tensors, found {len(got)})"]

    def section(title: str, rows: list[str]) -> None:
        lines.append(f"{title} ({len(rows)}):")
        lines.extend(f"  {r}" for r in rows[:max_items])
        if len(rows) > max_items:
            lines.append(f"  ... and {len(rows) - max_items} more")

    if missing:
        section("missing", missing)
    if unexpected:
        section("unexpected", unexpected)
    if mismatched:
        section("shape mismatch", [f"{k}: expected {_fmt_shape(exp[k])}, found {_fmt_shape(got[k])}"
                                   for k in mismatched])
    raise CheckpointError("\n".join(lines))
