"""A prepared dataset as one flat token stream over its memory-mapped shards.

A *source* is a directory written by ``sambay data prepare`` (its ``manifest.json`` gives the shard
order and the EOS id), a directory of ``*.bin`` shards without a manifest (sorted by name), a single
shard file, a glob, or a list of those (concatenated in the given order).
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .shards import read_header, read_shard
from .sources import DataError

Source = str | os.PathLike | Sequence[str | os.PathLike]


def manifest_tokenizer(source) -> dict | None:
    """The tokenizer entry ({"file", "sha256", "vocab_size", "eos_id", ...}) of the manifest of the prepared
    data of `source` (a shard dir, a list, or a {source: weight} mixture), or None for bare shards."""
    if isinstance(source, dict):
        source = list(source)
    for s in source if isinstance(source, (list, tuple)) else [source]:
        manifest = Path(s) / "manifest.json"
        if manifest.is_file():
            try:
                entry = json.loads(manifest.read_text())["tokenizer"]
            except (ValueError, KeyError, TypeError):
                continue
            if isinstance(entry, dict):
                return entry
    return None


def resolve_shards(source: Source) -> tuple[list[Path], int | None]:
    """Shard files of a source, in stream order, and the EOS id when a manifest names it."""
    if isinstance(source, (list, tuple)):
        files: list[Path] = []
        eos: set[int] = set()
        for s in source:
            f, e = resolve_shards(s)
            files += f
            eos |= {e} if e is not None else set()
        if len(eos) > 1:
            raise DataError(f"sources disagree on the EOS id: {sorted(eos)}")
        return files, (eos.pop() if eos else None)
    p = Path(source)
    if p.is_dir():
        manifest = p / "manifest.json"
        if manifest.is_file():
            m = json.loads(manifest.read_text())
            files = [p / s["file"] for _, entry in sorted(m["inputs"].items()) for s in entry["shards"]]
            return files, int(m["tokenizer"]["eos_id"])
        files = sorted(p.glob("*.bin"))
        if not files:
            raise DataError(f"{p}: no manifest.json and no *.bin shards")
        return files, None
    if glob.has_magic(str(p)):
        files = [Path(f) for f in sorted(glob.glob(str(p)))]
        if not files:
            raise DataError(f"glob {str(p)!r} matched no shards")
        return files, None
    if p.is_file():
        return [p], None
    raise DataError(f"data source not found: {p}")


class TokenStream:
    """The concatenation of a source's shards, readable at any token offset.

    Blocks may straddle shard boundaries, so per-input shards (whose last shard is short) waste nothing.
    """

    def __init__(self, source: Source, *, eos_id: int | None = None):
        files, manifest_eos = resolve_shards(source)
        if eos_id is not None and manifest_eos is not None and eos_id != manifest_eos:
            raise DataError(f"eos_id={eos_id} given, but the manifest of {source} says {manifest_eos}")
        self.eos_id = eos_id if eos_id is not None else manifest_eos
        headers = [read_header(f) for f in files]  # validates every shard up front
        vocab = {h.vocab_size for h in headers if h.vocab_size}
        if len(vocab) > 1:
            raise DataError(f"shards of {source} were written with different vocab sizes {sorted(vocab)}")
        self.vocab_size: int | None = vocab.pop() if vocab else None
        keep = [(f, h) for f, h in zip(files, headers) if h.num_tokens > 0]
        self.files = [f for f, _ in keep]
        self._arrays: list[np.ndarray | None] = [None] * len(keep)  # memmapped lazily
        lengths = np.array([h.num_tokens for _, h in keep], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)])
        self.num_tokens = int(self.starts[-1])
        self.name = str(source)

    def fingerprint(self) -> dict:
        """Identifies the stream for resume checks (a changed dataset means a different order)."""
        return {"num_tokens": self.num_tokens, "num_shards": len(self.files)}

    def _array(self, i: int) -> np.ndarray:
        if self._arrays[i] is None:
            self._arrays[i] = read_shard(self.files[i])
        return self._arrays[i]

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens ``[start, start + length)`` of the stream as int64, shape (length,)."""
        if start < 0 or start + length > self.num_tokens:
            raise IndexError(f"read [{start}, {start + length}) outside a {self.num_tokens}-token stream")
        out = np.empty(length, dtype=np.int64)
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        done = 0
        while done < length:
            off = start + done - int(self.starts[i])
            take = min(length - done, int(self.starts[i + 1] - self.starts[i]) - off)
            out[done:done + take] = self._array(i)[off:off + take]
            done += take
            i += 1
        return out

    def num_blocks(self, seq_len: int) -> int:
        """Blocks of seq_len+1 tokens at stride seq_len: every token is a target exactly once."""
        return max(0, (self.num_tokens - 1) // seq_len)

    def block(self, index: int, seq_len: int) -> np.ndarray:
        """Block ``index``: tokens ``[index*seq_len, index*seq_len + seq_len + 1)``, shape (seq_len+1,)."""
        return self.read(index * seq_len, seq_len + 1)
