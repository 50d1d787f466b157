"""Sampling: the filters, the penalty rule, seeds, and the distribution actually sampled."""

from __future__ import annotations

import pytest
import torch

from sambay.engine import Sampler, SamplingParams
from sambay.engine.sampling import apply_repetition_penalty, sampling_probs


def _probs(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0):
    V = logits.shape[-1]
    probs, order = sampling_probs(logits[None], torch.tensor([temperature]), torch.tensor([top_k or V]),
                                  torch.tensor([top_p]), torch.tensor([min_p]))
    out = torch.zeros(V)
    out[order[0]] = probs[0]
    return out


def test_filters_keep_the_expected_tokens():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1]))
    assert torch.equal(_probs(logits, top_k=2) > 0, torch.tensor([True, True, False, False]))
    assert torch.equal(_probs(logits, top_p=0.7) > 0, torch.tensor([True, True, False, False]))  # 0.5 < 0.7
    assert torch.equal(_probs(logits, top_p=0.5) > 0, torch.tensor([True, False, False, False]))
    assert torch.equal(_probs(logits, min_p=0.4) > 0, torch.tensor([True, True, False, False]))  # < 0.4 x 0.5
    torch.testing.assert_close(_probs(logits, top_k=2), torch.tensor([2 / 3, 1 / 3, 0, 0]))
    torch.testing.assert_close(_probs(logits), torch.tensor([0.5, 0.25, 0.15, 0.1]))
    hot = _probs(logits, temperature=2.0)
    torch.testing.assert_close(hot, torch.softmax(logits / 2, -1))


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -2.0, 1.0]])
    seen = torch.tensor([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, torch.tensor([2.0]))
    torch.testing.assert_close(out, torch.tensor([[1.0, -4.0, 1.0]]))


def _sample_many(params: SamplingParams, logits: torch.Tensor, n: int) -> torch.Tensor:
    sampler = Sampler(1, logits.shape[-1])
    sampler.admit(0, params, [0])
    slots = torch.tensor([0])
    return torch.cat([sampler.sample(logits[None], slots, [0]) for _ in range(n)])


def test_sampled_frequencies_follow_the_filtered_distribution():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1]))
    draws = _sample_many(SamplingParams(temperature=1.0, seed=0), logits, 4000)
    freq = torch.bincount(draws, minlength=4) / 4000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.25, 0.15, 0.1]), atol=0.03, rtol=0)
    draws = _sample_many(SamplingParams(temperature=1.0, top_k=2, seed=0), logits, 3000)
    freq = torch.bincount(draws, minlength=4) / 3000
    torch.testing.assert_close(freq, torch.tensor([2 / 3, 1 / 3, 0, 0]), atol=0.03, rtol=0)


def test_greedy_is_argmax_and_a_seed_makes_sampling_reproducible():
    logits = torch.randn(50)
    assert (_sample_many(SamplingParams(temperature=0), logits, 5) == logits.argmax()).all()
    a = _sample_many(SamplingParams(temperature=1.0, seed=11), logits, 20)
    b = _sample_many(SamplingParams(temperature=1.0, seed=11), logits, 20)
    c = _sample_many(SamplingParams(temperature=1.0, seed=12), logits, 20)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rows_of_one_batch_use_their_own_settings():
    sampler = Sampler(3, 50)
    logits = torch.randn(3, 50)
    sampler.admit(0, SamplingParams(temperature=0), [1])
    sampler.admit(1, SamplingParams(temperature=1.0, top_k=1, seed=3), [1])
    sampler.admit(2, SamplingParams(temperature=0, repetition_penalty=1e6), [int(logits[2].argmax())])
    out = sampler.sample(logits, torch.tensor([0, 1, 2]), [0, 1, 2])
    assert out[0] == logits[0].argmax() and out[1] == logits[1].argmax()
    assert out[2] != logits[2].argmax()  # the prompt's token is penalised away


@pytest.mark.parametrize("bad", [dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-2),
                                 dict(min_p=2.0), dict(repetition_penalty=0.0), dict(max_new_tokens=-1),
                                 dict(stop=[""])])
def test_sampling_params_reject_bad_values(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)
