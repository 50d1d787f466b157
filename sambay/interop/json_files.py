"""JSON files of a checkpoint folder (config.json, indexes, tokenizer side files), read with errors that
name the file and the position of the mistake, because hand-edited configs are the usual culprit."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from sambay.interop.errors import CheckpointError

__all__ = ["read_json_file", "read_json_object", "json_type", "MAX_JSON_BYTES"]

MAX_JSON_BYTES = 64 << 20  # configs and indexes are kilobytes; a tokenizer.json a few tens of megabytes


def read_json_file(path: str | os.PathLike[str], *, what: str = "JSON file") -> Any:
    """Parse a JSON file, turning every failure into a :class:`CheckpointError` naming the file.

    ``what`` describes the file in the message (e.g. "model config"). The JSON error position (line,
    column) is included because hand-edited configs are the usual culprit.
    """
    path = Path(path)
    try:
        raw = _read_regular_file(path, what)
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


def _read_regular_file(path: Path, what: str) -> bytes:
    """The bytes of a regular file of bounded size. A FIFO, device or socket would block or never end, so it is
    refused before it is opened for reading (opened with O_NONBLOCK so that even that cannot block)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(info.st_mode):
            raise CheckpointError(f"{what} {path} is not a regular file (a FIFO, device or socket)")
        if info.st_size > MAX_JSON_BYTES:
            raise CheckpointError(f"{what} {path} is {info.st_size:,} bytes; at most {MAX_JSON_BYTES:,} are read")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(MAX_JSON_BYTES + 1)
    finally:
        os.close(fd)


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """:func:`read_json_file`, and the top level must be a JSON object."""
    data = read_json_file(path, what=what)
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{what} {path} must contain a JSON object ({{...}}), found a JSON {json_type(data)}"
        )
    return data


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type ("array", "string", ...), for messages."""
    return {list: "array", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)
