"""The engine on a CUDA device (ops take their Triton paths there). Skipped on CPU-only machines."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import make_model
from torch.testing import assert_close

from sambay import Generator, SamplingParams
from sambay.engine import InferenceState, decode_step, prefill


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["sambay", "sambay-da", "samba", "transformer++", "sambay-mamba2"])
def test_prefill_and_decode_match_forward_on_cuda(preset):
    model = make_model(preset).cuda()
    seqs = torch.randint(0, 256, (3, 24), device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    lens = [1, 8, 13]
    state = InferenceState(model.config, 3, 24, device="cuda")
    slots = [state.acquire() for _ in lens]
    got = [[row] for row in prefill(model, state, [seqs[b, :p].tolist() for b, p in enumerate(lens)], slots, 4)]
    for t in range(min(lens), 24):
        rows = [b for b, p in enumerate(lens) if p <= t]
        out = decode_step(model, state, seqs[rows, t], torch.tensor(rows, device="cuda"))
        for i, b in enumerate(rows):
            got[b].append(out[i])
    with torch.no_grad():
        for b, p in enumerate(lens):
            # TF32 / kernel reduction order on the GPU: looser than the CPU tests
            assert_close(torch.stack(got[b]), model(seqs[b:b + 1]).logits[0, p - 1:], atol=2e-3, rtol=2e-3)


@pytest.mark.gpu
def test_generator_runs_on_cuda_in_bf16_with_mixed_requests():
    model = make_model("phi4-mini-flash", dtype=torch.bfloat16).cuda()
    params = [SamplingParams(temperature=0, max_new_tokens=8),
              SamplingParams(temperature=0.8, top_p=0.9, top_k=50, repetition_penalty=1.1, seed=1, max_new_tokens=5)]
    results = Generator(model).generate([[1, 2, 3], list(range(40))], params)
    assert [len(r.token_ids) for r in results] == [8, 5]
    again = Generator(model).generate([list(range(40))], params[1])[0]
    assert again.token_ids == results[1].token_ids


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["phi4-mini-flash", "transformer++"])
def test_prefix_caching_gives_the_uncached_greedy_tokens_in_bf16_with_cuda_graphs(preset):
    """Shared headers, a chat follow-up and page pressure, in bf16 with graphed decode: caching on equals off."""
    from sambay import Engine

    model = make_model(preset, dtype=torch.bfloat16).cuda()
    g = torch.Generator().manual_seed(0)
    header = torch.randint(0, 256, (45,), generator=g).tolist()
    prompts = {f"r{i}": header[:n] + torch.randint(0, 256, (7,), generator=g).tolist()
               for i, n in enumerate([45, 45, 20, 8, 45, 33])}

    def run(engine):
        out = {}
        for wave in (dict(list(prompts.items())[:2]), dict(list(prompts.items())[2:])):
            for rid, p in wave.items():
                engine.add_request(p, SamplingParams(temperature=0, max_new_tokens=6), rid)
            while engine.has_unfinished_requests():
                out.update({o.request_id: o.token_ids for o in engine.step() if o.finished})
        follow = prompts["r0"] + out["r0"] + [5, 6, 7]
        engine.add_request(follow, SamplingParams(temperature=0, max_new_tokens=6), "follow")
        while engine.has_unfinished_requests():
            out.update({o.request_id: o.token_ids for o in engine.step() if o.finished})
        return out

    kw = dict(max_num_seqs=3, max_model_len=96, block_size=8, max_chunk=16, num_blocks=40)
    cached = Engine(model, **kw)
    assert run(cached) == run(Engine(model, enable_prefix_caching=False, **kw))
    assert cached.prefix_cache.stats.hits > 0
