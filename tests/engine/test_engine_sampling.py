"""Sampling: the filters, the penalty rule, seeds, and the distribution actually sampled."""

from __future__ import annotations

import pytest
import torch

from sambay.engine import Sampler, SamplingParams
from sambay.engine.sampling import apply_repetition_penalty, sampling_probs, split_logprobs


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


@pytest.mark.parametrize("settings", [dict(temperature=0.7), dict(temperature=1.3, top_k=5),
                                      dict(temperature=1.0, top_p=0.8), dict(temperature=0.9, min_p=0.1),
                                      dict(temperature=1.0, top_k=6, top_p=0.9, min_p=0.05)])
def test_sampled_counts_pass_a_chi_square_test_against_the_filtered_distribution(settings):
    from scipy.stats import chisquare

    logits = torch.randn(12, generator=torch.Generator().manual_seed(2)) * 1.5
    n = 6000
    expected = _reference_distribution(logits, **settings)
    draws = _sample_many(SamplingParams(seed=1, **settings), logits, n)
    counts = torch.bincount(draws, minlength=12)
    support = expected > 0
    assert counts[~support].sum() == 0, "a filtered-out token was sampled"
    expected = expected[support].double()
    result = chisquare(counts[support].double().numpy(), (expected / expected.sum() * n).numpy())
    assert result.pvalue > 1e-3, (settings, result)


def _reference_distribution(logits, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0) -> torch.Tensor:
    """The filters written out token by token in float64: softmax(logits / T); drop tokens below min_p x the
    top probability and beyond the top_k most likely; then keep the most likely tokens until the kept mass
    (of what survived) reaches top_p; renormalise."""
    p = torch.softmax(logits.double() / temperature, -1).tolist()
    ranked = sorted(range(len(p)), key=lambda i: -p[i])
    alive = [i for r, i in enumerate(ranked) if p[i] >= min_p * p[ranked[0]] and (not top_k or r < top_k)]
    total = sum(p[i] for i in alive)
    kept, mass = [], 0.0
    for i in alive:
        if mass >= top_p:
            break
        kept.append(i)
        mass += p[i] / total
    out = torch.zeros(len(p), dtype=torch.float64)
    out[kept] = torch.tensor([p[i] for i in kept], dtype=torch.float64)
    return out / out.sum()


def test_presence_and_frequency_penalties_follow_the_openai_rule():
    sampler = Sampler(1, 4)
    sampler.admit(0, SamplingParams(temperature=0, presence_penalty=0.5, frequency_penalty=0.25), [3])
    sampler.counts[0] = torch.tensor([0, 1, 3, 0], dtype=torch.int32)  # generated before (the prompt does not count)
    logits = torch.zeros(1, 4)
    out = sampler._processed(logits.clone(), torch.tensor([0]), [0], [sampler.params[0]], [4])
    torch.testing.assert_close(out, torch.tensor([[0.0, -0.75, -1.25, 0.0]]))


def test_logit_bias_and_min_tokens_edit_only_their_rows():
    sampler = Sampler(2, 6)
    sampler.admit(0, SamplingParams(temperature=0, logit_bias={4: 100.0}), [0])
    sampler.admit(1, SamplingParams(temperature=0, min_tokens=2), [0], stop_ids=[2])
    logits = torch.zeros(2, 6)
    logits[:, 2] = 5.0
    slots = torch.tensor([0, 1])
    assert sampler.sample(logits, slots, [0, 1], generated=[0, 1]).tolist() == [4, 0]  # row 1: the stop id is masked
    assert sampler.sample(logits, slots, [0, 1], generated=[0, 2]).tolist() == [4, 2]  # min_tokens reached


def test_logprobs_are_the_raw_log_softmax_with_the_top_n_best_first():
    sampler = Sampler(2, 10)
    sampler.admit(0, SamplingParams(temperature=0, logprobs=3, repetition_penalty=5.0), [1])
    sampler.admit(1, SamplingParams(temperature=0), [1])
    logits = torch.randn(2, 10)
    tokens, lp = sampler.sample(logits, torch.tensor([0, 1]), [0, 1], return_logprobs=True)
    full = torch.log_softmax(logits, -1)
    row = split_logprobs(lp.tolist()[0], 3)
    assert row.token_logprob == pytest.approx(full[0, tokens[0]].item(), abs=1e-6)
    want = full[0].topk(3)
    assert [t for t, _ in row.top] == want.indices.tolist()
    assert [v for _, v in row.top] == pytest.approx(want.values.tolist(), abs=1e-6)


