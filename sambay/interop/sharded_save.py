"""Writing a state dict as a safetensors checkpoint folder (Hugging Face layout), sharded and atomic.

* **Memory.** Tensors are streamed to disk one at a time by our own writer, so the peak extra RAM is about
  one tensor (``safetensors.torch.save_file`` builds a whole shard in memory and refuses tensors that
  merely live in the same storage). The files are plain safetensors: ``safe_open`` reads them.
* **Atomic writes.** Shards are written to hidden temporary files, fsynced, then renamed into place; the
  index (the file that makes a sharded checkpoint *look complete*) is renamed in last. A crash leaves
  either the old checkpoint, or a folder that ``list_weight_files`` reports as incomplete — never a
  folder that silently loads half-old, half-new weights.
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from sambay.interop.errors import CheckpointError
from sambay.interop.messages import short_list
from sambay.interop.weight_files import shard_pattern

__all__ = ["parse_size", "save_safetensors_sharded", "fsync_dir"]

_SIZE_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}


def _torch_to_st_dtypes() -> dict[torch.dtype, str]:
    table = {
        torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
        torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
        torch.uint8: "U8", torch.bool: "BOOL", torch.complex64: "C64",
    }
    # Optional dtypes: present in the torch versions we support, but look them up defensively.
    for attr, st in (("float8_e4m3fn", "F8_E4M3"), ("float8_e5m2", "F8_E5M2"),
                     ("float8_e8m0fnu", "F8_E8M0"), ("uint16", "U16"), ("uint32", "U32"),
                     ("uint64", "U64")):
        dt = getattr(torch, attr, None)
        if dt is not None:
            table[dt] = st
    return table


_TORCH_TO_ST = _torch_to_st_dtypes()


def parse_size(size: int | str) -> int:
    """Parse a byte size: an int, or a string like ``"500MB"``, ``"2GB"``, ``"1.5 GiB"``, ``"4096"``.

    Decimal units (KB, MB, GB, TB) are powers of 1000 and binary units (KiB, MiB, GiB, TiB) powers of
    1024, as in Hugging Face ``max_shard_size``. Case-insensitive.
    """
    if isinstance(size, bool):
        raise ValueError(f"invalid size {size!r}: expected an int (bytes) or a string like '500MB'")
    if isinstance(size, int):
        if size <= 0:
            raise ValueError(f"invalid size {size}: must be a positive number of bytes")
        return size
    if not isinstance(size, str):
        raise ValueError(f"invalid size {size!r}: expected an int (bytes) or a string like '500MB'")
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*", size)
    unit = m.group(2).upper() if m else None
    if m is None or unit not in _SIZE_UNITS:
        raise ValueError(
            f"invalid size {size!r}: expected a number with an optional unit "
            f"(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. '500MB' or '2GB'"
        )
    value = int(float(m.group(1)) * _SIZE_UNITS[unit])
    if value <= 0:
        raise ValueError(f"invalid size {size!r}: must be at least one byte")
    return value


def _tensor_nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _check_tensors_for_saving(state: Mapping[str, torch.Tensor], shared: str) -> None:
    if shared not in ("error", "copy"):
        raise ValueError(f"shared must be 'error' or 'copy', got {shared!r}")
    for name, t in state.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name!r}: expected a torch.Tensor, got {type(t).__name__}")
        if t.layout != torch.strided:
            raise ValueError(f"{name!r}: only dense tensors can be saved, got layout {t.layout}")
        if t.device.type == "meta":
            raise ValueError(f"{name!r} is a meta tensor (no data); materialise it before saving")
        if t.dtype not in _TORCH_TO_ST:
            raise ValueError(f"{name!r}: dtype {t.dtype} cannot be stored in safetensors by sambay")
    if shared == "copy":
        return
    # Tensors whose bytes overlap are aliases (e.g. a tied embedding and LM head). Saving both would
    # double the file size and silently untie them on reload, so the caller has to decide. (Checked here
    # because the streaming writer below replaces save_file, which would have refused them.)
    by_storage: dict[tuple[str, int], list[tuple[int, int, str]]] = {}
    for name, t in state.items():
        if t.numel() == 0:
            continue
        key = (str(t.device), t.untyped_storage().data_ptr())
        lo = t.data_ptr()
        span = sum((s - 1) * st for s, st in zip(t.shape, t.stride())) + 1  # elements reachable
        by_storage.setdefault(key, []).append((lo, lo + span * t.element_size(), name))
    aliased: list[str] = []
    for ranges in by_storage.values():
        ranges.sort()
        reach, reach_name = -1, ""
        for lo, hi, name in ranges:
            if lo < reach:  # starts before the furthest byte of an earlier tensor ends
                aliased.append(f"{reach_name} / {name}")
            if hi > reach:
                reach, reach_name = hi, name
    if aliased:
        raise ValueError(
            "these tensors share memory (tied or aliased weights): " + short_list(aliased, 10)
            + ". Drop the tied copy from the state dict before saving (e.g. a tied 'lm_head.weight'; "
            "the loader re-ties it), or pass shared='copy' to store each one separately."
        )


def _write_safetensors_file(path: Path, items: Sequence[tuple[str, torch.Tensor]],
                            metadata: Mapping[str, str]) -> None:
    """Write one safetensors file, streaming one tensor at a time.

    Hand-written rather than ``safetensors.torch.save_file`` so that a shard never has to fit in memory.
    Layout: 8-byte little-endian header length, JSON header padded with spaces to a multiple of 8, data.
    Tensors are ordered by element size (largest first, then name) so every tensor starts at an offset
    aligned to its element size, which is what ``safetensors`` itself does.
    """
    if sys.byteorder != "little":  # safetensors is little-endian; we write raw memory
        raise CheckpointError("writing safetensors on a big-endian machine is not supported")
    ordered = sorted(items, key=lambda kv: (-kv[1].element_size(), kv[0]))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    pos = 0
    for name, t in ordered:
        n = _tensor_nbytes(t)
        header[name] = {"dtype": _TORCH_TO_ST[t.dtype], "shape": list(t.shape), "data_offsets": [pos, pos + n]}
        pos += n
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, t in ordered:
            if t.numel() == 0:
                continue
            data = t.detach()
            if data.device.type != "cpu":
                data = data.cpu()
            data = data.contiguous().reshape(-1).view(torch.uint8)
            f.write(memoryview(data.numpy()))
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    """Make renames inside ``folder`` durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def save_safetensors_sharded(
    state: Mapping[str, torch.Tensor],
    folder: str | os.PathLike[str],
    max_shard_size: int | str = "5GB",
    metadata: Mapping[str, str] | None = None,
    prefix: str = "model",
    *,
    shared: str = "error",
) -> list[Path]:
    """Save a state dict as a safetensors checkpoint in the Hugging Face folder layout.

    * Fits in one shard -> ``{prefix}.safetensors``. Otherwise ``{prefix}-00001-of-0000N.safetensors`` ...
      plus ``{prefix}.safetensors.index.json`` with ``metadata.total_size`` (sum of tensor bytes) and
      ``weight_map``. Tensors are packed greedily in the order of ``state`` (so a layer's tensors stay
      together); a tensor bigger than ``max_shard_size`` gets a shard of its own.
    * ``max_shard_size``: bytes as an int or a string like ``"500MB"`` / ``"2GB"`` (see :func:`parse_size`).
    * ``metadata``: extra ``__metadata__`` strings for every file; ``{"format": "pt"}`` is always included
      (Hugging Face loaders expect it).
    * Non-contiguous tensors are made contiguous one at a time while writing (never the whole dict at
      once). Tensors that share memory with another entry (tied weights) are refused unless
      ``shared="copy"``: drop the tied copy first (a tied ``lm_head.weight`` is normally absent from the
      checkpoint, and the loader re-ties it).
    * Atomic: files are written to hidden temporary names and renamed into place, the index last; old
      ``{prefix}`` weight files in ``folder`` that are not part of the new checkpoint are removed
      afterwards. Other files in the folder (config, tokenizer) are left alone.

    Returns the paths of the weight files written (not the index).
    """
    limit = parse_size(max_shard_size)
    meta: dict[str, str] = {"format": "pt"}
    for k, v in (metadata or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValueError(f"safetensors metadata must map strings to strings, got {k!r}: {v!r}")
        meta[k] = v
    _check_tensors_for_saving(state, shared)

    shards: list[list[tuple[str, torch.Tensor]]] = [[]]
    shard_bytes = 0
    for name, t in state.items():
        n = _tensor_nbytes(t)
        if shards[-1] and shard_bytes + n > limit:
            shards.append([])
            shard_bytes = 0
        shards[-1].append((name, t))
        shard_bytes += n

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = len(shards)
    width = max(5, len(str(count)))
    final_names = ([f"{prefix}.safetensors"] if count == 1 else
                   [f"{prefix}-{i:0{width}d}-of-{count:0{width}d}.safetensors" for i in range(1, count + 1)])
    single = folder / f"{prefix}.safetensors"
    index = folder / f"{prefix}.safetensors.index.json"
    token = f".{prefix}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = [folder / f"{token}.{name}" for name in final_names]
    tmp_index = folder / f"{token}.{index.name}"
    try:
        for path, items in zip(tmp, shards):
            _write_safetensors_file(path, items, meta)
        if count == 1:
            os.replace(tmp[0], single)  # atomic: the old single file (if any) stays until this instant
            _unlink(index)
        else:
            weight_map = {name: fname for fname, items in zip(final_names, shards) for name, _ in items}
            doc = {"metadata": {"total_size": sum(_tensor_nbytes(t) for t in state.values())},
                   "weight_map": dict(sorted(weight_map.items()))}
            with open(tmp_index, "w", encoding="utf-8") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            # Remove the old completeness markers first: from here until the new index lands, the
            # folder reads as "incomplete" rather than as a mix of old and new shards.
            _unlink(single)
            _unlink(index)
            fsync_dir(folder)
            for src, name in zip(tmp, final_names):
                os.replace(src, folder / name)
            os.replace(tmp_index, index)
        fsync_dir(folder)
    except BaseException:
        for p in (*tmp, tmp_index):
            _unlink(p)
        raise
    keep = set(final_names)
    pattern = shard_pattern(prefix)
    for p in folder.iterdir():
        if p.name not in keep and pattern.fullmatch(p.name):
            _unlink(p)
    return [folder / name for name in final_names]
