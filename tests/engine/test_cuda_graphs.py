import pytest
import torch
from helpers import random_model

from sambay.config import tiny
from sambay.engine.decode import decode_step
from sambay.engine.prefill import prefill
from sambay.engine.state import InferenceState


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["sambay", "phi4-mini-flash", "transformer++", "samba"])
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
