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
