"""Behaviour of the reference model on tiny configs of every preset (fp32, CPU)."""

import math

import pytest
import torch
from helpers import random_model

from sambay import CausalLM, ModelConfig
from sambay.config import PRESETS, tiny
from sambay.model.context import masked_core
from sambay.ops.attention.reference import masked_attention

ALL_PRESETS = list(PRESETS)
TABLE_M = {  # the paper's table of non-embedding parameters (millions) per depth
    8: [121.7, 121.7, 125.7, 128.8, 124.1, 126.9],
    12: [410.6, 410.6, 423.8, 428.9, 417.6, 424.6],
    16: [973.1, 973.1, 1003.8, 1009.7, 988.4, 1002.3],
    20: [1900.6, 1900.6, 1960.0, 1964.0, 1928.7, 1952.9],
    24: [3284.3, 3284.3, 3385.9, 3384.6, 3330.8, 3369.2],
}
TABLE_ARCHS = ["transformer++", "transformer-ls", "samba", "samba-yoco", "swa-yoco", "sambay"]


def meta_model(config):
    with torch.device("meta"):
        return CausalLM(config, init=False)


@pytest.mark.parametrize("depth", sorted(TABLE_M))
def test_non_embedding_parameter_counts_match_the_reference_table(depth):
    for arch, expected in zip(TABLE_ARCHS, TABLE_M[depth]):
        n = meta_model(ModelConfig.from_preset(arch, depth=depth)).num_parameters(exclude_embeddings=True)
        assert round(n / 1e6, 1) == expected, arch
    if depth in (8, 16, 24):  # SambaY+DA = SambaY + the tiny λ / sub-norm vectors
        da = meta_model(ModelConfig.from_preset("sambay-da", depth=depth)).num_parameters(exclude_embeddings=True)
        assert abs(da / 1e6 - TABLE_M[depth][-1]) < 0.1


def test_phi4_mini_flash_has_exactly_3_852_562_944_parameters():
    model = meta_model(ModelConfig.from_preset("phi4-mini-flash"))
    assert model.num_parameters() == 3_852_562_944
    assert model.num_parameters(exclude_embeddings=True) == 3_340_399_104


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_changing_a_future_token_never_changes_past_logits(preset):
    model = random_model(tiny(preset))
    ids = torch.randint(0, 256, (2, 24))
    t = 11
    changed = ids.clone()
    changed[:, t + 1 :] = torch.randint(0, 256, changed[:, t + 1 :].shape)
    with torch.no_grad():
        a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=0)
    assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().max() > 1e-4  # the future does matter to the future


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_empty_sequence_or_batch_gives_empty_logits(preset):
    model = random_model(tiny(preset))
    with torch.no_grad():
        for shape in ((2, 0), (0, 5)):  # the conv's document ids once failed on T = 0
            assert model(torch.zeros(shape, dtype=torch.long)).logits.shape == (*shape, 256)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_document_masked_forward_equals_running_documents_separately(preset):
    model = random_model(tiny(preset))
    lengths = [7, 13, 4]
    docs = [torch.randint(0, 256, (1, n)) for n in lengths]
    packed = torch.cat(docs, dim=1)
    document_ids = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))[None]
    cu_seqlens = torch.tensor([0, 7, 20, 24])
    with torch.no_grad():
        separate = torch.cat([model(d).logits for d in docs], dim=1)
        masked = model(packed, document_ids=document_ids).logits
        via_cu = model(packed, cu_seqlens=cu_seqlens).logits
        unmasked = model(packed).logits
    torch.testing.assert_close(masked, separate, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(via_cu, separate, rtol=1e-5, atol=1e-5)
    assert (unmasked[:, 7:] - separate[:, 7:]).abs().max() > 1e-3  # without the mask documents do interact


def test_sliding_window_sees_exactly_window_keys_including_itself():
    window = 5
    config = tiny("transformer-ls", depth=1, layer_plan=["swa"], window=window, positional="none")
    model = random_model(config)
    ids = torch.randint(0, 256, (1, 20))
    t = 15
    with torch.no_grad():
        base = model(ids).logits[0, t]
        for s in range(t + 1):
            changed = ids.clone()
            changed[0, s] = (changed[0, s] + 1) % 256
            moved = (model(changed).logits[0, t] - base).abs().max().item()
            inside = t - s < window
            assert (moved > 1e-6) == inside, f"key at {s} for query {t}: moved {moved}"


def test_diff_attention_equals_explicit_per_head_formula():
    config = tiny("sambay-da")
    model = random_model(config)
    layer = next(i for i, k in enumerate(config.layer_plan) if k == "swa")
    attn = model.layers[layer].mixer
    B, T, H, G, hs = 2, 12, config.n_head, config.n_kv_head, config.head_dim
    q, k, v = torch.randn(B, T, H, hs), torch.randn(B, T, G, hs), torch.randn(B, T, G, hs)
    mask = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    with torch.no_grad():
        got = attn.diff(q, k, v, masked_core(mask))
        lam = (torch.exp((attn.diff.lambda_q1 * attn.diff.lambda_k1).sum())
               - torch.exp((attn.diff.lambda_q2 * attn.diff.lambda_k2).sum()) + attn.diff.lambda_init)
        group = H // G  # query heads per KV head inside each half
        outs = []
        for j in range(H // 2):
            g = j // group  # KV pair index
            p1 = torch.softmax((q[:, :, 2 * j] @ k[:, :, 2 * g].transpose(1, 2)) / math.sqrt(hs) + (~mask[0]) * -1e9, -1)
            p2 = torch.softmax((q[:, :, 2 * j + 1] @ k[:, :, 2 * g + 1].transpose(1, 2)) / math.sqrt(hs) + (~mask[0]) * -1e9, -1)
            v_hat = torch.cat([v[:, :, 2 * g], v[:, :, 2 * g + 1]], dim=-1)
            o = p1 @ v_hat - lam * (p2 @ v_hat)
            o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-5) * attn.diff.subln.weight
            outs.append(o * (1 - attn.diff.lambda_init))
        expected = torch.cat(outs, dim=-1)  # heads 2j, 2j+1 side by side = original head order
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset,memory_kind,gated_after", [
    ("sambay", "mamba_memory", ("out_proj",)),  # the memory is taken before the z gate and out_proj
    ("sambay-mamba2", "mamba2_memory", ("out_proj", "norm")),  # ... and before the gated norm
])
def test_gmu_gradients_reach_the_memory_producing_layer_through_the_memory(preset, memory_kind, gated_after):
    config = tiny(preset)
    model = CausalLM(config)
    mem_layer = config.layer_plan.index(memory_kind)
    gmu_layers = [i for i, k in enumerate(config.layer_plan) if k == "gmu"]
    captured = []
    # Cut every path into the GMUs except the memory: detach their normalised inputs.
    hooks = [model.layers[i].mixer.register_forward_pre_hook(lambda m, args: (args[0].detach(), args[1]))
             for i in gmu_layers]
    hooks += [model.layers[i].mixer.register_forward_hook(lambda m, args, out: captured.append(out))
              for i in gmu_layers]
    model(torch.randint(0, 256, (2, 16)))
    for h in hooks:
        h.remove()
    sum(o.sum() for o in captured).backward()
    mixer = model.layers[mem_layer].mixer
    for name in ("in_proj", "x_proj", "dt_proj", "conv1d"):
        if hasattr(mixer, name):
            assert getattr(mixer, name).weight.grad.abs().sum() > 0, name
    assert mixer.A_log.grad.abs().sum() > 0 and mixer.D.grad.abs().sum() > 0
    for name in gated_after:
        assert getattr(mixer, name).weight.grad is None, name


