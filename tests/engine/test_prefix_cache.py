"""Prefix caching: with it on, every greedy token equals the engine's with it off, while prompts that share
prefixes (of every length against the block size, 4, and the SWA window, 8) restore snapshots."""

from __future__ import annotations

import random

import pytest
import torch
from engine_helpers import ALL_PRESETS, make_model

from sambay import Engine, SamplingParams

BLOCK = 4


def tokens(n, seed):
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def run(engine, waves, new=6):
    """Each wave's prompts are added together, after the previous wave finished; -> id -> token ids."""
    out = {}
    for wave in waves:
        for rid, prompt in wave.items():
            engine.add_request(prompt, SamplingParams(temperature=0, max_new_tokens=new), rid)
        while engine.has_unfinished_requests():
            for o in engine.step():
                if o.finished:
                    out[o.request_id] = o.token_ids
    return out


def engines(preset, **kw):
    model = make_model(preset)
    common = dict(max_num_seqs=4, max_model_len=64, block_size=BLOCK, max_chunk=5, **kw)
    return Engine(model, enable_prefix_caching=True, **common), Engine(model, enable_prefix_caching=False, **common)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_shared_prefixes_of_every_length_give_the_same_tokens_as_no_cache(preset):
    head = tokens(30, 1)
    waves = [{"first": head + tokens(5, 2)}]
    # shared parts shorter than, equal to and longer than a block (4) and the SWA window (8)
    for n in (1, 3, 4, 5, 7, 8, 9, 12, 16, 17, 29, 30):
        waves.append({f"share{n}": head[:n] + tokens(6, 100 + n), f"share{n}b": head[:n] + tokens(3, 200 + n)})
    waves.append({"same": head + tokens(5, 2)})  # the whole prompt again: all but its last token cached
    cached, plain = engines(preset)
    assert run(cached, waves) == run(plain, waves)
    stats = cached.prefix_cache.stats
    assert stats.request_hits >= 10 and stats.hits > 0
    cached.prefix_cache.clear()
    assert cached.state.free_blocks == cached.state.num_blocks


@pytest.mark.parametrize("preset", ["sambay", "phi4-mini-flash", "transformer++", "samba-yoco"])
def test_the_next_turn_of_a_chat_restores_the_previous_answer(preset):
    cached, plain = engines(preset)
    turn1 = tokens(13, 3)
    answer = run(cached, [{"t1": turn1}], new=7)["t1"]
    turn2 = turn1 + answer + tokens(4, 4)
    before = cached.prefix_cache.stats.hits
    got = run(cached, [{"t2": turn2}])
    assert got == run(plain, [{"t2": turn2}])
    # everything the first turn's state held: its prompt and all of its answer but the last token
    assert cached.prefix_cache.stats.hits - before == len(turn1) + len(answer) - 1


def test_a_shared_header_is_snapshotted_at_its_branch_point():
    """The second request with a 22-token header finds the first's K/V blocks past its snapshots and leaves
    a snapshot at the last shared block boundary (20); the third restores it."""
    cached, plain = engines("sambay")
    header = tokens(22, 5)
    waves = [{"a": header + tokens(9, 6)}, {"b": header + tokens(9, 7)}, {"c": header + tokens(9, 8)}]
    hits = []
    for wave in waves:
        before = cached.prefix_cache.stats.hits
        run(cached, [wave])
        hits.append(cached.prefix_cache.stats.hits - before)
    assert hits == [0, 0, 20]
    assert run(cached, [{"d": header + tokens(2, 9)}]) == run(plain, [{"d": header + tokens(2, 9)}])


@pytest.mark.parametrize("preset", ["sambay", "phi4-mini"])
def test_eviction_under_page_and_snapshot_pressure_keeps_every_token_exact(preset):
    rng = random.Random(0)
    heads = [tokens(rng.randint(5, 20), 50 + i) for i in range(4)]
    waves = [{f"r{w}.{i}": rng.choice(heads) + tokens(rng.randint(1, 8), 1000 * w + i) for i in range(3)}
             for w in range(8)]
    cached, plain = engines(preset, prefix_cache_snapshots=3, num_blocks=40)
    assert run(cached, waves) == run(plain, waves)
    assert cached.prefix_cache.stats.evictions > 0
    cached.prefix_cache.clear()
    assert cached.state.free_blocks == cached.state.num_blocks


def test_aborted_requests_leave_no_snapshot_and_no_pages():
    cached, _ = engines("sambay")
    cached.add_request(tokens(20, 1), SamplingParams(temperature=0, max_new_tokens=30), "gone")
    for _ in range(3):
        cached.step()
    snapshots = len(cached.prefix_cache.entries)
    cached.abort("gone")
    cached.step()
    assert not cached.has_unfinished_requests()
    assert len(cached.prefix_cache.entries) == snapshots  # the abort added none
    cached.prefix_cache.clear()
    assert cached.state.free_blocks == cached.state.num_blocks and cached.state.free_slots == cached.state.max_batch


