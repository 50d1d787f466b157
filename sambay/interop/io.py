"""Safetensors checkpoint folders: reading, validating and writing (Hugging Face layout).

A checkpoint folder holds ``config.json`` plus either one ``model.safetensors`` or several
``model-0000K-of-0000N.safetensors`` shards listed by ``model.safetensors.index.json``
(``{"metadata": {"total_size": ...}, "weight_map": {tensor_name: shard_file}}``).

Design notes (why, not what):

* **Never unpickle.** ``*.bin`` / ``*.pt`` files can run arbitrary code when loaded. They are detected only
  to explain how to convert them; nothing here ever calls ``torch.load``.
* **Validate before touching data.** Safetensors headers are small; we parse them ourselves (8-byte
  little-endian length + JSON) and check them against the file size, so a truncated download or a
  corrupt file gives a message naming the file and the number of missing bytes instead of a bare
  ``SafetensorError`` from deep inside a load loop, and so a caller can compare names and shapes with the
  model (:func:`check_state_dict`) before reading gigabytes.
* **Memory.** :func:`iter_tensors` reads through ``safetensors.safe_open`` (memory-mapped), one tensor at a
  time, so the peak extra RAM is about one tensor. :func:`save_safetensors_sharded` streams one tensor at
  a time to disk with our own writer for the same reason (``safetensors.torch.save_file`` builds a whole
  shard in memory and refuses tensors that merely live in the same storage).
* **Atomic writes.** Shards are written to hidden temporary files, fsynced, then renamed into place; the
  index (the file that makes a sharded checkpoint *look complete*) is renamed in last. A crash leaves
  either the old checkpoint, or a folder that :func:`list_weight_files` reports as incomplete — never a
  folder that silently loads half-old, half-new weights.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import torch

from sambay.interop.errors import CheckpointError

__all__ = [
    "CONFIG_NAME",
    "SAFE_WEIGHTS_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "TensorInfo",
    "ProgressPrinter",
    "read_json_file",
    "read_config_json",
    "list_weight_files",
    "read_header",
    "read_safetensors_metadata",
    "read_checkpoint_header",
    "iter_tensors",
    "load_safetensors_folder",
    "parse_size",
    "save_safetensors_sharded",
    "check_state_dict",
]

CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

# Extensions of pickle-based weight files. Detected only to refuse them with an explanation.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")

# The safetensors Rust reader refuses headers above 100 MB; a bigger length field means garbage.
_MAX_HEADER_BYTES = 100_000_000

# safetensors dtype string -> bits per element. Sub-byte float formats (F4, F6_*) exist in recent
# safetensors versions; we only need their sizes to validate offsets.
_ST_DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "U16": 16, "I16": 16, "F16": 16, "BF16": 16,
    "U32": 32, "I32": 32, "F32": 32,
    "U64": 64, "I64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
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


class TensorInfo(NamedTuple):
    """What a safetensors header says about one tensor. A tuple, so ``dtype, shape = info`` works."""

    dtype: str  # safetensors dtype string, e.g. "BF16"
    shape: tuple[int, ...]


class _Entry(NamedTuple):
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offsets relative to the start of the data section
    end: int


class _Header(NamedTuple):
    path: Path
    entries: dict[str, _Entry]
    metadata: dict[str, str]
    data_start: int  # absolute file offset of the data section (8 + header length)


# --------------------------------------------------------------------------------------------------
# JSON files
# --------------------------------------------------------------------------------------------------


def read_json_file(path: str | os.PathLike[str], *, what: str = "JSON file") -> Any:
    """Parse a JSON file, turning every failure into a :class:`CheckpointError` naming the file.

    ``what`` describes the file in the message (e.g. "model config"). The JSON error position (line,
    column) is included because hand-edited configs are the usual culprit.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"{what} {path} is a directory, expected a JSON file") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {what} {path}: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8-sig")  # tolerate a BOM; editors on Windows add one
    except UnicodeDecodeError as e:
        raise CheckpointError(
            f"{what} {path} is not UTF-8 text (invalid byte at offset {e.start}); is it really JSON?"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (the file is empty)" if not text.strip() else ""
        raise CheckpointError(
            f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno} "
            f"(character {e.pos}){hint}"
        ) from None


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    data = read_json_file(path, what=what)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{what} {path} must contain a JSON object ({{...}}), found a JSON {_json_type(data)}"
        )
    return data


