"""Sliding-window perplexity: agreement with the model's own loss, each token scored once, the per-position
curve, held-out data loading, and the plot's optional dependency."""

import json
import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import random_model

from sambay.config import tiny
from sambay.data.shards import write_shard
from sambay.eval.perplexity import (
    PerplexityResult,
    _windows,
    load_token_ids,
    perplexity_by_length,
    plot_perplexity,
    sliding_window_perplexity,
    token_nll,
)

VOCAB, L = 256, 16


@pytest.fixture(scope="module")
def model():
    return random_model(tiny("sambay", vocab_size=VOCAB, d_model=32), seed=0)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, VOCAB, (4 * L + 5,), generator=torch.Generator().manual_seed(1))


def test_token_nll_is_the_cross_entropy_of_the_logits(model, ids):
    x = ids[:2 * L].view(2, L)
    targets = torch.roll(x, -1, dims=1)
    targets[:, -1] = -100
    targets[0, :3] = -100
    with torch.no_grad():
        logits = model(x).logits.float()
        nll = token_nll(model, x, targets, chunk_rows=5)
    ref = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="none").view(2, L)
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-5)
    assert (nll[targets == -100] == 0).all()


def test_stride_equal_to_length_is_the_models_own_loss_over_non_overlapping_windows(model, ids):
    n = 4 * L
    res = sliding_window_perplexity(model, ids[:n], L)
    with torch.no_grad():
        losses = [model(w[None], labels=w[None]).loss.item() for w in ids[:n].view(4, L)]
    assert res.stride == L and res.num_windows == 4 and res.num_tokens == 4 * (L - 1)
    assert res.loss == pytest.approx(sum(losses) / 4, rel=1e-5)
    assert res.perplexity == pytest.approx(math.exp(sum(losses) / 4), rel=1e-5)
    batched = sliding_window_perplexity(model, ids[:n], L, batch_size=3)
    assert batched.loss == pytest.approx(res.loss, rel=1e-5)


@pytest.mark.parametrize("stride", [1, 5, L - 1])
def test_a_smaller_stride_scores_every_token_exactly_once(model, ids, stride):
    n = ids.numel()
    windows = _windows(n, L, stride, "new")
    times = np.zeros(n, dtype=int)
    for begin, end, first in windows:
        assert end - begin <= L and begin < first
        times[first:end] += 1
    assert times[0] == 0 and (times[1:] == 1).all()

    res = sliding_window_perplexity(model, ids, L, stride, batch_size=4, bucket_size=1)
    assert res.num_tokens == n - 1 and sum(res.position_tokens) == n - 1
    # brute force: each token's loss with the context its window gives it
    total = 0.0
    with torch.no_grad():
        for begin, end, first in windows:
            logp = F.log_softmax(model(ids[None, begin:end]).logits.float()[0], dim=-1)
            total -= sum(logp[j - begin - 1, ids[j]].item() for j in range(first, end))
    assert res.loss == pytest.approx(total / (n - 1), rel=1e-5)


def test_the_position_curve_buckets_the_scored_tokens_by_their_context(model, ids):
    res = sliding_window_perplexity(model, ids[:4 * L], L, bucket_size=4)
    assert res.bucket_size == 4 and len(res.position_loss) == L // 4
    assert res.position_tokens == [3 * 4, 4 * 4, 4 * 4, 4 * 4]  # position 0 (no context) is never scored
    mean = sum(v * c for v, c in zip(res.position_loss, res.position_tokens)) / res.num_tokens
    assert mean == pytest.approx(res.loss, rel=1e-6)
    assert res.bucket_centers == [2.0, 6.0, 10.0, 14.0]
    json.dumps(res.to_dict())
    overlapping = sliding_window_perplexity(model, ids[:4 * L], L, 4, bucket_size=4)
    # the first window scores positions 1..15; the 12 later ones only their last 4 positions (12..15)
    assert overlapping.num_windows == 13 and overlapping.position_tokens == [3, 4, 4, 4 + 12 * 4]
    by_length = perplexity_by_length(model, ids, [8, 16], bucket_size=2)
    assert [r.length for r in by_length] == [8, 16] and [r.stride for r in by_length] == [8, 16]


def test_mode_all_scores_every_position_of_each_full_window(model, ids):
    res = sliding_window_perplexity(model, ids, L, 8, mode="all")
    starts = range(0, ids.numel() - L + 1, 8)
    with torch.no_grad():
        losses = [model(ids[None, b:b + L], labels=ids[None, b:b + L]).loss.item() for b in starts]
    assert res.num_windows == len(losses) and res.loss == pytest.approx(sum(losses) / len(losses), rel=1e-5)


def test_bad_arguments(model, ids):
    with pytest.raises(ValueError, match="would leave tokens unscored"):
        sliding_window_perplexity(model, ids, 8, 9)
    with pytest.raises(ValueError, match="fewer than one window"):
        sliding_window_perplexity(model, ids[:10], 16)
    with pytest.raises(ValueError, match="token ids must lie in"):
        sliding_window_perplexity(model, torch.full((32,), VOCAB), 16)
    with pytest.raises(ValueError, match="mode must be one of"):
        sliding_window_perplexity(model, ids, 16, mode="last")


class CharTokenizer:
    eos_id = 0

    def encode(self, text, add_special_tokens=False):
        return [1 + ord(c) % 200 for c in text]


def test_token_ids_load_from_text_jsonl_shards_and_the_offline_corpus_folder(tmp_path):
    docs = ["hello world", "", "second document"]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "val.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (corpus / "train.jsonl").write_text(json.dumps({"text": "not held out"}) + "\n")
    tok = CharTokenizer()
    expected = tok.encode("hello world") + [0] + tok.encode("second document") + [0]
    assert load_token_ids(corpus, tok).tolist() == expected  # the folder's held-out split
    assert load_token_ids(corpus / "val.jsonl", tok, max_tokens=5).tolist() == expected[:5]
    (tmp_path / "a.txt").write_text("abc")
    assert load_token_ids(tmp_path / "a.txt", tok).tolist() == tok.encode("abc") + [0]
    with pytest.raises(ValueError, match="needs a tokenizer"):
        load_token_ids(corpus / "val.jsonl")

    shards = corpus / "val"
    shards.mkdir()
    write_shard(shards / "part-0.bin", np.arange(10, dtype=np.uint16), vocab_size=VOCAB)
    write_shard(shards / "part-1.bin", np.arange(10, 20, dtype=np.uint16), vocab_size=VOCAB)
    assert load_token_ids(shards, max_tokens=15).tolist() == list(range(15))
    assert load_token_ids(corpus).tolist() == list(range(20))  # no tokenizer: the prepared held-out shards
    assert load_token_ids(corpus, tok).tolist() == expected


def test_plot_needs_matplotlib_and_draws_when_it_is_there(model, ids, tmp_path, monkeypatch):
    results = perplexity_by_length(model, ids, [8, 16], bucket_size=2)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "matplotlib", None)
        m.setitem(sys.modules, "matplotlib.figure", None)
        with pytest.raises(ImportError, match="pip install matplotlib"):
            plot_perplexity(results, tmp_path / "ppl.png")
    pytest.importorskip("matplotlib")
    out = plot_perplexity([r.to_dict() for r in results], tmp_path / "ppl.png")
    assert out.stat().st_size > 0
    assert isinstance(results[0], PerplexityResult)
