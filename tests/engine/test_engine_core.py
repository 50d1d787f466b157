"""`Engine`: continuous batching with chunked prefill under a token budget, abort, priorities, async front."""

from __future__ import annotations

import asyncio
import random

import pytest
import torch
from engine_helpers import ALL_PRESETS, make_model, random_add_abort_step

from sambay import Engine, SamplingParams
from sambay.engine import ByteTokenizer
from sambay.engine.scheduler import Scheduler
from sambay.engine.state import InferenceState, allocated_bytes


def _prompts(lengths, seed=11):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n,), generator=g).tolist() for n in lengths]


@torch.no_grad()
def forward_greedy(model, prompt: list[int], n: int) -> list[int]:
    """The greedy continuation by full re-forwards of the whole sequence (no state at all)."""
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def run_to_completion(engine: Engine, arrivals: dict[int, list[tuple[str, list[int], SamplingParams]]]):
    """Step the engine, adding each request at its arrival step; returns request id -> final output."""
    final, step = {}, 0
    while engine.has_unfinished_requests() or any(s >= step for s in arrivals):
        for rid, prompt, params in arrivals.get(step, []):
            engine.add_request(prompt, params, request_id=rid)
        for out in engine.step():
            assert out.request_id not in final, "an output after the request finished"
            if out.finished:
                final[out.request_id] = out
        step += 1
    return final


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_engine_greedy_equals_full_forward_greedy_under_random_arrivals_chunks_and_budgets(preset):
    model = make_model(preset)
    rng = random.Random(preset)
    prompts = _prompts([1, 5, 8, 13, 19, 3], seed=rng.randrange(1000))
    news = [rng.randint(1, 7) for _ in prompts]
    expected = {f"r{i}": forward_greedy(model, p, n) for i, (p, n) in enumerate(zip(prompts, news))}
    for block_size in (None, 4):  # contiguous caches, then pages of 4 tokens behind a block table
        engine = Engine(model, max_num_seqs=rng.randint(1, 4), max_num_batched_tokens=rng.randint(3, 12),
                        max_chunk=rng.choice([None, 1, 2, 5]), max_model_len=40, block_size=block_size)
        arrivals: dict[int, list] = {}
        for i, (p, n) in enumerate(zip(prompts, news)):
            arrivals.setdefault(rng.randint(0, 8), []).append((f"r{i}", p, SamplingParams(temperature=0, max_new_tokens=n)))
        final = run_to_completion(engine, arrivals)
        for rid, want in expected.items():
            assert final[rid].token_ids == want, (block_size, rid)
            assert final[rid].finish_reason == "length"
        assert engine.state.free_slots == engine.state.max_batch


def test_every_step_stays_within_the_token_budget_with_decode_rows_first():
    config = make_model("sambay").config
    state = InferenceState(config, 4, 64)
    scheduler = Scheduler(state, max_num_seqs=4, max_num_batched_tokens=6, max_chunk=4)
    from sambay.engine.request import Request

    reqs = [Request(f"r{i}", list(range(1, n + 1)), SamplingParams(), 5, frozenset(), arrival=i)
            for i, n in enumerate([9, 2, 7])]
    for r in reqs:
        scheduler.add(r)
    first = scheduler.schedule()
    assert [(c.request.request_id, c.start, c.end) for c in first.prefill] == [("r0", 0, 4), ("r1", 0, 2)]
    for c in first.prefill:
        c.request.num_computed = c.end
    second = scheduler.schedule()  # r1 decodes first, then r0 continues, then r2 starts with what is left
    assert [r.request_id for r in second.decode] == ["r1"]
    assert [(c.request.request_id, c.start, c.end) for c in second.prefill] == [("r0", 4, 8), ("r2", 0, 1)]
    assert second.num_tokens == 6


def test_higher_priority_is_admitted_first_then_first_come_first_served():
    model = make_model("sambay")
    engine = Engine(model, max_num_seqs=1, max_num_batched_tokens=64)
    greedy = SamplingParams(temperature=0, max_new_tokens=2)
    for rid, prio in [("low", 0), ("low2", 0), ("high", 5)]:
        engine.add_request([1, 2, 3], greedy, request_id=rid, priority=prio)
    order = []
    while engine.has_unfinished_requests():
        order += [o.request_id for o in engine.step() if o.finished]
    assert order == ["high", "low", "low2"]