def test_loss_is_next_token_cross_entropy_with_labels_or_targets():
    model = random_model(tiny("sambay"))
    ids = torch.randint(0, 256, (2, 10))
    with torch.no_grad():
        out = model(ids, labels=ids)
        out2 = model(ids, targets=torch.nn.functional.pad(ids[:, 1:], (0, 1), value=-100))
        manual = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten())
    torch.testing.assert_close(out.loss, manual)
    torch.testing.assert_close(out2.loss, manual)
    assert out.logits.shape == (2, 10, 256)


def test_reference_attention_masks_empty_rows_to_zero():
    q, k, v = torch.randn(1, 3, 2, 4), torch.randn(1, 3, 1, 4), torch.randn(1, 3, 1, 4)
    mask = torch.tensor([[False, False, False], [True, False, False], [True, True, False]])[None, None]
    out = masked_attention(q, k, v, mask)
    assert torch.all(out[:, 0] == 0) and torch.isfinite(out).all()


def test_fused_loss_without_logits_equals_the_logits_loss_and_gradients():
    model = random_model(tiny("sambay"))
    ids = torch.randint(0, 256, (2, 12))
    full = model(ids, labels=ids)
    grads_full = torch.autograd.grad(full.loss, [model.embed.weight, model.lm_head.weight])
    fused = model(ids, labels=ids, return_logits=False)
    grads_fused = torch.autograd.grad(fused.loss, [model.embed.weight, model.lm_head.weight])
    assert fused.logits is None
    torch.testing.assert_close(fused.loss, full.loss, rtol=1e-6, atol=1e-6)
    for a, b in zip(grads_fused, grads_full):  # μP's tiny embedding makes its gradient large: compare norms
        assert (a - b).norm() / b.norm() < 1e-5


def test_ngmu_normalises_the_gated_memory_before_the_output_projection():
    config = tiny("sambay", gmu_norm=True)
    model = random_model(config)
    gmu = model.layers[config.layer_plan.index("gmu")].mixer
    x, memory = torch.randn(2, 5, config.d_model), torch.randn(2, 5, config.d_inner)
    with torch.no_grad():
        torch.nn.init.normal_(gmu.norm.weight)
        got = gmu(x, type("Ctx", (), {"memory": memory})())
        gated = torch.nn.functional.silu(gmu.in_proj(x)) * memory
        expected = gmu.out_proj(gated * torch.rsqrt(gated.pow(2).mean(-1, keepdim=True) + 1e-5) * gmu.norm.weight)
        plain = CausalLM(tiny("sambay")).layers[config.layer_plan.index("gmu")].mixer
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert plain.norm is None and sum(p.numel() for p in gmu.parameters()) == (
        sum(p.numel() for p in plain.parameters()) + config.d_inner)
