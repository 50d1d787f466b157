"""The files of a checkpoint folder (Hugging Face layout) and the tensor table they add up to.

A checkpoint folder holds ``config.json`` plus either one ``model.safetensors`` or several
``model-0000K-of-0000N.safetensors`` shards listed by ``model.safetensors.index.json``
(``{"metadata": {"total_size": ...}, "weight_map": {tensor_name: shard_file}}``).

*Never unpickle*: ``*.bin`` / ``*.pt`` files can run arbitrary code when loaded. They are detected only to
explain how to convert them; nothing here ever calls ``torch.load``. Shard names in an index must be plain
file names of the same folder, so a downloaded index cannot point outside it; nor can a weight file that is a
symbolic link, unless it resolves inside the folder or, for a Hugging Face cache snapshot
(``models--ORG--NAME/snapshots/REV``, whose files link to ``../../blobs/HASH``), inside the
``models--ORG--NAME`` entry (``allow_external_links=True`` lifts the rule).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sambay.interop.errors import CheckpointError
from sambay.interop.json_files import json_type, read_json_object
from sambay.interop.messages import natural_key, short_list
from sambay.interop.safetensors_header import TensorInfo, as_file_list, parse_headers

__all__ = [
    "CONFIG_NAME",
    "SAFE_WEIGHTS_NAME",
    "SAFE_WEIGHTS_INDEX_NAME",
    "read_config_json",
    "shard_pattern",
    "list_weight_files",
    "read_checkpoint_header",
]

CONFIG_NAME = "config.json"
SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"

# Extensions of pickle-based weight files. Detected only to refuse them with an explanation.
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


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
    return read_json_object(path, "model config")


def shard_pattern(prefix: str) -> re.Pattern[str]:
    """File names of the shards ``{prefix}-00001-of-00003.safetensors`` of a sharded checkpoint."""
    return re.compile(re.escape(prefix) + r"-(\d{5,})-of-(\d{5,})\.safetensors")


def list_weight_files(folder: str | os.PathLike[str], *, prefix: str = "model",
                      allow_external_links: bool = False) -> list[Path]:
    """Return the safetensors files of a checkpoint folder, in shard order.

    * ``{prefix}.safetensors`` if present (it wins over an index, as in Hugging Face ``from_pretrained``;
      ``save_safetensors_sharded`` removes stale indexes when it writes a single file);
    * otherwise the shards named by ``{prefix}.safetensors.index.json``, after validating the index
      (``weight_map`` present, file names plain, every shard present — the missing ones are listed).

    Pickle weights (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``) are never loaded: if they are all there is,
    the error explains how to convert them. Shards without an index (an interrupted save or download)
    and an empty folder are errors too. So is a weight file that links outside the folder (see the module
    docstring), unless ``allow_external_links``.
    """
    folder = Path(folder)
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    if not folder.is_dir():
        raise CheckpointError(f"expected a checkpoint folder, got a file: {folder}")

    single = folder / f"{prefix}.safetensors"
    index = folder / f"{prefix}.safetensors.index.json"
    if single.is_file() or index.is_file():
        files = [single] if single.is_file() else _shards_from_index(index)
        if not allow_external_links:
            _refuse_external_links(folder, files)
        return files

    orphan_shards = sorted(p.name for p in folder.iterdir() if shard_pattern(prefix).fullmatch(p.name))
    if orphan_shards:
        raise CheckpointError(
            f"{folder} has shard files ({short_list(orphan_shards, 5)}) but no {index.name}; the "
            "checkpoint is incomplete (an interrupted save or download?). Re-download or re-save it."
        )
    other_safetensors = sorted(p.name for p in folder.glob("*.safetensors") if not p.name.startswith("."))
    if other_safetensors:
        raise CheckpointError(
            f"{folder} has no {single.name} or {index.name}, only other safetensors files "
            f"({short_list(other_safetensors, 5)}); pass them to iter_tensors() explicitly if they "
            "really are the weights"
        )
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES and p.is_file())
    if pickles:
        raise CheckpointError(
            f"{folder} contains only pickle weight files ({short_list(pickles, 5)}). Pickle files can run "
            "arbitrary code when loaded, so sambay never loads them implicitly. If you trust their origin, "
            "convert them once: `sd = torch.load(path, map_location='cpu', weights_only=True)` for each "
            "file, merge the dicts, then "
            "`sambay.interop.sharded_save.save_safetensors_sharded(sd, folder)`."
        )
    raise CheckpointError(
        f"no weights found in {folder}: expected {single.name} or {index.name} (with its shards)"
    )


def _refuse_external_links(folder: Path, files: list[Path]) -> None:
    real = folder.resolve()
    in_hf_cache = real.parent.name == "snapshots" and real.parent.parent.name.startswith("models--")
    root = real.parent.parent if in_hf_cache else real
    for f in files:
        target = f.resolve()
        if not target.is_relative_to(root):
            where = f"its Hugging Face cache entry {root}" if in_hf_cache else "the checkpoint folder"
            raise CheckpointError(
                f"{f} is a symbolic link to {target}, outside {where}; weight files may only link to files "
                "inside the checkpoint folder (or, in a Hugging Face cache snapshot, inside its models--* "
                "entry). Copy the file into the folder, or pass allow_external_links=True to from_pretrained "
                "if you trust the link."
            )


def _shards_from_index(index: Path) -> list[Path]:
    data = read_json_object(index, "safetensors index")
    weight_map = data.get("weight_map")
    if weight_map is None:
        raise CheckpointError(f"safetensors index {index} has no \"weight_map\" entry")
    if not isinstance(weight_map, dict):
        raise CheckpointError(
            f"safetensors index {index}: \"weight_map\" must be an object mapping tensor names to shard "
            f"files, found a JSON {json_type(weight_map)}"
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
            f"bad entries: {short_list(bad, 5)}"
        )
    shard_names = sorted(set(weight_map.values()))
    missing = [name for name in shard_names if not (index.parent / name).is_file()]
    if missing:
        raise CheckpointError(
            f"safetensors index {index} refers to {len(missing)} shard file(s) that are not in "
            f"{index.parent}: {short_list(missing, 10)} (incomplete download?)"
        )
    return [index.parent / name for name in shard_names]


def read_checkpoint_header(
    source: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *, prefix: str = "model",
    allow_external_links: bool = False,
) -> dict[str, TensorInfo]:
    """Names, dtypes and shapes of every tensor of a checkpoint, reading headers only.

    ``source`` is a checkpoint folder (weights found with :func:`list_weight_files`) or a list of
    safetensors files. Duplicate names across shards are an error. For a sharded folder, the index's
    ``weight_map`` is cross-checked against the shard headers (a mismatch means a mixed-up download).
    Use it with ``check_state_dict`` to compare with a model before loading any data.
    """
    index_map: dict[str, str] | None = None
    if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
        files = list_weight_files(source, prefix=prefix, allow_external_links=allow_external_links)
        index = Path(source) / f"{prefix}.safetensors.index.json"
        if files[0].name != f"{prefix}.safetensors" and index.is_file():
            index_map = read_json_object(index, "safetensors index")["weight_map"]
    else:
        files = as_file_list(source)
    headers = parse_headers(files)
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
                + short_list(sorted(problems, key=natural_key), 20, sep="\n  ")
            )
    return {name: TensorInfo(e.dtype, e.shape) for h in headers for name, e in h.entries.items()}
