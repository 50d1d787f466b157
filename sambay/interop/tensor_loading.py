"""Reading tensors from safetensors files one at a time, so a checkpoint is never held in memory twice.

Files are opened with ``safetensors.safe_open`` (memory-mapped); the headers are validated first by
:mod:`sambay.interop.safetensors_header`, so errors surface before any data is read.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TextIO

import torch

from sambay.interop.errors import CheckpointError
from sambay.interop.messages import natural_key, short_list
from sambay.interop.safetensors_header import Header, as_file_list, parse_headers
from sambay.interop.weight_files import list_weight_files

__all__ = ["ProgressPrinter", "iter_tensors", "load_safetensors_folder"]


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


class ProgressPrinter:
    """A ``progress(done_bytes, total_bytes)`` callback that prints a line every ``every`` fraction.

    Printing goes to stderr by default so it never mixes with a program's real output.
    """

    def __init__(self, label: str = "loading weights", stream: TextIO | None = None, every: float = 0.1):
        self.label, self.stream, self.every = label, stream, every
        self._next = 0.0

    def __call__(self, done: int, total: int) -> None:
        frac = 1.0 if total == 0 else done / total
        if frac + 1e-12 < self._next and done < total:
            return
        self._next = (math.floor(frac / self.every) + 1) * self.every
        stream = self.stream if self.stream is not None else sys.stderr
        print(f"{self.label}: {_fmt_bytes(done)} / {_fmt_bytes(total)} ({100 * frac:.0f}%)",
              file=stream, flush=True)


def iter_tensors(
    files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    names: Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | bool | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield ``(name, tensor)`` from safetensors files, shard by shard, one tensor at a time.

    * Files are opened with ``safetensors.safe_open`` (memory-mapped): the peak extra memory is about one
      tensor, so a caller that copies each tensor into its model and drops it never holds the checkpoint
      twice. With ``device="cuda:0"`` tensors are materialised directly on the GPU.
    * ``names``: load only these tensors (any name absent from every file is an error, listed by name).
      Within a file, tensors come in on-disk order so reads are sequential.
    * ``dtype``: cast floating-point tensors to it; integer and bool tensors are left alone.
    * ``progress``: called as ``progress(bytes_done, bytes_total)`` once before the first tensor and
      after each one (the last call has ``bytes_done == bytes_total``); ``True`` prints to stderr.

    All headers are validated (and duplicate names across files rejected) when this function is
    called, before any tensor is read, so errors surface immediately rather than mid-iteration.
    """
    file_list = as_file_list(files)
    headers = parse_headers(file_list)
    wanted: set[str] | None = None
    if names is not None:
        wanted = set(names)
        available = {n for h in headers for n in h.entries}
        missing = sorted(wanted - available, key=natural_key)
        if missing:
            raise CheckpointError(
                f"{len(missing)} requested tensor(s) are not in the weight files "
                f"({', '.join(p.name for p in file_list)}): {short_list(missing, 10)}"
            )
    plan: list[tuple[Header, list[str]]] = []
    for h in headers:
        selected = [n for n, e in sorted(h.entries.items(), key=lambda kv: kv[1].begin)
                    if wanted is None or n in wanted]
        if selected:
            plan.append((h, selected))
    total = sum(h.entries[n].end - h.entries[n].begin for h, sel in plan for n in sel)
    callback: Callable[[int, int], None] | None
    callback = ProgressPrinter() if progress is True else (progress or None)
    return _iter_tensors(plan, str(device), dtype, callback, total)


def _iter_tensors(plan: list[tuple[Header, list[str]]], device: str, dtype: torch.dtype | None,
                  progress: Callable[[int, int], None] | None, total: int) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import SafetensorError, safe_open

    done = 0
    if progress is not None:
        progress(0, total)
    for header, selected in plan:
        try:
            handle = safe_open(str(header.path), framework="pt", device=device)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise CheckpointError(f"cannot open weight file {header.path}: {e}") from None
        with handle as f:
            for name in selected:
                try:
                    tensor = f.get_tensor(name)
                except (SafetensorError, OSError, RuntimeError) as e:
                    raise CheckpointError(f"{header.path}: cannot read tensor {name!r}: {e}") from None
                if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
                    tensor = tensor.to(dtype)
                e = header.entries[name]
                done += e.end - e.begin
                if progress is not None:
                    progress(done, total)
                yield name, tensor


def load_safetensors_folder(
    folder: str | os.PathLike[str],
    names: Iterable[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    progress: Callable[[int, int], None] | bool | None = None,
    *,
    prefix: str = "model",
) -> dict[str, torch.Tensor]:
    """Convenience: every tensor (or ``names``) of a checkpoint folder in a dict.

    Holds the whole state dict in memory; for big models prefer :func:`iter_tensors` and copy each tensor
    into the model as it arrives.
    """
    files = list_weight_files(folder, prefix=prefix)
    return dict(iter_tensors(files, names=names, device=device, dtype=dtype, progress=progress))