@pytest.mark.parametrize("bad", [dict(presence_penalty=2.5), dict(frequency_penalty=float("nan")),
                                 dict(logit_bias={1: 101}), dict(min_tokens=-1), dict(logprobs=21),
                                 dict(seed=2**70), dict(seed=-1), dict(max_new_tokens=True), dict(top_k=2.5)])
def test_new_sampling_params_reject_bad_values(bad):
    with pytest.raises(ValueError):
        SamplingParams(**bad)


def test_a_seeded_unfiltered_row_draws_the_same_whether_or_not_another_row_sorts():
    """Rows share one sort when any of them filters (top-k / top-p / min-p); the noise must stay attached to
    token ids, or a seeded request's samples would change with its batch mates."""
    logits = torch.randn(2, 30)
    draws = []
    for other in (SamplingParams(temperature=0), SamplingParams(temperature=1.0, top_k=3)):
        sampler = Sampler(2, 30)
        sampler.admit(0, SamplingParams(temperature=1.0, seed=77), [1])
        sampler.admit(1, other, [1])
        draws.append([sampler.sample(logits, torch.tensor([0, 1]), [0, 1])[0].item() for _ in range(20)])
    assert draws[0] == draws[1]


@pytest.mark.parametrize("settings", [dict(top_k=5), dict(top_k=7, top_p=0.8, min_p=0.01), dict(top_k=1),
                                      dict(top_k=40, min_p=0.1), dict(top_k=64, top_p=0.5)])
@pytest.mark.parametrize("spread", [0.3, 1.0, 4.0])
def test_top_k_selection_keeps_exactly_what_the_sorted_reference_keeps(settings, spread):
    from sambay.engine.nucleus import sorted_filter, top_k_filter

    B, V = 16, 64
    scaled = torch.randn(B, V, generator=torch.Generator().manual_seed(3)) * spread
    top_k = torch.full((B,), settings["top_k"])
    top_p = torch.full((B,), settings.get("top_p", 1.0))
    min_p = torch.full((B,), settings.get("min_p", 0.0))
    weights, ids = top_k_filter(scaled, top_k, top_p, min_p, settings["top_k"])
    ref_probs, order = sorted_filter(scaled, top_k, top_p, min_p)
    for b in range(B):
        ref = torch.zeros(V, dtype=torch.float64).index_put_((order[b],), ref_probs[b].double())
        got = torch.zeros(V, dtype=torch.float64).index_put_((ids[b],), weights[b].double())
        torch.testing.assert_close(got / got.sum(), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("settings", [dict(top_p=0.9), dict(top_p=0.5, min_p=0.02), dict(min_p=0.1), dict(top_p=0.99)])
@pytest.mark.parametrize("spread", [0.3, 1.0, 4.0])
def test_an_accepted_nucleus_draw_is_always_a_token_the_reference_keeps(settings, spread):
    from sambay.engine.nucleus import rejection_pick, sorted_filter

    B, V = 256, 64
    scaled = torch.randn(B, V, generator=torch.Generator().manual_seed(5)) * spread
    top_p = torch.full((B,), settings.get("top_p", 1.0))
    min_p = torch.full((B,), settings.get("min_p", 0.0))
    tokens, accepted = rejection_pick(scaled, torch.empty(B, V).exponential_(), top_p, min_p)
    ref_probs, order = sorted_filter(scaled, torch.full((B,), V), top_p, min_p)
    kept = torch.zeros(B, V, dtype=torch.bool).scatter_(1, order, ref_probs > 0)
    in_nucleus = kept.gather(1, tokens[:, None])[:, 0]
    assert torch.equal(accepted, in_nucleus)  # accepted exactly when the draw is in the kept set
    assert accepted.float().mean() > 0.4


@pytest.mark.parametrize("settings", [dict(temperature=1.0, top_p=0.6), dict(temperature=2.0, min_p=0.3, top_p=0.8)])
def test_nucleus_draws_with_many_redraws_still_follow_the_filtered_distribution(settings):
    """A flat distribution and a small top_p reject about half the first draws: the mixture of accepted
    draws and exact redraws must still pass the chi-square test."""
    from scipy.stats import chisquare

    logits = torch.randn(12, generator=torch.Generator().manual_seed(2)) * 0.5
    n = 6000
    draws = _sample_many(SamplingParams(seed=1, **settings), logits, n)
    expected = _reference_distribution(logits, **settings)
    counts = torch.bincount(draws, minlength=12)
    support = expected > 0
    assert counts[~support].sum() == 0
    result = chisquare(counts[support].double().numpy(), (expected[support] / expected[support].sum() * n).numpy())
    assert result.pvalue > 1e-3, (settings, result)
