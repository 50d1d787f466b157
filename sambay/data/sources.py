"""Input corpora: expand file names / globs and iterate the documents inside them.

Formats (chosen by suffix; ``.gz`` on top of ``.txt``/``.jsonl`` is decompressed transparently):

* ``.txt``: the **whole file is one document** (UTF-8). Blank lines inside a file are ordinary
  text; split a corpus into one file per document if documents should be separated by EOS.
* ``.jsonl`` / ``.ndjson``: one JSON object per line, the document in ``text_field``; blank lines are
  skipped. A line that is not valid JSON, not an object, or lacks a string ``text_field`` is an error
  that names ``file:line``.
* ``.parquet``: the ``text_field`` column, read in batches; needs the optional ``pyarrow``.

Empty documents are yielded (as ``""``); callers decide whether to skip them.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet",)


class DataError(ValueError):
    """Invalid or unreadable input data; the message names the file (and line, when known)."""


def expand_inputs(patterns: Sequence[str | os.PathLike]) -> list[Path]:
    """Expand file names, directories and globs into a sorted, de-duplicated list of files.

    A directory contributes every supported file below it. A literal name that does not exist, or a
    glob that matches nothing, is an error (silently training on less data is worse than failing).
    """
    if not patterns:
        raise DataError("no input files given")
    out: dict[Path, None] = {}
    for pattern in patterns:
        p = str(pattern)
        if glob.has_magic(p):
            matches = sorted(glob.glob(p, recursive=True))
            if not matches:
                raise DataError(f"glob {p!r} matched no files")
            files = [Path(m) for m in matches if Path(m).is_file()]
        elif Path(p).is_dir():
            files = sorted(f for f in Path(p).rglob("*") if f.is_file() and _kind(f) is not None)
            if not files:
                raise DataError(f"directory {p!r} holds no .txt/.jsonl/.parquet files")
        elif Path(p).is_file():
            files = [Path(p)]
        else:
            raise DataError(f"input file not found: {p}")
        for f in files:
            if _kind(f) is None:
                raise DataError(f"{f}: unsupported input type (expected .txt, .jsonl, .ndjson or "
                                f".parquet, optionally .gz-compressed for text/jsonl)")
            out[f.resolve()] = None
    return sorted(out)


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    if name.endswith(TEXT_SUFFIXES):
        return "txt"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES) and not path.name.lower().endswith(".gz"):
        return "parquet"
    return None


def _open_text(path: Path) -> io.TextIOBase:
    # strict decoding: a wrongly-encoded corpus (e.g. Latin-1 GCIDE) should fail loudly, not produce
    # replacement characters that end up in the vocabulary
    if path.name.lower().endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


def iter_documents(path: str | os.PathLike, text_field: str = "text") -> Iterator[str]:
    """Yield the documents of one input file, in file order."""
    path = Path(path)
    kind = _kind(path)
    if kind is None:
        raise DataError(f"{path}: unsupported input type")
    if not path.is_file():
        raise DataError(f"input file not found: {path}")
    try:
        if kind == "txt":
            with _open_text(path) as f:
                yield f.read()
        elif kind == "jsonl":
            yield from _iter_jsonl(path, text_field)
        else:
            yield from _iter_parquet(path, text_field)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not valid UTF-8 ({e.reason} at byte {e.start}); convert it first, "
                        f"e.g. iconv -f latin1 -t utf-8") from e
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e}") from e


def _iter_jsonl(path: Path, text_field: str) -> Iterator[str]:
    with _open_text(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
            if not isinstance(record, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            text = record.get(text_field)
            if not isinstance(text, str):
                what = "missing" if text_field not in record else f"a {type(text).__name__}"
                raise DataError(f"{path}:{lineno}: field {text_field!r} is {what}, expected a string "
                                f"(keys: {sorted(record)[:8]})")
            yield text


def _iter_parquet(path: Path, text_field: str) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError(f"{path}: reading .parquet needs the optional dependency pyarrow "
                        f"(pip install pyarrow), or convert the file to .jsonl") from e
    pf = pq.ParquetFile(path)
    if text_field not in pf.schema_arrow.names:
        raise DataError(f"{path}: parquet column {text_field!r} not found "
                        f"(columns: {pf.schema_arrow.names})")
    for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
        for text in batch.column(0).to_pylist():
            if text is None:
                continue  # null rows carry no document
            if not isinstance(text, str):
                raise DataError(f"{path}: column {text_field!r} holds {type(text).__name__}, not text")
            yield text
