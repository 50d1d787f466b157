"""Linear + cross-entropy that never materialises the (N, V) logits.

Rows are processed in chunks: logits of one chunk are computed, turned into the loss and straight away into
the gradients (softmax − one-hot), which are folded into d_hidden (N, d) and d_weight (V, d, fp32
accumulation). Backward only rescales the stored gradients. Peak extra memory: one (chunk, V) block plus the
fp32 weight gradient, instead of N·V logits (at 8·4096 tokens and a 200K vocab: 26 GB).
The softmax and loss are fp32 whatever the input dtype (a bf16 head destabilises large-vocab training).
On CUDA one Triton kernel per chunk (`triton.py`) computes the loss rows in fp32 and overwrites the logits
with their gradient in place; elsewhere `_loss_and_grad_rows` does the same with fp32 PyTorch ops.
"""

from __future__ import annotations

import torch

from sambay.ops.backend import use_triton


def _loss_and_grad_rows(logits, targets, valid, n_valid, loss, needs_grad):
    """PyTorch form of one chunk (what `triton.cross_entropy_rows` fuses): adds the chunk's summed loss to
    `loss` in place and returns d(mean loss)/d logits (softmax - onehot) / n_valid, or None."""
    lse = torch.logsumexp(logits, dim=-1)
    safe_t = torch.where(valid, targets, torch.zeros_like(targets))
    target_logit = logits.gather(1, safe_t[:, None]).squeeze(1)
    loss += ((lse - target_logit) * valid).sum()
    if not needs_grad:
        return None
    grad = torch.softmax(logits, dim=-1)
    grad.scatter_add_(1, safe_t[:, None], -torch.ones_like(target_logit)[:, None])
    grad *= (valid.to(logits.dtype) / n_valid)[:, None]
    return grad


class _ChunkedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk_rows):
        n_rows = hidden.shape[0]
        valid = targets != ignore_index
        n_valid = valid.sum().clamp(min=1)
        needs_grad = hidden.requires_grad or weight.requires_grad
        d_hidden = torch.empty_like(hidden) if hidden.requires_grad else None
        acc = torch.promote_types(weight.dtype, torch.float32)  # fp32 at least (fp64 inputs stay fp64)
        d_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device) if weight.requires_grad else None
        loss = torch.zeros((), dtype=acc, device=hidden.device)
        # the GEMMs run in autocast's dtype when it is on (cast once here, not per chunk), else the inputs'
        dev = hidden.device.type
        gemm_dtype = (torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev)
                      else torch.promote_types(hidden.dtype, weight.dtype))
        fused = use_triton("cross_entropy", hidden, weight)
        if fused:
            from .triton import cross_entropy_rows

            grad_scale = (1.0 / n_valid).float().reshape(1)  # a device tensor: no host sync
        with torch.autocast(dev, enabled=False):
            w, hc = weight.to(gemm_dtype), hidden.to(gemm_dtype)
            for start in range(0, n_rows, chunk_rows):
                h = hc[start : start + chunk_rows]
                t = targets[start : start + chunk_rows]
                logits = h @ w.T  # (chunk, V)
                if fused:  # loss rows, and the logits overwritten by their gradient, in one kernel
                    loss += cross_entropy_rows(logits, t, grad_scale, ignore_index, needs_grad).sum()
                    grad = logits
                else:
                    grad = _loss_and_grad_rows(logits.to(acc), t, valid[start : start + chunk_rows], n_valid,
                                               loss, needs_grad)
                if not needs_grad:
                    continue
                if d_hidden is not None:
                    d_hidden[start : start + chunk_rows] = (grad.to(gemm_dtype) @ w).to(hidden.dtype)
                if d_weight is not None:
                    d_weight += grad.T @ h.to(grad.dtype)
        ctx.save_for_backward(d_hidden if d_hidden is not None else torch.empty(0),
                              d_weight if d_weight is not None else torch.empty(0))
        ctx.has = (d_hidden is not None, d_weight is not None)
        ctx.weight_dtype = weight.dtype
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_out):
        d_hidden, d_weight = ctx.saved_tensors
        gh = d_hidden * grad_out.to(d_hidden.dtype) if ctx.has[0] else None
        gw = (d_weight * grad_out).to(ctx.weight_dtype) if ctx.has[1] else None
        return gh, gw, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = -100, chunk_rows: int = 4096) -> torch.Tensor:
    """hidden (N, d), weight (V, d), targets (N,) -> mean loss over non-ignored targets (fp32 scalar).

    Same result as `reference.linear_cross_entropy`; gradients are computed during the forward pass.
    """
    if hidden.ndim != 2 or weight.ndim != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"expected hidden (N, d) and weight (V, d); got {tuple(hidden.shape)} and {tuple(weight.shape)}")
    if targets.shape != hidden.shape[:1]:
        raise ValueError(f"targets shape {tuple(targets.shape)} != ({hidden.shape[0]},)")
    return _ChunkedLinearCE.apply(hidden, weight, targets, ignore_index, chunk_rows)
