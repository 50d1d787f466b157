"""Formatting for error messages: long lists of tensor or file names, cut to a readable length."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

__all__ = ["natural_key", "short_list"]


def natural_key(s: str) -> list[Any]:
    # "layers.2" sorts before "layers.10", which makes long lists of layer tensors readable.
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def short_list(items: Sequence[str], limit: int, sep: str = ", ") -> str:
    """The first ``limit`` items joined by ``sep``, then "... and N more" for the rest."""
    items = list(items)
    if len(items) <= limit:
        return sep.join(items)
    return sep.join(items[:limit]) + f"{sep}... and {len(items) - limit} more"
