import struct

import numpy as np
import pytest

from sambay.data.shards import HEADER_SIZE, ShardError, read_header, read_shard, write_shard


@pytest.mark.parametrize("vocab,dtype", [(50_000, np.uint16), (65_536, np.uint16), (100_000, np.uint32)])
def test_shard_roundtrip_picks_smallest_dtype(tmp_path, vocab, dtype):
    tokens = np.array([0, 1, vocab - 1, 7], dtype=np.int64)
    write_shard(tmp_path / "s.bin", tokens, vocab)
    arr = read_shard(tmp_path / "s.bin")
    assert arr.dtype == dtype and arr.tolist() == tokens.tolist()
    assert read_header(tmp_path / "s.bin").vocab_size == vocab


def test_write_shard_rejects_ids_outside_vocab(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        write_shard(tmp_path / "s.bin", np.array([5, 300]), 300)


def test_truncated_shard_gives_readable_error(tmp_path):
    path = write_shard(tmp_path / "s.bin", np.arange(100), 1000)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ShardError, match=r"s\.bin: truncated shard: header says 100 tokens"):
        read_shard(path)


def test_file_shorter_than_header_gives_readable_error(tmp_path):
    path = tmp_path / "s.bin"
    path.write_bytes(b"SAMBAY")
    with pytest.raises(ShardError, match="shorter than the 32-byte header"):
        read_shard(path)


def test_corrupt_magic_version_and_trailing_bytes_are_rejected(tmp_path):
    path = write_shard(tmp_path / "s.bin", np.arange(10), 1000)
    good = path.read_bytes()
    path.write_bytes(b"XXXXXXXX" + good[8:])
    with pytest.raises(ShardError, match="bad magic"):
        read_shard(path)
    path.write_bytes(good[:8] + struct.pack("<I", 99) + good[12:])
    with pytest.raises(ShardError, match="unsupported shard version 99"):
        read_shard(path)
    path.write_bytes(good + b"\0\0")
    with pytest.raises(ShardError, match="trailing bytes"):
        read_shard(path)
    with pytest.raises(ShardError, match="not found"):
        read_shard(tmp_path / "missing.bin")
    assert HEADER_SIZE == 32


def test_litpkds_shard_from_archscale_is_readable(tmp_path):
    # litgpt's packed-dataset layout: 7-byte magic LITPKDS, u64 version 1, u8 dtype code 8 (uint16), u64 chunk size
    tokens = np.arange(20, dtype=np.uint16)
    path = tmp_path / "lit.bin"
    path.write_bytes(b"LITPKDS" + struct.pack("<QBQ", 1, 8, 20) + tokens.tobytes())
    assert read_shard(path).tolist() == tokens.tolist()