def test_prompt_logprobs_requests_compute_every_prompt_position():
    cached, plain = engines("sambay")
    prompt = tokens(12, 3)
    run(cached, [{"warm": prompt + [1, 2]}])
    params = SamplingParams(temperature=0, max_new_tokens=2, prompt_logprobs=2)
    outs = []
    for engine in (cached, plain):
        engine.add_request(prompt + [1, 2], params, "lp")
        final = None
        while engine.has_unfinished_requests():
            final = [o for o in engine.step() if o.finished] or final
        outs.append(final[0])
    assert len(outs[0].prompt_logprobs) == len(prompt) + 2
    for a, b in zip(outs[0].prompt_logprobs[1:], outs[1].prompt_logprobs[1:]):
        assert a.token_logprob == pytest.approx(b.token_logprob, abs=1e-5)


def test_prefix_caching_needs_paged_k_v():
    with pytest.raises(ValueError, match="block_size"):
        Engine(make_model("sambay"), block_size=None, enable_prefix_caching=True)
    assert Engine(make_model("sambay"), block_size=None).prefix_cache is None
    assert Engine(make_model("samba"), block_size=None).prefix_cache is not None  # nothing grows: no pages needed


def test_the_align_policy_is_exact_and_hits_less_on_a_chat():
    """vLLM's align mode (snapshots only at a prompt's last block boundary) against sambay's policy on the
    same two-turn chat: both give the uncached tokens; sambay restores more."""
    model = make_model("sambay")
    common = dict(max_num_seqs=4, max_model_len=64, block_size=BLOCK, max_chunk=5)
    turn1 = tokens(14, 3)
    hits = {}
    for policy in ("sambay", "align"):
        engine = Engine(model, prefix_cache_policy=policy, **common)
        answer = run(engine, [{"t1": turn1}], new=7)["t1"]
        turn2 = turn1 + answer + tokens(4, 4)
        assert run(engine, [{"t2": turn2}]) == run(Engine(model, enable_prefix_caching=False, **common), [{"t2": turn2}])
        hits[policy] = engine.prefix_cache.stats.hits
    assert hits == {"sambay": 14 + 7 - 1, "align": 12}
    with pytest.raises(ValueError, match="align"):
        Engine(model, prefix_cache_policy="all", **common)


def test_requests_admitted_together_share_a_header_through_the_branch_point():
    """Four requests with one 300-token header arrive at once: none can hit, but the second sees the
    first's blocks in flight and snapshots the shared part; the next four restore 256 tokens each."""
    model = make_model("sambay")
    engine = Engine(model, max_num_seqs=4, max_model_len=340, max_chunk=2048, block_size=64)
    header = tokens(300, 1)
    run(engine, [{f"a{i}": header + tokens(20, 10 + i) for i in range(4)}], new=2)
    assert engine.prefix_cache.stats.hits == 0
    run(engine, [{f"b{i}": header + tokens(20, 20 + i) for i in range(4)}], new=2)
    assert engine.prefix_cache.stats.hits == 4 * 256


def test_the_prefix_cache_benchmark_runs_every_policy_on_both_workloads():
    from sambay.bench.prefix_cache import bench_prefix_cache, format_report
    from sambay.config import tiny

    reports = []
    for workload in ("chat", "fewshot"):
        reports += bench_prefix_cache("tiny", tiny("sambay"), workload=workload, dtype=torch.float32,
                                      device=torch.device("cpu"), conversations=2, turns=2, system_len=70,
                                      requests=6, prefix_len=130, tail_len=10, answer_len=3, max_num_seqs=2)
    table = format_report(reports)
    assert [(r.workload, r.policy) for r in reports] == [(w, p) for w in ("chat", "fewshot") for p in ("off", "align", "sambay")]
    by = {(r.workload, r.policy): r for r in reports}
    for workload in ("chat", "fewshot"):
        assert by[workload, "off"].hit_rate == 0 and by[workload, "sambay"].hit_rate > 0
        assert by[workload, "sambay"].prefilled_tokens < by[workload, "off"].prefilled_tokens
    assert "sambay" in table and "hit rate" in table


def test_restoring_an_entry_never_evicts_that_entry_to_make_room_for_its_partial_page():
    """With every page taken, restoring entry E needs one page for the copy of its partial last page; the
    eviction that frees it must pick another entry, never E itself (whose pages would be freed under it)."""
    engine = Engine(make_model("sambay"), max_num_seqs=2, max_model_len=32, block_size=4, num_blocks=8,
                    prefix_cache_snapshots=4)
    cache = engine.prefix_cache
    state = engine.state
    a, b = state.acquire(), state.acquire()
    state.ensure_capacity(a, 6)
    state.ensure_capacity(b, 6)
    first = cache.insert(a, tokens(6, 1))  # 1 full page shared + 1 copied partial page each
    cache.insert(b, tokens(6, 2))
    state.release(a)
    state.release(b)
    held = state.num_blocks - state.free_blocks
    state.take_pages(state.free_blocks)  # no page left: the restore must evict to copy the partial page
    first.last_used = -100  # the oldest entry: the first eviction candidate
    slot = state.acquire()
    assert cache.restore(first, slot)
    assert (first.digest, first.tail) in cache.entries and len(cache.entries) == 1
    assert held == 4
