import pytest
import torch
from helpers import random_model

from sambay.config import tiny
from sambay.engine.decode import decode_step
from sambay.engine.prefill import prefill
from sambay.engine.state import InferenceState


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["sambay", "phi4-mini-flash", "transformer++", "samba", "sambay-mamba2"])
def test_cuda_graph_decode_gives_the_eager_greedy_tokens(preset):
    from sambay.engine.cuda_graphs import GraphedDecoder

    device = torch.device("cuda")
    model = random_model(tiny(preset)).to(device)
    prompts = [torch.randint(0, 256, (n,)).tolist() for n in (5, 11, 3)]

    def run(graphed: bool):
        state = InferenceState(model.config, 5, 64, torch.float32, device)
        slots = [state.acquire() for _ in prompts]
        step = GraphedDecoder(model, state, buckets=(4,)).step if graphed else (
            lambda t, s: decode_step(model, state, t, s))
        slot_t = torch.tensor(slots, device=device)
        logits = prefill(model, state, prompts, slots)
        tokens, all_logits = [], []
        for _ in range(30):  # crosses the window (8) boundary
            nxt = logits.argmax(-1)
            tokens.append(nxt)
            logits = step(nxt, slot_t).clone()
            all_logits.append(logits)
        return torch.stack(tokens), torch.stack(all_logits)

    eager_tokens, eager_logits = run(False)
    graph_tokens, graph_logits = run(True)
    assert torch.equal(graph_tokens, eager_tokens)
    torch.testing.assert_close(graph_logits, eager_logits, rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_generator_with_cuda_graphs_gives_the_eager_tokens_for_mixed_requests():
    from sambay.engine import Generator, SamplingParams

    model = random_model(tiny("phi4-mini-flash")).to("cuda")
    prompts = [torch.randint(0, 256, (n,)).tolist() for n in (4, 13, 9)]
    params = [SamplingParams(temperature=0, max_new_tokens=20), SamplingParams(temperature=0, max_new_tokens=7),
              SamplingParams(temperature=0.8, top_p=0.9, seed=3, max_new_tokens=15)]
    eager = Generator(model, max_batch=2, cuda_graphs=False).generate(prompts, params)
    graphed = Generator(model, max_batch=2, cuda_graphs=True).generate(prompts, params)
    assert [r.token_ids for r in graphed] == [r.token_ids for r in eager]


@pytest.mark.gpu
def test_compiled_cuda_graph_decode_matches_eager_in_bf16_at_batch_one_and_three():
    """The inductor-compiled step gives the eager step's logits within bf16 noise, for the statically
    compiled batch-1 bucket and the dynamic-batch graph of the larger buckets. Teacher-forced: both decode
    the same tokens, so a near-tie in a greedy choice cannot make them diverge."""
    from engine_helpers import make_model

    from sambay.engine.cuda_graphs import GraphedDecoder

    device = torch.device("cuda")
    model = make_model("phi4-mini-flash", dtype=torch.bfloat16).to(device)
    gen = torch.Generator().manual_seed(1)
    for prompts in ([torch.randint(0, 256, (n,), generator=gen).tolist() for n in (5, 11, 3)],
                    [torch.randint(0, 256, (7,), generator=gen).tolist()]):
        feed = torch.randint(0, 256, (12, len(prompts)), generator=gen).to(device)
        logits = {}
        for compiled in (False, True):
            state = InferenceState(model.config, 5, 64, torch.bfloat16, device)
            slots = [state.acquire() for _ in prompts]
            step = GraphedDecoder(model, state, buckets=(1, 4), compile=compiled).step
            prefill(model, state, prompts, slots)
            slot_t = torch.tensor(slots, device=device)
            logits[compiled] = torch.stack([step(tok, slot_t).float().clone() for tok in feed])
        err = ((logits[True] - logits[False]).norm() / logits[False].norm()).item()
        assert err < 1e-2, (len(prompts), err)  # the bf16 standard of the kernel tests (tests/ops)


@pytest.mark.gpu
@pytest.mark.parametrize("compile", [False, True])
def test_engine_with_cuda_graphs_gives_the_eager_engines_tokens_under_chunking_and_arrivals(compile):
    """The engine's graphs (and compiled step) are captured once at construction; requests arriving at
    different steps with chunked prompts then decode as the eager engine does (fp32: a graph pads the batch
    to its bucket, which must not change a greedy choice through rounding)."""
    from engine_helpers import make_model

    from sambay import Engine, SamplingParams

    model = make_model("phi4-mini-flash").to("cuda")
    gen = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, 256, (n,), generator=gen).tolist() for n in (3, 17, 9, 30, 5)]
    greedy = SamplingParams(temperature=0, max_new_tokens=12)

    def run(engine):
        final, step = {}, 0
        while engine.has_unfinished_requests() or step < len(prompts):
            if step < len(prompts):
                engine.add_request(prompts[step], greedy, request_id=str(step))
            final.update({o.request_id: o.token_ids for o in engine.step() if o.finished})
            step += 1
        return final

    eager = run(Engine(model, max_num_seqs=3, max_num_batched_tokens=8, max_chunk=5, cuda_graphs=False))
    graphed_engine = Engine(model, max_num_seqs=3, max_num_batched_tokens=8, max_chunk=5, compile=compile)
    assert len(graphed_engine.runner.decoder._graphs) == len(graphed_engine.runner.decoder.buckets)  # all captured
    assert run(graphed_engine) == eager


@pytest.mark.gpu
def test_graphed_paged_engine_keeps_streams_apart_under_random_add_abort_step():
    """Random add / abort / step orders on the GPU with CUDA graphs and pages of 16 tokens short enough to force
    preemptions: every output belongs to its request, deltas add up, aborted requests end with "abort", and every
    other greedy request decodes what it decodes alone (fp32, so that batch composition cannot flip a greedy
    choice through rounding)."""
    import random

    from engine_helpers import make_model, random_add_abort_step

    from sambay import Engine, SamplingParams

    model = make_model("phi4-mini-flash").to("cuda")
    rng = random.Random(3)
    gen = torch.Generator().manual_seed(6)
    prompts = {f"q{i}": torch.randint(0, 256, (rng.randint(1, 40),), generator=gen).tolist() for i in range(12)}
    news = {rid: rng.randint(1, 12) for rid in prompts}

    def alone(rid):
        solo = Engine(model, max_num_seqs=1, max_model_len=64, block_size=16)
        solo.add_request(prompts[rid], SamplingParams(temperature=0, max_new_tokens=news[rid]), rid)
        while solo.has_unfinished_requests():
            for out in solo.step():
                if out.finished:
                    return out.token_ids

    engine = Engine(model, max_num_seqs=4, max_model_len=64, block_size=16, num_blocks=6, max_chunk=16,
                    max_num_batched_tokens=32)
    final = random_add_abort_step(engine, prompts, news, rng, p_add=0.35, p_abort=0.07)
    assert engine.num_preemptions > 0
    for rid, out in final.items():
        if out.finish_reason == "length":
            assert out.token_ids == alone(rid), rid
    engine.prefix_cache.clear()
    assert engine.state.free_blocks == engine.state.num_blocks
