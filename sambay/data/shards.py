"""Binary token shards: a 32-byte self-describing header followed by the raw tokens.

Layout (little-endian)::

    offset  size  field
    0       8     magic  b"SAMBAYTK"
    8       4     version (uint32, = 1)
    12      4     itemsize (uint32): 2 -> uint16 tokens, 4 -> uint32 tokens
    16      8     vocab_size (uint64)
    24      8     num_tokens (uint64)
    32      ...   num_tokens tokens of the given dtype

uint16 is used when ``vocab_size <= 65536`` (every id fits), else uint32. The header's token count
lets a reader detect truncation without trusting the file size alone.

ArchScale/litgpt ``LITPKDS`` shards (their header: 7-byte magic, uint64 version, uint8 dtype
code, uint64 chunk size) can be read too, so their pre-tokenized data needs no re-tokenization;
their header carries no vocab size (reported as 0).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"SAMBAYTK"
VERSION = 1
HEADER = struct.Struct("<8sIIQQ")
HEADER_SIZE = HEADER.size  # 32 bytes; keeps the token payload 4-byte aligned for uint32 memmaps

_LIT_MAGIC = b"LITPKDS"
_LIT_HEADER = struct.Struct("<7sQBQ")  # 24 bytes
_LIT_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float32,
               7: np.float64, 8: np.uint16}


class ShardError(ValueError):
    """A shard file is missing, truncated, or has an invalid header."""


@dataclass(frozen=True)
class ShardHeader:
    dtype: np.dtype
    vocab_size: int  # 0 when unknown (LITPKDS shards)
    num_tokens: int
    offset: int  # byte offset of the first token


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """Smallest unsigned dtype that holds every id in ``[0, vocab_size)``."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def write_shard(path: str | os.PathLike, tokens: np.ndarray, vocab_size: int) -> Path:
    """Write ``tokens`` (1-D int array) as a shard, atomically.

    The bytes go to a temporary name in the same directory, are fsynced and then renamed over ``path``,
    so a crash never leaves a half-written file under the final name.
    """
    path = Path(path)
    dtype = dtype_for_vocab(vocab_size)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"token ids outside [0, {vocab_size}) for {path}")
    tmp = path.with_name(f".tmp-{path.name}.{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(HEADER.pack(MAGIC, VERSION, dtype.itemsize, vocab_size, tokens.size))
        f.write(tokens.astype(dtype.newbyteorder("<"), copy=False).tobytes())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_header(path: str | os.PathLike) -> ShardHeader:
    """Parse and validate a shard header; checks the file is exactly as long as the header says."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: shard file not found")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
    if head[:7] == _LIT_MAGIC:
        return _read_lit_header(path, head, size)
    if len(head) < HEADER_SIZE:
        raise ShardError(f"{path}: truncated shard: {size} bytes is shorter than the "
                         f"{HEADER_SIZE}-byte header")
    magic, version, itemsize, vocab_size, num_tokens = HEADER.unpack(head)
    if magic != MAGIC:
        raise ShardError(f"{path}: not a sambay token shard (bad magic {magic!r}, expected {MAGIC!r})")
    if version != VERSION:
        raise ShardError(f"{path}: unsupported shard version {version} (this reader knows {VERSION})")
    if itemsize not in (2, 4):
        raise ShardError(f"{path}: invalid token itemsize {itemsize} in header (expected 2 or 4)")
    dtype = np.dtype(np.uint16 if itemsize == 2 else np.uint32)
    if vocab_size == 0 or dtype != dtype_for_vocab(vocab_size):
        raise ShardError(f"{path}: header vocab_size {vocab_size} does not match itemsize {itemsize}")
    expected = HEADER_SIZE + num_tokens * itemsize
    if size != expected:
        kind = "truncated shard" if size < expected else "shard has trailing bytes"
        raise ShardError(f"{path}: {kind}: header says {num_tokens} tokens ({expected} bytes), "
                         f"file has {size} bytes")
    return ShardHeader(dtype, int(vocab_size), int(num_tokens), HEADER_SIZE)


def _read_lit_header(path: Path, head: bytes, size: int) -> ShardHeader:
    if len(head) < _LIT_HEADER.size:
        raise ShardError(f"{path}: truncated LITPKDS header ({size} bytes)")
    _, version, code, chunk = _LIT_HEADER.unpack(head[: _LIT_HEADER.size])
    if version != 1 or code not in _LIT_DTYPES:
        raise ShardError(f"{path}: unsupported LITPKDS header (version {version}, dtype code {code})")
    dtype = np.dtype(_LIT_DTYPES[code])
    expected = _LIT_HEADER.size + chunk * dtype.itemsize
    if size < expected:
        raise ShardError(f"{path}: truncated shard: header says {chunk} tokens ({expected} bytes), "
                         f"file has {size} bytes")
    return ShardHeader(dtype, 0, int(chunk), _LIT_HEADER.size)


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a shard's tokens read-only. Returns a 1-D array of shape (num_tokens,).

    Raises ShardError (a ValueError) with the file name for a missing, truncated or corrupt file.
    """
    header = read_header(path)
    if header.num_tokens == 0:
        return np.zeros(0, dtype=header.dtype)
    return np.memmap(path, dtype=header.dtype.newbyteorder("<"), mode="r",
                     offset=header.offset, shape=(header.num_tokens,))
