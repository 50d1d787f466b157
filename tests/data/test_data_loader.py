"""Loader tests over synthetic shards whose token value encodes its stream position (token = pos % P),
so every row can be traced back to the block it came from."""

import json

import numpy as np
import pytest
import torch

from sambay.data.dataset import TokenStream
from sambay.data.loader import MissingEOSError, TokenLoader, ValidationLoader, document_ids
from sambay.data.shards import write_shard
from sambay.data.sources import DataError

T = 8  # seq_len
VOCAB = 60_000


def make_dataset(root, n_tokens, offset=0, shard_sizes=(37, 100, 5)):
    """Shards holding positions offset..offset+n_tokens-1 (mod VOCAB), with uneven shard sizes."""
    root.mkdir(parents=True, exist_ok=True)
    tokens = (np.arange(n_tokens) + offset) % VOCAB
    i = k = 0
    while i < n_tokens:
        size = shard_sizes[k % len(shard_sizes)]
        write_shard(root / f"s{k:04d}.bin", tokens[i:i + size], VOCAB)
        i, k = i + size, k + 1
    return root


def block_ids(x, offset=0):
    """Block index of every row of input_ids (B, T): first token = block * T + offset."""
    return ((x[:, 0] - offset) // T).tolist()


@pytest.fixture
def ds(tmp_path):
    return make_dataset(tmp_path / "ds", 8 * 50 + 1)  # exactly 50 blocks


def test_rows_are_contiguous_blocks_with_targets_shifted_by_one(ds):
    x, y = next(TokenLoader(ds, T, 4, seed=0))
    assert x.shape == y.shape == (4, T) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x, x[:, :1] + torch.arange(T))  # block straddling shards reads through
    assert all(b * T == int(v) for b, v in zip(block_ids(x), x[:, 0]))


def test_same_seed_rank_world_gives_identical_batches_and_other_seed_differs(ds):
    a = [next(it) for it in [TokenLoader(ds, T, 4, seed=3)] for _ in range(10)]
    b = [next(it) for it in [TokenLoader(ds, T, 4, seed=3)] for _ in range(10)]
    c = [next(it) for it in [TokenLoader(ds, T, 4, seed=4)] for _ in range(10)]
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))


def test_each_epoch_visits_every_block_once_and_reshuffles(ds):
    loader = TokenLoader(ds, T, 5, seed=0)  # 50 blocks = 10 batches per epoch
    epochs = [[b for _ in range(10) for b in block_ids(next(loader)[0])] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(50))
    assert epochs[0] != epochs[1]
    assert loader.epochs == [2.0]


def test_ranks_read_disjoint_blocks_that_cover_the_epoch(ds):
    W, B = 4, 3  # 50 blocks -> 4 full global batches of 12 per epoch
    seen = []
    for rank in range(W):
        loader = TokenLoader(ds, T, B, seed=7, rank=rank, world_size=W)
        seen.append({b for _ in range(4) for b in block_ids(next(loader)[0])})
    assert sum(len(s) for s in seen) == W * B * 4 == len(set().union(*seen))  # pairwise disjoint


def test_fast_forward_from_state_dict_equals_continuing_without_reading_data(tmp_path, monkeypatch):
    a = make_dataset(tmp_path / "a", 8 * 13 + 1)  # small: the 12 batches cross several epochs
    b = make_dataset(tmp_path / "b", 8 * 29 + 1, offset=30_000)
    sources = {str(a): 0.6, str(b): 0.4}
    for rank in (0, 1):
        ref = TokenLoader(sources, T, 3, seed=11, rank=rank, world_size=2, document_ids=True, eos_id=5)
        for _ in range(7):
            next(ref)
        state = json.loads(json.dumps(ref.state_dict()))  # must survive a JSON checkpoint
        expected = [next(ref) for _ in range(5)]

        resumed = TokenLoader(sources, T, 3, seed=11, rank=rank, world_size=2, document_ids=True,
                              eos_id=5)
        reads = []
        orig = TokenStream.read
        monkeypatch.setattr(TokenStream, "read", lambda self, *a: reads.append(a) or orig(self, *a))
        resumed.load_state_dict(state)
        assert reads == []  # positioning is arithmetic: no data replayed
        got = [next(resumed) for _ in range(5)]
        assert len(reads) == 5 * 3  # afterwards: one block read per row, nothing more
        monkeypatch.undo()
        for e, g in zip(expected, got):
            assert all(torch.equal(p, q) for p, q in zip(e, g))


def test_state_from_a_different_configuration_is_rejected(ds):
    state = TokenLoader(ds, T, 4, seed=0).state_dict()
    with pytest.raises(ValueError, match="seq_len"):
        TokenLoader(ds, T * 2, 4, seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="seed"):
        TokenLoader(ds, T, 4, seed=1).load_state_dict(state)


