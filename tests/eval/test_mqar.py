"""MQAR: the generator's layout (disjoint key/value halves, queries answered by the earlier pair, power-law
query placement, -100 off the answers), seeding, argument checks, and teacher-forced accuracy."""

import numpy as np
import pytest
import torch
from helpers import random_model

from sambay.config import tiny
from sambay.eval.mqar import batch_accuracy, check_mqar_args, mqar_accuracy, mqar_batch, query_slot_weights

V, T, K = 128, 64, 8


def test_the_same_seed_gives_the_same_batch_and_another_seed_another():
    a, b = mqar_batch(4, V, T, K, seed=3), mqar_batch(4, V, T, K, seed=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = mqar_batch(4, V, T, K, seed=4)
    assert not torch.equal(a[0], c[0])
    assert torch.equal(mqar_batch(2, V, T, K, seed=[1, 2, 3])[0], mqar_batch(2, V, T, K, seed=[1, 2, 3])[0])


def test_keys_and_values_come_from_disjoint_halves_of_the_vocabulary():
    x, _ = mqar_batch(64, V, T, K, seed=0)
    assert x.shape == (64, T) and x.dtype == torch.int64
    keys, values = x[:, 0:2 * K:2], x[:, 1:2 * K:2]
    assert ((keys >= 1) & (keys < V // 2)).all()
    assert ((values >= V // 2) & (values < V)).all()
    for row_keys, row_values in zip(keys, values):  # distinct within a sequence
        assert len(set(row_keys.tolist())) == K and len(set(row_values.tolist())) == K
    assert ((x >= 0) & (x < V)).all()


def test_every_query_is_answered_by_the_value_paired_with_its_key():
    x, y = mqar_batch(64, V, T, K, seed=1)
    for row_x, row_y in zip(x.tolist(), y.tolist()):
        pairs = dict(zip(row_x[0:2 * K:2], row_x[1:2 * K:2]))
        scored = [t for t, v in enumerate(row_y) if v != -100]
        assert len(scored) == K  # one query per key
        assert all(t >= 2 * K and (t - 2 * K) % 2 == 0 for t in scored)  # even offsets of the query region
        assert sorted(row_x[t] for t in scored) == sorted(pairs)  # each key is asked once
        assert all(row_y[t] == pairs[row_x[t]] for t in scored)
        assert all(v == -100 for t, v in enumerate(row_y) if t < 2 * K)


def test_the_mask_is_minus_100_everywhere_but_the_answers_and_fillers_can_be_zero():
    x, y = mqar_batch(16, V, T, K, seed=2, random_non_queries=False)
    scored = y != -100
    assert scored.sum(1).tolist() == [K] * 16
    query_or_kv = scored.clone()
    query_or_kv[:, :2 * K] = True
    assert (x[~query_or_kv] == 0).all()  # fillers are 0 without random_non_queries
    x2, y2 = mqar_batch(16, V, T, K, seed=2)
    assert torch.equal(y, y2) and torch.equal(x[query_or_kv], x2[query_or_kv])  # same layout, random fillers
    assert (x2[~query_or_kv] != 0).any()


def test_queries_follow_the_power_law_near_the_pairs_more_often_than_far():
    seq_len, k = 256, 16
    _, y = mqar_batch(2000, 4096, seq_len, k, seed=5)
    slots = ((y != -100).nonzero()[:, 1] - 2 * k) // 2
    counts = np.bincount(slots.numpy(), minlength=(seq_len - 2 * k) // 2)
    space = counts.shape[0]
    assert counts[: space // 4].sum() > 1.5 * counts[-space // 4:].sum()
    assert counts[0] > counts[-1]
    # a single query (k = 1): its slot is drawn with probability ∝ a·g^(a-1)
    _, y1 = mqar_batch(20000, 16, 20, 1, power_a=0.5, seed=6)
    freq = np.bincount((((y1 != -100).nonzero()[:, 1] - 2) // 2).numpy(), minlength=9) / 20000
    np.testing.assert_allclose(freq, query_slot_weights(20, 1, 0.5), atol=0.015)


@pytest.mark.parametrize("args, message", [
    ((V, 30, 8), "seq_len 30 is too short for 8 key-value pairs"),
    ((16, T, 8), "vocab_size 16 is too small for 8 key-value pairs"),
    ((V, T, 0), "num_kv_pairs must be a positive integer"),
    ((V, 64.0, 8), "seq_len must be a positive integer"),
])
def test_bad_arguments_are_clear_value_errors(args, message):
    with pytest.raises(ValueError, match=message):
        check_mqar_args(*args)
    with pytest.raises(ValueError, match=message):
        mqar_batch(2, *args)
    with pytest.raises(ValueError, match="power_a must be a positive number"):
        mqar_batch(2, V, T, K, power_a=0)
    check_mqar_args(2 * (K + 1), 4 * K, K)  # the smallest legal settings


def test_accuracy_is_the_argmax_at_the_query_positions():
    model = random_model(tiny("sambay", vocab_size=V, d_model=32), seed=0)
    x, y = mqar_batch(3, V, T, K, seed=7)
    with torch.no_grad():
        logits = model(x).logits
    mask = y != -100
    expected = (logits.argmax(-1)[mask] == y[mask]).sum().item()
    assert batch_accuracy(model, x, y) == (expected, 3 * K)
    model.train()
    acc = mqar_accuracy(model, seq_len=T, num_kv_pairs=K, num_examples=5, batch_size=2, seed=1)
    assert 0.0 <= acc <= 1.0 and model.training  # the mode is restored
    assert acc == mqar_accuracy(model, seq_len=T, num_kv_pairs=K, num_examples=5, batch_size=2, seed=1)
    with pytest.raises(ValueError, match="exceeds the model's vocabulary"):
        mqar_accuracy(model, seq_len=T, num_kv_pairs=K, vocab_size=2 * V)
