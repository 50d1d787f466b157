"""Tokenize text corpora into binary token shards (``sambay data prepare``).

Every document becomes ``encode(text) + [EOS]`` (EOS only, never a BOS); documents are packed
back-to-back and cut into shards of at most ``shard_tokens`` tokens. Each input file gets its own
shards (the last one usually shorter), which is what makes the job resumable per input:

* ``manifest.json`` in the output directory lists every *completed* input with its size/mtime, its
  shards and token counts, plus the tokenizer's SHA-256, vocab size and EOS id. It is rewritten
  atomically after each input finishes.
* A rerun skips inputs already in the manifest (unless the file changed), refuses to continue with a
  different tokenizer, and redoes anything else. Shards are written under a temporary name and renamed,
  so a crash leaves no half-written shard; shards of an unfinished input are not in the manifest and
  are simply overwritten by the rerun. Readers use only the shards the manifest lists.

One output directory must not be prepared by two processes at once.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sambay.tokenizer import TOKENIZER_FILE, Tokenizer, TokenizerError, load_tokenizer

from .shards import dtype_for_vocab, write_shard
from .sources import DataError, expand_inputs, iter_documents

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "sambay-token-shards"
MANIFEST_VERSION = 1
ENCODE_BATCH_CHARS = 1 << 22  # encode_batch granularity: large enough to amortise the call


@dataclass
class PrepareConfig:
    tokenizer: str
    inputs: list[str]
    output: str
    workers: int = 1
    shard_tokens: int = 1 << 26  # 64 Mi tokens = 128 MiB of uint16 per shard
    text_field: str = "text"
    progress: bool = True


@dataclass
class PrepareResult:
    manifest: dict
    processed: list[str]  # inputs tokenized in this run
    skipped: list[str]  # inputs already complete from an earlier run


def shard_prefix(path: Path) -> str:
    """A file-system-safe shard name prefix, unique per absolute input path."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.name)[:40]
    return f"{stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"


def open_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """The tokenizer of ``path`` (a tokenizer.json or the directory holding it) with its document EOS id
    resolved; every problem is a :class:`DataError`."""
    file = Path(path)
    if file.is_dir():
        file = file / TOKENIZER_FILE
    if not file.is_file():
        raise DataError(f"tokenizer not found: {file} (pass a tokenizer.json or the directory holding it)")
    try:
        tok = load_tokenizer(file)
        tok.eos_id  # noqa: B018 - raises now, not in a worker, when the EOS token is not in the vocabulary
    except TokenizerError as e:
        raise DataError(str(e)) from None
    return tok


# ---- worker side ---------------------------------------------------------------------------------

_WORKER: dict = {}


def _init_worker(tokenizer_file: str, counter, quiet_rust: bool) -> None:
    if quiet_rust:
        # N processes each spawning a Rust thread pool oversubscribes the cores
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tok = open_tokenizer(tokenizer_file)
    # a literal "<|endoftext|>" inside a document is text, not a document boundary
    tok.backend.encode_special_tokens = True
    _WORKER.update(tok=tok, counter=counter)


def _process_input(task: tuple[str, str, int, str]) -> dict:
    """Tokenize one input file into ``<prefix>-NNNNN.bin`` shards. Runs in a worker process."""
    path_s, out_dir, shard_tokens, text_field = task
    path = Path(path_s)
    tok: Tokenizer = _WORKER["tok"]
    eos_id = tok.eos_id
    stat = path.stat()
    prefix = shard_prefix(path)
    pending: list[np.ndarray] = []
    n_pending = n_tokens = n_docs = 0
    shards: list[dict] = []

    def flush(final: bool) -> None:
        nonlocal pending, n_pending
        buf = np.concatenate(pending) if pending else np.zeros(0, np.int64)
        while len(buf) >= shard_tokens or (final and len(buf)):
            name = f"{prefix}-{len(shards):05d}.bin"
            write_shard(Path(out_dir) / name, buf[:shard_tokens], tok.vocab_size)
            shards.append({"file": name, "tokens": int(min(len(buf), shard_tokens))})
            buf = buf[shard_tokens:]
        pending, n_pending = ([buf] if len(buf) else []), len(buf)

    batch: list[str] = []
    batch_chars = 0
    docs = iter_documents(path, text_field)
    for text in _chain_sentinel(docs):
        if text is not None and text:  # empty documents are skipped (they would be a lone EOS)
            batch.append(text)
            batch_chars += len(text)
        if batch and (text is None or batch_chars >= ENCODE_BATCH_CHARS):
            encodings = tok.backend.encode_batch(batch, add_special_tokens=False)
            ids = [np.append(np.asarray(e.ids, dtype=np.int64), eos_id) for e in encodings]
            arr = np.concatenate(ids)
            pending.append(arr)
            n_pending += len(arr)
            n_tokens += len(arr)
            n_docs += len(batch)
            _bump(len(arr))
            batch, batch_chars = [], 0
            if n_pending >= shard_tokens:
                flush(final=False)
    flush(final=True)
    return {"input": path_s, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "tokens": n_tokens,
            "documents": n_docs, "shards": shards}


def _chain_sentinel(it):
    yield from it
    yield None  # end marker: flush the last partial encode batch


def _bump(n: int) -> None:
    counter = _WORKER.get("counter")
    if callable(counter):  # in-process run: report straight to the progress display
        counter(n)
    elif counter is not None:  # shared multiprocessing.Value read by the driver
        with counter.get_lock():
            counter.value += n


# ---- driver side ---------------------------------------------------------------------------------


