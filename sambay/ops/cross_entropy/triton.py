"""Cross-entropy rows in Triton: loss and logits gradient in one kernel, written over the logits in place.

For one chunk of logits (R, V) in the head's compute dtype (bf16 under autocast), each program takes one row:
pass 1 reads the row once for an online (max, sum of exp) in fp32 and gives lse; the row's loss is
lse - logit[target]; pass 2 reads it again and overwrites it with (softmax - onehot) * scale, the gradient
the two GEMMs of the backward need. That is 2 reads and 1 write of the chunk in its own dtype, where the
PyTorch form (`chunked.py`) makes fp32 copies for the upcast, logsumexp, softmax, scatter and scaling.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from sambay.ops import triton_math as tm

BLOCK_V = 4096  # vocabulary elements per step of a row (fp32 accumulators of this size per program)


@triton.jit
def _ce_rows_kernel(logits_ptr, targets_ptr, scale_ptr, loss_ptr, V, stride_row, ignore_index,
                    BLOCK: tl.constexpr, WRITE_GRAD: tl.constexpr):
    """Row r of logits (R, V): loss_ptr[r] = lse - logit[target] (0 when ignored); with WRITE_GRAD the row
    becomes (softmax - onehot(target)) * scale[0] (all zeros when ignored)."""
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    cols = tl.arange(0, BLOCK)
    # pass 1: per-lane running max and sum of exp, merged at the end (one exp per element)
    m = tl.full([BLOCK], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK], tl.float32)
    for v0 in range(0, V, BLOCK):
        x = tl.load(base + v0 + cols, mask=v0 + cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, x)
        # lanes that have seen only padding (-inf) subtract 0, not -inf: their terms are exp(-inf) = 0, no nan
        ref = tl.where(m_new == float("-inf"), 0.0, m_new)
        s = s * tm.exp(m - ref) + tm.exp(x - ref)
        m = m_new
    row_max = tl.max(m, axis=0)
    lse = row_max + tl.log(tl.sum(s * tm.exp(m - row_max), axis=0))
    target = tl.load(targets_ptr + row)
    valid = target != ignore_index
    in_range = (target >= 0) & (target < V)
    t_logit = tl.load(base + tl.where(valid & in_range, target, 0)).to(tl.float32)
    # a target outside the vocabulary makes the loss (and gradient) NaN instead of reading out of bounds
    t_logit = tl.where(in_range, t_logit, float("nan"))
    tl.store(loss_ptr + row, tl.where(valid, lse - t_logit, 0.0))
    if WRITE_GRAD:
        scale = tl.where(valid, tl.load(scale_ptr), 0.0)
        scale = tl.where(in_range | ~valid, scale, float("nan"))
        for v0 in range(0, V, BLOCK):
            mask = v0 + cols < V
            x = tl.load(base + v0 + cols, mask=mask, other=0.0).to(tl.float32)
            g = tm.exp(x - lse) - tl.where(v0 + cols == target, 1.0, 0.0)
            tl.store(base + v0 + cols, (g * scale).to(logits_ptr.dtype.element_ty), mask=mask)


@torch.library.custom_op("sambay::cross_entropy_rows", mutates_args=("logits",))
def cross_entropy_rows(logits: torch.Tensor, targets: torch.Tensor, grad_scale: torch.Tensor,
                       ignore_index: int, write_grad: bool) -> torch.Tensor:
    """logits (R, V) unit stride along V, targets (R,) int, grad_scale (1,) fp32 (a device tensor: no
    host sync) -> per-row loss (R,) fp32. With `write_grad` the logits are overwritten by
    (softmax - onehot) * grad_scale in their dtype (ignored rows: zeros)."""
    rows, vocab = logits.shape
    loss = torch.empty(rows, device=logits.device, dtype=torch.float32)
    if rows:
        _ce_rows_kernel[(rows,)](logits, targets, grad_scale, loss, vocab, logits.stride(0), ignore_index,
                                 BLOCK=min(BLOCK_V, triton.next_power_of_2(vocab)), WRITE_GRAD=write_grad,
                                 num_warps=8)
    return loss


@cross_entropy_rows.register_fake
def _cross_entropy_rows_fake(logits, targets, grad_scale, ignore_index, write_grad):
    return logits.new_empty(logits.shape[0], dtype=torch.float32)