def test_abort_frees_the_slot_at_the_next_step_and_the_slot_is_reused():
    model = make_model("sambay")
    engine = Engine(model, max_num_seqs=1)
    long = engine.add_request([5, 6, 7], SamplingParams(temperature=0, max_new_tokens=50))
    engine.step()
    waiting = engine.add_request([8, 9], SamplingParams(temperature=0, max_new_tokens=3))
    engine.step()
    assert engine.state.free_slots == 0
    engine.abort(long)
    outs = engine.step()
    aborted = [o for o in outs if o.request_id == long]
    assert aborted and aborted[0].finished and aborted[0].finish_reason == "abort"
    final = run_to_completion(engine, {})
    assert final[waiting].token_ids == forward_greedy(model, [8, 9], 3)
    assert engine.state.free_slots == 1 and not engine.has_unfinished_requests()


@pytest.mark.parametrize("preset", ["sambay", "transformer++", "samba"])
def test_streams_never_see_another_requests_tokens_under_random_add_abort_step(preset):
    """Random interleavings of add / abort / step: every output belongs to its request, deltas concatenate to
    the final tokens, aborted requests end with "abort", and every other request gets its solo greedy."""
    model = make_model(preset)
    rng = random.Random(7)
    engine = Engine(model, max_num_seqs=3, max_num_batched_tokens=rng.randint(4, 9), max_chunk=3, max_model_len=40)
    prompts = {f"q{i}": p for i, p in enumerate(_prompts([rng.randint(1, 12) for _ in range(10)], seed=3))}
    news = {rid: rng.randint(1, 6) for rid in prompts}
    final = random_add_abort_step(engine, prompts, news, rng, p_add=0.4, p_abort=0.1)
    for rid, out in final.items():
        if out.finish_reason == "length":
            assert out.token_ids == forward_greedy(model, prompts[rid], news[rid])
    assert engine.state.free_slots == engine.state.max_batch


def test_requests_that_can_never_fit_are_rejected_at_admission():
    engine = Engine(make_model("sambay"), max_model_len=16)
    with pytest.raises(ValueError, match="the prompt has 16 tokens; max_model_len is 16"):
        engine.add_request(list(range(16)))
    rid = engine.add_request(list(range(10)), SamplingParams(temperature=0, max_new_tokens=100))
    assert len(run_to_completion(engine, {})[rid].token_ids) == 6  # capped at max_model_len


@pytest.mark.parametrize("prompt, error, match", [
    ([], ValueError, "empty"), ([1, 999], ValueError, "vocabulary"), ("text", ValueError, "tokenizer"),
    (b"hi", TypeError, "string or a sequence"), ([1.5, 2], TypeError, "integers"), ([True], TypeError, "integers"),
])
def test_bad_prompts_are_rejected_with_clear_errors(prompt, error, match):
    with pytest.raises(error, match=match):
        Engine(make_model("sambay")).add_request(prompt)


def test_a_request_id_in_use_is_refused():
    engine = Engine(make_model("sambay"))
    engine.add_request([1, 2], request_id="a")
    with pytest.raises(ValueError, match="already in use"):
        engine.add_request([3], request_id="a")


def test_the_pool_is_sized_from_the_memory_budget_once():
    model = make_model("sambay")
    per_seq = allocated_bytes(model.config, 1, 64, torch.float32)
    engine = Engine(model, max_model_len=64, memory_budget=3 * per_seq + 1, block_size=None)  # contiguous caches
    assert engine.max_num_seqs == 3 and engine.state.max_batch == 3 and not engine.state.paged
    state = engine.state
    run_to_completion(engine, {0: [(str(i), [1, 2, 3], SamplingParams(max_new_tokens=4)) for i in range(7)]})
    assert engine.state is state  # never rebuilt
    with pytest.raises(ValueError, match="lower max_model_len or raise the budget"):
        Engine(model, max_model_len=64, memory_budget=per_seq - 1, block_size=None)


def test_a_paged_pool_gives_the_budget_beyond_the_slots_constant_state_to_pages():
    from sambay.model.state import state_bytes

    model = make_model("sambay")
    constant, per_token = state_bytes(model.config, 64, torch.float32)
    budget = 4 * constant + 10 * 16 * per_token + 7
    engine = Engine(model, max_model_len=64, max_num_seqs=4, memory_budget=budget, block_size=16,
                    enable_prefix_caching=False)
    assert engine.state.paged and engine.state.num_blocks == 10 and engine.state.block_size == 16
    with pytest.raises(ValueError, match="lower max_model_len or max_num_seqs, or raise the budget"):
        Engine(model, max_model_len=64, max_num_seqs=4, memory_budget=4 * constant + 3 * 16 * per_token,
               block_size=16, enable_prefix_caching=False)
    # with the prefix cache, its snapshots take a tenth of the budget and the pool the rest
    big = 40 * constant + 100 * 16 * per_token
    cached = Engine(model, max_model_len=64, max_num_seqs=4, memory_budget=big, block_size=16)
    snapshots = cached.prefix_cache.snapshots
    assert len(snapshots.free) * snapshots.row_bytes <= big // 10 and snapshots.row_bytes == constant
    assert cached.state.nbytes() + len(snapshots.free) * constant <= big