def test_mixture_draws_datasets_in_proportion_to_weights(tmp_path):
    a = make_dataset(tmp_path / "a", 8 * 40 + 1)
    b = make_dataset(tmp_path / "b", 8 * 40 + 1, offset=30_000)
    loader = TokenLoader({a: 3.0, b: 1.0}, T, 16, seed=0)
    rows = torch.cat([next(loader)[0][:, 0] for _ in range(100)])
    frac_a = (rows < 30_000).float().mean().item()
    assert abs(frac_a - 0.75) < 0.04  # 1600 draws: 4 sigma is ~0.04
    assert loader.consumed[0] + loader.consumed[1] == 1600
    assert TokenLoader({a: 1.0, b: 0.0}, T, 16, seed=0).__next__()[0].max() < 30_000


def test_document_ids_start_a_new_document_after_each_eos():
    eos = 0
    x = torch.tensor([[5, 6, eos, 7, eos, 8], [eos, eos, 1, 2, 3, eos]])
    assert document_ids(x, eos).tolist() == [[0, 0, 0, 1, 1, 2], [0, 1, 2, 2, 2, 2]]


def test_loader_document_ids_follow_eos_positions_in_the_batch(tmp_path):
    root = make_dataset(tmp_path / "d", 8 * 20 + 1)  # token value 3 plays EOS: once per 60000, so
    loader = TokenLoader(root, T, 4, seed=0, document_ids=True, eos_id=3)  # only in block 0
    for _ in range(5):
        x, _, doc = next(loader)
        assert doc.shape == x.shape
        for row, ids in zip(x.tolist(), doc.tolist()):
            expect = [0] + list(np.cumsum([t == 3 for t in row[:-1]]))
            assert ids == expect


def test_validation_loader_is_fixed_order_rank_disjoint_and_repeatable(ds):
    v = ValidationLoader(ds, T, 2)
    first = [block_ids(x) for x, _ in v]
    assert first == [[0, 1], [2, 3]] + [[2 * k, 2 * k + 1] for k in range(2, 25)]
    assert [block_ids(x) for x, _ in v] == first and len(v) == 25
    r = [[b for x, _ in ValidationLoader(ds, T, 2, rank=k, world_size=3, max_batches=4)
          for b in block_ids(x)] for k in range(3)]
    assert r[0] == [0, 3, 6, 9, 12, 15, 18, 21] and r[1] == [b + 1 for b in r[0]]
    assert len(set(r[0]) | set(r[1]) | set(r[2])) == 24  # pairwise disjoint
    x, y = next(iter(ValidationLoader(ds, 4 * T, 1)))  # longer eval length (extrapolation)
    assert x.shape == (1, 4 * T)


def test_mismatched_vocab_or_missing_data_is_a_clear_error(tmp_path, ds):
    small = tmp_path / "small"
    small.mkdir()
    write_shard(small / "x.bin", np.arange(50), 1000)
    with pytest.raises(DataError, match="different vocab sizes"):
        TokenLoader({ds: 1, small: 1}, T, 2)
    with pytest.raises(DataError, match="larger than the model's"):
        TokenLoader(ds, T, 2, vocab_size=32000)
    with pytest.raises(DataError, match="less than one block"):
        TokenLoader(small, 64, 2)
    with pytest.raises(DataError, match="not found"):
        TokenLoader(tmp_path / "nope", T, 2)
    with pytest.raises(DataError, match="needs an EOS id"):
        TokenLoader(ds, T, 2, document_ids=True)
    with pytest.raises(DataError, match="not a weighted mixture"):
        ValidationLoader({ds: 1.0}, T, 2)


def test_missing_eos_id_is_a_typed_error(ds):
    # the trainer falls back to the model's EOS id on this type (never on a message)
    assert issubclass(MissingEOSError, DataError)
    with pytest.raises(MissingEOSError):
        TokenLoader(ds, T, 2, document_ids=True)
    with pytest.raises(MissingEOSError):
        ValidationLoader(ds, T, 2, document_ids=True)


def test_prepared_directory_feeds_the_loader_with_its_manifest_eos(corpus, tokenizer_dir, tmp_path):
    from sambay.data.prepare import PrepareConfig, prepare
    from sambay.tokenizer import load_tokenizer

    prepare(PrepareConfig(str(tokenizer_dir), [str(corpus[0] / "*")], str(tmp_path), shard_tokens=300,
                          progress=False))
    eos = load_tokenizer(tokenizer_dir).eos_id
    loader = TokenLoader(tmp_path, 32, 4, document_ids=True)  # EOS id from manifest.json
    batches = [next(loader) for _ in range(20)]
    assert all(torch.equal(doc, document_ids(x, eos)) for x, _, doc in batches)
    assert sum(int(doc.max()) for _, _, doc in batches) >= 10  # 14 documents: real boundaries seen
    total = json.loads((tmp_path / "manifest.json").read_text())["total_tokens"]
    assert TokenStream(tmp_path).num_tokens == total
