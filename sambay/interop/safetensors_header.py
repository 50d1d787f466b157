"""Safetensors headers: names, dtypes and shapes of the tensors in a file, validated before any data is read.

A safetensors file is an 8-byte little-endian header length, a JSON header
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``), then the data.

The header is parsed here rather than through ``safetensors.safe_open`` because weight files are
downloaded (possibly truncated, possibly hostile): the length field is bounded before anything is
allocated, and every entry is checked against the file size, so a bad file gives a message naming it and
the number of missing bytes instead of a bare ``SafetensorError`` from deep inside a load loop, and a
caller can compare names and shapes with a model before reading gigabytes.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

from sambay.interop.errors import CheckpointError
from sambay.interop.json_files import json_type
from sambay.interop.messages import short_list

__all__ = ["TensorInfo", "Header", "parse_header", "parse_headers", "read_header", "read_safetensors_metadata",
           "as_file_list"]

# The safetensors Rust reader refuses headers above 100 MB; a bigger length field means garbage.
_MAX_HEADER_BYTES = 100_000_000

# safetensors dtype string -> bits per element. Sub-byte float formats (F4, F6_*) exist in recent
# safetensors versions; we only need their sizes to validate offsets.
ST_DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "U16": 16, "I16": 16, "F16": 16, "BF16": 16,
    "U32": 32, "I32": 32, "F32": 32,
    "U64": 64, "I64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}


class TensorInfo(NamedTuple):
    """What a safetensors header says about one tensor. A tuple, so ``dtype, shape = info`` works."""

    dtype: str  # safetensors dtype string, e.g. "BF16"
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return math.prod(self.shape) * ST_DTYPE_BITS[self.dtype] // 8


class Entry(NamedTuple):
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets relative to the start of the data section
    end: int


class Header(NamedTuple):
    path: Path
    entries: dict[str, Entry]
    metadata: dict[str, str]
    data_start: int  # absolute file offset of the data section (8 + header length)


def parse_header(path: str | os.PathLike[str]) -> Header:
    """Read and validate one file's header (length field vs file size, JSON, dtypes, offsets covering
    the data section exactly); :class:`CheckpointError` naming the file for anything wrong."""
    # Hand-parsed, not safe_open: bounds the length field and checks every offset against the file size first.
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise CheckpointError(
                    f"{path} is not a safetensors file: only {size} bytes, shorter than the 8-byte header "
                    "length field (empty or truncated file?)"
                )
            (n,) = struct.unpack("<Q", prefix)
            if n > _MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{path} is not a valid safetensors file: the header length field says {n} bytes "
                    "(implausible; the file is corrupt or not safetensors)"
                )
            if 8 + n > size:
                raise CheckpointError(
                    f"{path} is truncated: its header needs {n} bytes after the 8-byte length field but "
                    f"the file has only {size} bytes in total"
                )
            raw = f.read(n)
    except FileNotFoundError:
        raise CheckpointError(f"weight file not found: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"expected a safetensors file, got a directory: {path}") from None
    except OSError as e:
        raise CheckpointError(f"cannot read weight file {path}: {e.strerror or e}") from None

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in pairs:
            if k in out:
                raise CheckpointError(f"{path}: corrupt safetensors header, tensor {k!r} appears twice")
            out[k] = v
        return out

    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates)
    except UnicodeDecodeError as e:
        raise CheckpointError(
            f"{path}: corrupt safetensors header (not UTF-8 at header byte {e.start}); the file is damaged "
            "or not a safetensors file"
        ) from None
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{path}: corrupt safetensors header (not valid JSON: {e.msg} at header byte {e.pos}); the file "
            "is damaged or not a safetensors file"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (a JSON {json_type(header)}, not an object)")

    metadata_raw = header.pop("__metadata__", None) or {}
    if not isinstance(metadata_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata_raw.items()
    ):
        raise CheckpointError(f"{path}: corrupt safetensors header (__metadata__ must map strings to strings)")

    entries: dict[str, Entry] = {}
    for name, info in header.items():
        entries[name] = _validate_entry(path, name, info)

    # The data section must be covered exactly, without gaps or overlaps (the safetensors reader
    # enforces the same); checking it here lets us report truncation in bytes.
    data_len = size - 8 - n
    pos = 0
    for name, e in sorted(entries.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if e.begin != pos:
            problem = "overlaps the previous tensor" if e.begin < pos else "leaves a gap before it"
            raise CheckpointError(
                f"{path}: corrupt safetensors header, tensor {name!r} at bytes [{e.begin}, {e.end}) {problem}"
            )
        pos = e.end
    if pos > data_len:
        raise CheckpointError(
            f"{path} is truncated: the tensor data needs {pos} bytes but only {data_len} are present "
            f"({pos - data_len} bytes missing; interrupted download or copy?)"
        )
    if pos < data_len:
        raise CheckpointError(
            f"{path} is corrupt: {data_len - pos} unexpected bytes after the last tensor "
            f"(data section is {data_len} bytes, the header accounts for {pos})"
        )
    return Header(path, entries, dict(metadata_raw), 8 + n)


def _validate_entry(path: Path, name: str, info: Any) -> Entry:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: corrupt safetensors header, tensor {name!r}: {why}")

    if not isinstance(info, dict):
        raise bad(f"entry is a JSON {json_type(info)}, expected an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in ST_DTYPE_BITS:
        raise bad(f"unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"shape must be a list of non-negative integers, found {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
        raise bad(f"data_offsets must be [begin, end] with 0 <= begin <= end, found {offsets!r}")
    bits = math.prod(shape) * ST_DTYPE_BITS[dtype]
    if bits % 8 or offsets[1] - offsets[0] != bits // 8:
        raise bad(
            f"shape {tuple(shape)} of {dtype} needs {bits / 8:g} bytes but data_offsets span "
            f"{offsets[1] - offsets[0]}"
        )
    return Entry(dtype, tuple(shape), offsets[0], offsets[1])


def read_header(file: str | os.PathLike[str]) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes of the tensors in one safetensors file, without reading any tensor data.

    The header is validated (length field vs file size, JSON, dtypes, offsets covering the data section
    exactly), so a truncated or corrupt file raises :class:`CheckpointError` here.
    """
    h = parse_header(file)
    return {name: TensorInfo(e.dtype, e.shape) for name, e in h.entries.items()}


def read_safetensors_metadata(file: str | os.PathLike[str]) -> dict[str, str]:
    """The free-form ``__metadata__`` string map of a safetensors file (e.g. ``{"format": "pt"}``)."""
    return parse_header(file).metadata


def as_file_list(files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    """One path or an iterable of paths, as a list of Paths."""
    if isinstance(files, (str, os.PathLike)):
        return [Path(files)]
    return [Path(f) for f in files]


def parse_headers(files: list[Path]) -> list[Header]:
    """:func:`parse_header` of every file; a tensor name in more than one file is an error."""
    headers = [parse_header(f) for f in files]
    seen: dict[str, Path] = {}
    dups: list[str] = []
    for h in headers:
        for name in h.entries:
            if name in seen:
                dups.append(f"{name} (in {seen[name].name} and {h.path.name})")
            else:
                seen[name] = h.path
    if dups:
        raise CheckpointError(
            f"{len(dups)} tensor name(s) appear in more than one weight file, so it is ambiguous which "
            f"copy to load: {short_list(dups, 10)}"
        )
    return headers