def test_async_generate_streams_each_request_and_aborts_when_left_early():
    model = make_model("sambay")
    engine = Engine(model, ByteTokenizer())

    async def main():
        async def collect(prompt, n):
            return [o async for o in engine.generate(prompt, SamplingParams(temperature=0, max_new_tokens=n))]

        full, other = await asyncio.gather(collect("abc", 5), collect([7, 8, 9, 10], 3))
        async for _ in engine.generate("left early", SamplingParams(temperature=0, max_new_tokens=50)):
            break
        await asyncio.sleep(0)
        while engine.has_unfinished_requests():  # the abort is applied at the next step
            await asyncio.sleep(0.01)
        return full, other

    full, other = asyncio.run(main())
    assert [len(o.token_ids) for o in full] == [1, 2, 3, 4, 5] and full[-1].finished
    assert full[-1].token_ids == forward_greedy(model, list(b"abc"), 5)
    assert other[-1].token_ids == forward_greedy(model, [7, 8, 9, 10], 3)
    assert engine.state.free_slots == engine.state.max_batch


def test_n_completions_share_one_prefill_and_each_equals_a_fresh_request():
    """Forked after the prompt: completion i of a seeded request samples exactly as a lone request with seed
    + i, though the prompt is prefilled once."""
    model = make_model("sambay")
    engine = Engine(model, max_num_seqs=4, max_chunk=4)
    prefilled = []
    run_chunk = engine.runner._prefill
    engine.runner._prefill = lambda group: (prefilled.append(sum(c.end - c.start for c in group)), run_chunk(group))[1]
    prompt = _prompts([11])[0]
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=21, max_new_tokens=6, n=3)
    engine.add_request(prompt, params, request_id="x")
    final = {}
    while engine.has_unfinished_requests():
        final.update({o.index: o for o in engine.step() if o.finished and o.request_id == "x"})
    assert sum(prefilled) == len(prompt) and sorted(final) == [0, 1, 2]
    for i, out in final.items():
        lone = Engine(model, max_chunk=4)
        lone.add_request(prompt, SamplingParams(temperature=1.0, top_p=0.9, seed=21 + i, max_new_tokens=6), "y")
        assert out.token_ids == run_to_completion(lone, {})["y"].token_ids
    assert len({tuple(o.token_ids) for o in final.values()}) > 1
    assert engine.state.free_slots == engine.state.max_batch


def test_aborting_a_request_aborts_all_its_completions():
    engine = Engine(make_model("sambay"), max_num_seqs=3)
    engine.add_request([1, 2, 3], SamplingParams(temperature=0, max_new_tokens=40, n=3), request_id="g")
    engine.step()
    engine.abort("g")
    outs = engine.step()
    assert sorted(o.index for o in outs if o.finish_reason == "abort") == [0, 1, 2]
    assert engine.state.free_slots == 3 and not engine.has_unfinished_requests()
    with pytest.raises(ValueError, match="n = 4 completions need 4 state slots"):
        engine.add_request([1], SamplingParams(n=4))