def _load_manifest(out: Path, tok: Tokenizer, config: PrepareConfig) -> dict:
    path = out / MANIFEST
    fresh = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION,
             "tokenizer": {"file": str(tok.file), "sha256": tok.sha256, "vocab_size": tok.vocab_size,
                           "eos_id": tok.eos_id, "eos_token": tok.id_to_token(tok.eos_id)},
             "dtype": dtype_for_vocab(tok.vocab_size).name, "text_field": config.text_field,
             "shard_tokens": config.shard_tokens, "total_tokens": 0, "inputs": {}}
    if not path.exists():
        return fresh
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: corrupt manifest ({e}); delete it to re-prepare {out}") from e
    if manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path}: not a sambay shard manifest")
    old = manifest["tokenizer"]
    if old["sha256"] != tok.sha256 or old["vocab_size"] != tok.vocab_size:
        raise DataError(
            f"{out} was prepared with a different tokenizer ({old['file']}, vocab {old['vocab_size']}, "
            f"sha256 {old['sha256'][:12]}) than {tok.file} (vocab {tok.vocab_size}, sha256 "
            f"{tok.sha256[:12]}); use a new --output directory or delete {out}")
    return manifest


def _write_manifest(out: Path, manifest: dict) -> None:
    manifest["total_tokens"] = sum(e["tokens"] for e in manifest["inputs"].values())
    manifest["inputs"] = dict(sorted(manifest["inputs"].items()))  # sorted = the loader's order
    tmp = out / f".tmp-{MANIFEST}.{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, out / MANIFEST)


def _is_done(entry: dict | None, path: Path, out: Path) -> bool:
    if entry is None:
        return False
    st = path.stat()
    if entry["size"] != st.st_size or entry["mtime_ns"] != st.st_mtime_ns:
        return False  # the input changed since it was tokenized: redo it
    return all((out / s["file"]).is_file() for s in entry["shards"])


def prepare(config: PrepareConfig) -> PrepareResult:
    """Tokenize ``config.inputs`` into shards under ``config.output``; see the module docstring."""
    if config.shard_tokens <= 0:
        raise ValueError("shard_tokens must be positive")
    files = expand_inputs(config.inputs)
    tok = open_tokenizer(config.tokenizer)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _load_manifest(out, tok, config)
    for stale in out.glob(".tmp-*"):  # left by a crashed run
        stale.unlink()
    todo = [f for f in files if not _is_done(manifest["inputs"].get(str(f)), f, out)]
    todo_set = set(todo)
    skipped = [str(f) for f in files if f not in todo_set]
    tasks = [(str(f), str(out), config.shard_tokens, config.text_field) for f in todo]
    progress = _Progress(len(tasks), len(skipped), config.progress)
    workers = max(1, min(config.workers, len(tasks)))
    if workers == 1:
        _init_worker(str(tok.file), progress.add, quiet_rust=False)
        try:
            for task in tasks:
                _record(out, manifest, _process_input(task), progress)
        finally:
            _WORKER.clear()
    else:
        # fork where available: workers start in milliseconds and callers need no __main__ guard.
        # Safe here because the parent has not run the tokenizer (no Rust thread pool to inherit).
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        counter = ctx.Value("q", 0)
        with ctx.Pool(workers, _init_worker, (str(tok.file), counter, True)) as pool:
            it = pool.imap_unordered(_process_input, tasks)
            for _ in range(len(tasks)):
                while True:
                    try:
                        res = it.next(timeout=0.5)
                        break
                    except mp.TimeoutError:
                        progress.tokens = counter.value
                        progress.show()
                progress.tokens = counter.value
                _record(out, manifest, res, progress)
    if not tasks:
        _write_manifest(out, manifest)  # refresh derived fields even when nothing was left to do
    progress.finish(manifest)
    return PrepareResult(manifest, [t[0] for t in tasks], skipped)


def _record(out: Path, manifest: dict, res: dict, progress: _Progress) -> None:
    old = manifest["inputs"].get(res["input"])
    new_files = {s["file"] for s in res["shards"]}
    for s in (old or {}).get("shards", []):  # the input shrank: drop shards it no longer has
        if s["file"] not in new_files:
            (out / s["file"]).unlink(missing_ok=True)
    manifest["inputs"][res.pop("input")] = res
    _write_manifest(out, manifest)
    progress.done += 1
    progress.show(force=True)


class _Progress:
    """Plain stderr progress: files done, tokens, throughput. Uses \\r only on a terminal."""

    def __init__(self, total: int, skipped: int, enabled: bool):
        self.total, self.skipped, self.enabled = total, skipped, enabled
        self.done = self.tokens = 0
        self.t0 = self.last = time.monotonic()
        self.tty = sys.stderr.isatty()
        if enabled and skipped:
            print(f"prepare: skipping {skipped} input(s) already in the manifest", file=sys.stderr)

    def add(self, n: int) -> None:
        self.tokens += n
        self.show()

    def show(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 1.0) or (not self.tty and not force):
            return
        self.last = now
        rate = self.tokens / max(now - self.t0, 1e-9)
        line = (f"prepare: {self.done}/{self.total} files | {self.tokens:,} tokens | "
                f"{rate / 1e6:.2f}M tok/s | {now - self.t0:.0f}s")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr,
              flush=True)

    def finish(self, manifest: dict) -> None:
        if self.enabled:
            print(("\n" if self.tty and self.total else "")
                  + f"prepare: done; {len(manifest['inputs'])} inputs, {manifest['total_tokens']:,} "
                  f"tokens ({manifest['dtype']})", file=sys.stderr)