def _json_type(value: Any) -> str:
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def read_config_json(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``config.json`` from a checkpoint folder (or a path to the JSON file itself).

    Raises :class:`CheckpointError` if the file is missing, is not JSON (message gives the position of the
    error) or is not a JSON object.
    """
    path = Path(folder)
    if path.is_dir():
        path = path / CONFIG_NAME
    elif not path.exists():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    return _read_json_object(path, "model config")


# --------------------------------------------------------------------------------------------------
# Finding weight files
# --------------------------------------------------------------------------------------------------


def _shard_pattern(prefix: str) -> re.Pattern[str]:
    return re.compile(re.escape(prefix) + r"-(\d{5,})-of-(\d{5,})\.safetensors")


def list_weight_files(folder: str | os.PathLike[str], *, prefix: str = "model") -> list[Path]:
    """Return the safetensors files of a checkpoint folder, in shard order.

    * ``{prefix}.safetensors`` if present (it wins over an index, as in Hugging Face ``from_pretrained``;
      :func:`save_safetensors_sharded` removes stale indexes when it writes a single file);
    * otherwise the shards named by ``{prefix}.safetensors.index.json``, after validating the index
      (``weight_map`` present, file names plain, every shard present — the missing ones are listed).

    Pickle weights (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) are never loaded: if they are all there is,
    the error explains how to convert them. Shards without an index (an interrupted save or download)
    and an empty folder are errors too.
    """
    folder = Path(folder)
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    if not folder.is_dir():
        raise CheckpointError(f"expected a checkpoint folder, got a file: {folder}")

    single = folder / f"{prefix}.safetensors"
    index = folder / f"{prefix}.safetensors.index.json"
    if single.is_file():
        return [single]
    if index.is_file():
        return _shards_from_index(index)

    orphan_shards = sorted(p.name for p in folder.iterdir() if _shard_pattern(prefix).fullmatch(p.name))
    if orphan_shards:
        raise CheckpointError(
            f"{folder} has shard files ({_short_list(orphan_shards, 5)}) but no {index.name}; the "
            "checkpoint is incomplete (an interrupted save or download?). Re-download or re-save it."
        )
    other_safetensors = sorted(p.name for p in folder.glob("*.safetensors") if not p.name.startswith("."))
    if other_safetensors:
        raise CheckpointError(
            f"{folder} has no {single.name} or {index.name}, only other safetensors files "
            f"({_short_list(other_safetensors, 5)}); pass them to iter_tensors() explicitly if they "
            "really are the weights"
        )
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES and p.is_file())
    if pickles:
        raise CheckpointError(
            f"{folder} contains only pickle weight files ({_short_list(pickles, 5)}). Pickle files can run "
            "arbitrary code when loaded, so sambay never loads them implicitly. If you trust their origin, "
            "convert them once: `sd = torch.load(path, map_location='cpu', weights_only=True)` for each "
            "file, merge the dicts, then "
            "`sambay.interop.io.save_safetensors_sharded(sd, folder)`."
        )
    raise CheckpointError(
        f"no weights found in {folder}: expected {single.name} or {index.name} (with its shards)"
    )


def _shards_from_index(index: Path) -> list[Path]:
    data = _read_json_object(index, "safetensors index")
    weight_map = data.get("weight_map")
    if weight_map is None:
        raise CheckpointError(f"safetensors index {index} has no \"weight_map\" entry")
    if not isinstance(weight_map, dict):
        raise CheckpointError(
            f"safetensors index {index}: \"weight_map\" must be an object mapping tensor names to shard "
            f"files, found a JSON {_json_type(weight_map)}"
        )
    if not weight_map:
        raise CheckpointError(f"safetensors index {index}: \"weight_map\" is empty")
    bad = sorted(
        f"{k!r} -> {v!r}" for k, v in weight_map.items()
        if not isinstance(v, str) or not v or v in (".", "..") or "/" in v or "\\" in v
    )
    if bad:
        # Shard names are plain file names in the HF layout; anything else could point outside the folder.
        raise CheckpointError(
            f"safetensors index {index}: shard entries must be plain file names in the same folder; "
            f"bad entries: {_short_list(bad, 5)}"
        )
    shard_names = sorted(set(weight_map.values()))
    missing = [name for name in shard_names if not (index.parent / name).is_file()]
    if missing:
        raise CheckpointError(
            f"safetensors index {index} refers to {len(missing)} shard file(s) that are not in "
            f"{index.parent}: {_short_list(missing, 10)} (incomplete download?)"
        )
    return [index.parent / name for name in shard_names]


# --------------------------------------------------------------------------------------------------
# Headers
# --------------------------------------------------------------------------------------------------


def _parse_header(path: str | os.PathLike[str]) -> _Header:
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
        raise CheckpointError(f"{path}: corrupt safetensors header (a JSON {_json_type(header)}, not an object)")

    metadata_raw = header.pop("__metadata__", None) or {}
    if not isinstance(metadata_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata_raw.items()
    ):
        raise CheckpointError(f"{path}: corrupt safetensors header (__metadata__ must map strings to strings)")

    entries: dict[str, _Entry] = {}
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
    return _Header(path, entries, dict(metadata_raw), 8 + n)


def _validate_entry(path: Path, name: str, info: Any) -> _Entry:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{path}: corrupt safetensors header, tensor {name!r}: {why}")

    if not isinstance(info, dict):
        raise bad(f"entry is a JSON {_json_type(info)}, expected an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in _ST_DTYPE_BITS:
        raise bad(f"unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"shape must be a list of non-negative integers, found {shape!r}")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(type(o) is int and o >= 0 for o in offsets) or offsets[0] > offsets[1]):
        raise bad(f"data_offsets must be [begin, end] with 0 <= begin <= end, found {offsets!r}")
    bits = math.prod(shape) * _ST_DTYPE_BITS[dtype]
    if bits % 8 or offsets[1] - offsets[0] != bits // 8:
        raise bad(
            f"shape {tuple(shape)} of {dtype} needs {bits / 8:g} bytes but data_offsets span "
            f"{offsets[1] - offsets[0]}"
        )
    return _Entry(dtype, tuple(shape), offsets[0], offsets[1])


def read_header(file: str | os.PathLike[str]) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes of the tensors in one safetensors file, without reading any tensor data.

    The header is validated (length field vs file size, JSON, dtypes, offsets covering the data section
    exactly), so a truncated or corrupt file raises :class:`CheckpointError` here.
    """
    h = _parse_header(file)
    return {name: TensorInfo(e.dtype, e.shape) for name, e in h.entries.items()}


def read_safetensors_metadata(file: str | os.PathLike[str]) -> dict[str, str]:
    """The free-form ``__metadata__`` string map of a safetensors file (e.g. ``{"format": "pt"}``)."""
    return _parse_header(file).metadata


def _as_file_list(files: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[Path]:
    if isinstance(files, (str, os.PathLike)):
        return [Path(files)]
    return [Path(f) for f in files]


def _parse_headers(files: list[Path]) -> list[_Header]:
    headers = [_parse_header(f) for f in files]
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
            f"copy to load: {_short_list(dups, 10)}"
        )
    return headers


def read_checkpoint_header(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, prefix: str = "model"
) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes of every tensor of a checkpoint, reading headers only.

    ``source`` is a checkpoint folder (weights found with :func:`list_weight_files`) or a list of
    safetensors files. Duplicate names across shards are an error. For a sharded folder, the index's
    ``weight_map`` is cross-checked against the shard headers (a mismatch means a mixed-up download).
    Use it with :func:`check_state_dict` to compare with a model before loading any data.
    """
    index_map: dict[str, str] | None = None
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        files = list_weight_files(source, prefix=prefix)
        index = Path(source) / f"{prefix}.safetensors.index.json"
        if files[0].name != f"{prefix}.safetensors" and index.is_file():
            index_map = _read_json_object(index, "safetensors index")["weight_map"]
    else:
        files = _as_file_list(source)
    headers = _parse_headers(files)
    if index_map is not None:
        actual = {name: h.path.name for h in headers for name in h.entries}
        problems = [f"{n}: index says {index_map[n]}, found in {actual[n]}"
                    for n in index_map if n in actual and actual[n] != index_map[n]]
        problems += [f"{n}: listed in the index (shard {index_map[n]}) but not in it"
                     for n in index_map if n not in actual]
        problems += [f"{n}: in {actual[n]} but not listed in the index" for n in actual if n not in index_map]
        if problems:
            raise CheckpointError(
                f"{index} does not match its shards ({len(problems)} problem(s)):\n  "
                + _short_list(sorted(problems, key=_natural_key), 20, sep="\n  ")
            )
    return {name: TensorInfo(e.dtype, e.shape) for h in headers for name, e in h.entries.items()}


# --------------------------------------------------------------------------------------------------
# Reading tensors
# --------------------------------------------------------------------------------------------------


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
    file_list = _as_file_list(files)
    headers = _parse_headers(file_list)
    wanted: set[str] | None = None
    if names is not None:
        wanted = set(names)
        available = {n for h in headers for n in h.entries}
        missing = sorted(wanted - available, key=_natural_key)
        if missing:
            raise CheckpointError(
                f"{len(missing)} requested tensor(s) are not in the weight files "
                f"({', '.join(p.name for p in file_list)}): {_short_list(missing, 10)}"
            )
    plan: list[tuple[_Header, list[str]]] = []
    for h in headers:
        selected = [n for n, e in sorted(h.entries.items(), key=lambda kv: kv[1].begin)
                    if wanted is None or n in wanted]
        if selected:
            plan.append((h, selected))
    total = sum(h.entries[n].end - h.entries[n].begin for h, sel in plan for n in sel)
    callback: Callable[[int, int], None] | None
    callback = ProgressPrinter() if progress is True else (progress or None)
    return _iter_tensors(plan, str(device), dtype, callback, total)


def _iter_tensors(plan: list[tuple[_Header, list[str]]], device: str, dtype: torch.dtype | None,
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


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------

_SIZE_UNITS = {
    "": 1, "B": 1,
    "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
    "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40,
}


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
    # double the file size and silently untie them on reload, so the caller has to decide.
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
            "these tensors share memory (tied or aliased weights): " + _short_list(aliased, 10)
            + ". Drop the tied copy from the state dict before saving (e.g. a tied 'lm_head.weight'; "
            "the loader re-ties it), or pass shared='copy' to store each one separately."
        )


def _write_safetensors_file(path: Path, items: Sequence[tuple[str, torch.Tensor]],
                            metadata: Mapping[str, str]) -> None:
    """Write one safetensors file, streaming one tensor at a time.

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
    # Makes the renames durable on POSIX. Not possible (nor needed) on Windows.
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
    pattern = _shard_pattern(prefix)
    for p in folder.iterdir():
        if p.name not in keep and pattern.fullmatch(p.name):
            _unlink(p)
    return [folder / name for name in final_names]


# --------------------------------------------------------------------------------------------------
# Comparing a checkpoint with a model
# --------------------------------------------------------------------------------------------------


def _natural_key(s: str) -> list[Any]:
    # "layers.2" sorts before "layers.10", which makes long lists of layer tensors readable.
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", s)]


def _short_list(items: Sequence[str], limit: int, sep: str = ", ") -> str:
    items = list(items)
    if len(items) <= limit:
        return sep.join(items)
    return sep.join(items[:limit]) + f"{sep}... and {len(items) - limit} more"


def _shape_of(value: Any) -> tuple[int, ...]:
    if isinstance(value, TensorInfo):
        return tuple(value.shape)
    shape = getattr(value, "shape", value)
    return tuple(int(d) for d in shape)


def _fmt_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


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
    :func:`read_checkpoint_header` can be passed directly). The message lists missing tensors,
    unexpected tensors and shape mismatches as ``name: expected (a, b), found (c, d)``, each list
    naturally sorted and cut after ``max_items`` with a count of the rest.
    """
    exp = {k: _shape_of(v) for k, v in expected.items()}
    got = {k: _shape_of(v) for k, v in found.items()}
    missing = sorted((k for k in exp if k not in got), key=_natural_key)
    unexpected = sorted((k for k in got if k not in exp), key=_natural_key)
    mismatched = sorted((k for k in exp if k in got and exp[k] != got[k]), key=_natural_key)
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