@pytest.mark.parametrize("preset", ["sambay", "transformer++", "samba-yoco"])
def test_prompt_and_sampled_logprobs_equal_the_full_forwards_log_softmax(preset):
    """Prompt logprobs (chunked, beside requests that skip the cross-decoder) and sampled-token logprobs are
    the log-softmax of the full forward's logits, with the top-N best first."""
    model = make_model(preset)
    prompt = _prompts([13])[0]
    engine = Engine(model, max_chunk=3, max_num_batched_tokens=8)
    engine.add_request(_prompts([9], seed=2)[0], SamplingParams(temperature=0, max_new_tokens=3), request_id="other")
    engine.add_request(prompt, SamplingParams(temperature=0, max_new_tokens=4, logprobs=2, prompt_logprobs=3),
                       request_id="x")
    out = run_to_completion(engine, {})["x"]
    with torch.no_grad():
        full = torch.log_softmax(model(torch.tensor([prompt + out.token_ids])).logits[0].float(), -1)
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(prompt)
    for j in range(1, len(prompt)):
        got = out.prompt_logprobs[j]
        assert got.token_logprob == pytest.approx(full[j - 1, prompt[j]].item(), abs=1e-4)
        assert [t for t, _ in got.top] == full[j - 1].topk(3).indices.tolist()
    for i, lp in enumerate(out.logprobs):
        pos = len(prompt) - 1 + i
        assert lp.token_logprob == pytest.approx(full[pos, out.token_ids[i]].item(), abs=1e-4)
        assert [t for t, _ in lp.top] == full[pos].topk(2).indices.tolist()


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_preemption_when_pages_run_out_recomputes_and_gives_the_same_tokens(preset):
    """Pages of 4 tokens, barely more than one max-length request: requests preempt each other and recompute
    their prompt and output, and every greedy (and seeded, penalised) completion equals its uncontended run."""
    model = make_model(preset)
    prompts = _prompts([3, 9, 14, 6, 11], seed=5)
    params = [SamplingParams(temperature=0, max_new_tokens=8),
              SamplingParams(temperature=0.9, seed=4, max_new_tokens=8, presence_penalty=0.5, frequency_penalty=0.3),
              SamplingParams(temperature=0, max_new_tokens=6, repetition_penalty=1.3),
              SamplingParams(temperature=1.0, top_k=20, seed=9, max_new_tokens=7),
              SamplingParams(temperature=0, max_new_tokens=5)]
    arrivals = {0: [(f"p{i}", p, sp) for i, (p, sp) in enumerate(zip(prompts, params))]}
    roomy = run_to_completion(Engine(model, max_num_seqs=5, max_model_len=28, block_size=4), arrivals)
    tight = Engine(model, max_num_seqs=5, max_model_len=28, block_size=4, num_blocks=9, max_chunk=5)
    contended = run_to_completion(tight, arrivals)
    if tight.state.paged:
        assert tight.num_preemptions > 0
    for rid, out in roomy.items():
        assert contended[rid].token_ids == out.token_ids, rid
    tight.prefix_cache.clear()  # the cache's snapshots hold pages until evicted: none is leaked
    assert tight.state.free_blocks == tight.state.num_blocks and tight.state.free_slots == tight.state.max_batch


def test_n_completions_under_page_pressure_match_the_roomy_engine():
    """Forks waiting for their parent go with it when it is preempted; forked completions are preempted and
    recomputed on their own: the tokens stay those of an uncontended engine."""
    model = make_model("transformer++")
    prompts = _prompts([7, 12], seed=9)
    arrivals = {0: [("n3", prompts[0], SamplingParams(temperature=1.0, seed=2, max_new_tokens=9, n=3)),
                    ("g", prompts[1], SamplingParams(temperature=0, max_new_tokens=9))]}

    def run(engine):
        final = {}
        step = 0
        while engine.has_unfinished_requests() or step == 0:
            for rid, prompt, params in arrivals.get(step, []):
                engine.add_request(prompt, params, request_id=rid)
            final.update({(o.request_id, o.index): o.token_ids for o in engine.step() if o.finished})
            step += 1
        return final

    roomy = run(Engine(model, max_num_seqs=4, max_model_len=24, block_size=4))
    tight = Engine(model, max_num_seqs=4, max_model_len=24, block_size=4, num_blocks=8, max_chunk=4)
    assert run(tight) == roomy and tight.num_preemptions > 0
    tight.prefix_cache.clear()
    assert tight.state.free_blocks == tight.state.num_blocks


def test_waiting_completions_of_one_request_queue_in_index_order():
    """A preempted forked completion waits with its parent's arrival: the queue orders them by index."""
    from sambay.engine.request import Request

    state = InferenceState(make_model("sambay").config, 4, 16)
    scheduler = Scheduler(state, max_num_seqs=4, max_num_batched_tokens=64)
    parent = Request("r", [1, 2], SamplingParams(), 4, frozenset(), arrival=3)
    child = Request("r", [1, 2], SamplingParams(), 4, frozenset(), arrival=3, index=1)
    scheduler.add(child)
    scheduler.add(parent)
    out = scheduler.schedule()
    assert [r.index for r in out.admitted] == [0, 1]


def test_an_outputs_token_ids_are_a_snapshot_that_later_steps_do_not_change():
    """Outputs share the request's growing list instead of copying it each step (O(1) per output)."""
    from sambay.engine.request import Prefix

    engine = Engine(make_model("sambay"), max_num_seqs=1)
    engine.add_request([1, 2, 3], SamplingParams(temperature=0, max_new_tokens=4, ignore_eos=True), "r")
    seen = []
    while engine.has_unfinished_requests():
        seen += [(o, list(o.token_ids)) for o in engine.step()]
    assert [len(o.token_ids) for o, _ in seen] == [1, 2, 3, 4]
    for out, copy in seen:
        assert isinstance(out.token_ids, Prefix) and out.token_ids == copy and list(out.token_ids) == copy
        assert [9] + out.token_ids == [9, *copy] and out.token_ids + [9] == [*copy, 9]
        assert out.token_ids[-1] == copy[-1] and out.token_ids[:2] == copy[:2]
