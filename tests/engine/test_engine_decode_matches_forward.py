"""Prefill + step-by-step decode reproduces the full-sequence forward, token for token."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from engine_helpers import ALL_PRESETS, ATOL, RTOL, make_model
from torch.testing import assert_close

from sambay.engine import InferenceState, decode_step, prefill

TOTAL = 24  # tokens per sequence: three windows of 8


def run_engine(model, seqs: torch.Tensor, prompt_lens: list[int], chunk_size=None) -> list[torch.Tensor]:
    """Prefill seqs[b, :P_b] for all rows together, then teacher-force the rest with every unfinished row
    decoding in the same batch (so rows sit at different positions in each step).
    Returns per row the (TOTAL - P_b + 1, V) logits at positions P_b - 1 .. TOTAL - 1."""
    B = len(prompt_lens)
    state = InferenceState(model.config, B, TOTAL)
    slots = [state.acquire() for _ in range(B)]
    first = prefill(model, state, [seqs[b, :p].tolist() for b, p in enumerate(prompt_lens)], slots, chunk_size)
    out = [[first[b]] for b in range(B)]
    cur = list(prompt_lens)
    while True:
        rows = [b for b in range(B) if cur[b] < TOTAL]
        if not rows:
            break
        tokens = torch.stack([seqs[b, cur[b]] for b in rows])
        logits = decode_step(model, state, tokens, torch.tensor([slots[b] for b in rows]))
        for i, b in enumerate(rows):
            out[b].append(logits[i])
            cur[b] += 1
    return [torch.stack(o) for o in out]


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_prefill_and_decode_logits_equal_forward_at_every_position(preset):
    # Prompts shorter than (1, 5), equal to (8) and longer than (13) the window of 8; decoding to 24
    # crosses the window boundary (and wraps the ring buffers) for every row.
    model = make_model(preset)
    seqs = torch.randint(0, 256, (4, TOTAL), generator=torch.Generator().manual_seed(3))
    prompt_lens = [1, 5, 8, 13]
    got = run_engine(model, seqs, prompt_lens)
    with torch.no_grad():
        for b, p in enumerate(prompt_lens):
            expected = model(seqs[b:b + 1]).logits[0]  # each row alone: no padding anywhere
            assert_close(got[b], expected[p - 1:], atol=ATOL, rtol=RTOL, msg=lambda m: f"row {b} (prompt {p}): {m}")


def test_decode_of_a_one_token_prompt_covers_every_position():
    """With P = 1 every position's logits come from the engine (prefill gives position 0)."""
    model = make_model("sambay")
    seqs = torch.randint(0, 256, (1, TOTAL), generator=torch.Generator().manual_seed(4))
    got = run_engine(model, seqs, [1])[0]
    with torch.no_grad():
        assert_close(got, model(seqs).logits[0], atol=ATOL, rtol=RTOL)


FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "phi4flash-A"


@pytest.mark.skipif(not (FIXTURE / "expected.safetensors").is_file(), reason="phi4flash-A fixture not present")
@pytest.mark.parametrize("case, reference", [("greedy", "greedy_step_logits"),
                                             ("swa_quirk", "swa_quirk_step_logits_true_swa")])
def test_engine_matches_official_reference_decode_on_phi4flash_fixture(case, reference):
    """The official model's cached decode (true sliding window) step by step, from a real checkpoint."""
    sambay = pytest.importorskip("sambay")
    if not hasattr(sambay, "from_pretrained"):
        pytest.skip("sambay.from_pretrained not available")
    from safetensors.torch import load_file

    model = sambay.from_pretrained(FIXTURE, dtype="float32").eval()
    expected = load_file(str(FIXTURE / "expected.safetensors"))
    prompts, tokens, ref = expected[f"{case}_prompt_ids"], expected[f"{case}_tokens"], expected[reference]
    state = InferenceState(model.config, 2, prompts.shape[1] + tokens.shape[1])
    steps = [prefill(model, state, prompts.tolist(), [state.acquire(), state.acquire()])]
    for t in range(tokens.shape[1] - 1):
        steps.append(decode_step(model, state, tokens[:, t], torch.tensor([0, 1])))
    assert_close(torch.stack(steps, 1), ref, atol=1e-4, rtol=1e-4)  # the fixture README's tolerance
    if case == "swa_quirk":  # and the HF cache's early-window hole is NOT reproduced
        assert (torch.stack(steps, 1) - expected["swa_quirk_step_logits_hf_cache"]).abs().max() > 1e-3
