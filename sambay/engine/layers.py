"""Stateful prefill and decode paths of each mixer, over one layer's view of the `InferenceState`.

The mixers' full-sequence forward stays the training/scoring path; these functions reuse the mixers'
projections (`project_qkv`, `project_q`, `attend`, `ssm_inputs`, the weights) and add only what the state
needs: reading the previous state, writing the new one. Every function takes `h`, the block's normed input,
and returns the mixer output; `Block.around` adds the residual and the MLP.

Prefill batches are left-padded (`PrefillBatch`): every row's last token sits in the last column, padded
positions are a separate leading document, so the conv taps and the scan reset at the first real token and a
padded position never reaches a state, a window or a K/V cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sambay.model.attention import CrossAttention, SelfAttention
from sambay.model.context import masked_core
from sambay.model.mamba import Mamba
from sambay.model.norm import swiglu
from sambay.ops.attention.decode import decode_attention, decode_diff_attention
from sambay.ops.causal_conv1d import causal_conv1d, causal_conv1d_update
from sambay.ops.selective_scan import selective_scan
from sambay.ops.selective_state_update import selective_state_update


@dataclass
class PrefillBatch:
    """One prefill call: row b holds one piece of a prompt, left-padded to a common width T.

    slots (B,) int64 state slots; positions (B, T) int64 absolute positions (negative on padding);
    real (B, T) bool, False on padding; starts (B,) int64 tokens already in the slot before this piece;
    max_start: max(starts) as a Python int (sizes the past-key slice, no device sync).
    """

    slots: torch.Tensor
    positions: torch.Tensor
    real: torch.Tensor
    starts: torch.Tensor
    max_start: int

    @property
    def document_ids(self) -> torch.Tensor | None:
        """(B, T): padding is document 0, the prompt document 1 (None when nothing is padded)."""
        return None if bool(self.real.all()) else self.real.long()

    @classmethod
    def build(cls, pieces: list[list[int]], slots: list[int], starts: list[int], device) -> tuple[PrefillBatch, torch.Tensor]:
        """Left-pad the pieces; returns the batch and the (B, T) input ids (padding uses id 0)."""
        width = max(len(p) for p in pieces)
        ids = torch.zeros(len(pieces), width, dtype=torch.long)
        real = torch.zeros(len(pieces), width, dtype=torch.bool)
        positions = torch.empty(len(pieces), width, dtype=torch.long)
        for b, (piece, start) in enumerate(zip(pieces, starts)):
            pad = width - len(piece)
            ids[b, pad:] = torch.as_tensor(piece, dtype=torch.long)
            real[b, pad:] = True
            positions[b] = torch.arange(width) - pad + start
        to = dict(device=device)
        batch = cls(slots=torch.as_tensor(slots, dtype=torch.long, **to), positions=positions.to(**to),
                    real=real.to(**to), starts=torch.as_tensor(starts, dtype=torch.long, **to), max_start=max(starts))
        return batch, ids.to(**to)


# ---------------------------------------------------------------------------------------------- Mamba
def around_mamba(block, x: torch.Tensor, run) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`block.around` for a Mamba mixer whose stateful path `run(h) -> (y, memory)` also returns the GMU
    memory; -> (the block's output, that memory or None)."""
    memory = None

    def mix(h):
        nonlocal memory
        y, memory = run(h)
        return y

    return block.around(x, mix), memory


def mamba_prefill(mixer: Mamba, h: torch.Tensor, batch: PrefillBatch, state: dict[str, torch.Tensor]):
    """h (B, T, d) -> (out (B, T, d), memory (B, T, E) or None); writes conv/ssm state of the slots."""
    conv_state, ssm_state = state["conv_state"], state["ssm_state"]
    docs = batch.document_ids
    x, z = mixer.in_proj(h).chunk(2, dim=-1)
    x, conv_final = causal_conv1d(x, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, activation="silu",
                                  initial_state=conv_state[batch.slots], seq_idx=docs, return_final_state=True)
    dt, B, C, A = mixer.ssm_inputs(x)
    y, ssm_final = selective_scan(x, dt, A, B, C, mixer.D, z=None if mixer.writes_memory else z,
                                  delta_bias=mixer.dt_proj.bias, initial_state=ssm_state[batch.slots],
                                  seq_idx=docs, return_final_state=True)
    conv_state[batch.slots] = conv_final.to(conv_state.dtype)
    ssm_state[batch.slots] = ssm_final.to(ssm_state.dtype)
    if mixer.writes_memory:
        return mixer.out_proj(swiglu(z, y)), y
    return mixer.out_proj(y), None


def mamba_step(mixer: Mamba, h: torch.Tensor, slots: torch.Tensor, state: dict[str, torch.Tensor]):
    """h (B, 1, d) -> (out (B, 1, d), memory (B, 1, E) or None); updates the slots' state in place."""
    x, z = mixer.in_proj(h[:, 0]).chunk(2, dim=-1)
    x = causal_conv1d_update(x, state["conv_state"], mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias,
                             "silu", slots)
    dt, B, C, A = mixer.ssm_inputs(x)
    y = selective_state_update(x, dt, A, B, C, mixer.D, None if mixer.writes_memory else z, mixer.dt_proj.bias,
                               state["ssm_state"], slots)
    if mixer.writes_memory:
        return mixer.out_proj(swiglu(z, y))[:, None], y[:, None]
    return mixer.out_proj(y)[:, None], None


# ---------------------------------------------------------------------------------------------- attention
def _project_kv(attn: SelfAttention, h: torch.Tensor, positions: torch.Tensor):
    """Only the K/V part of the fused qkv projection: (B, T, G, hs) each, keys rotated when configured."""
    nq = attn.n_head * attn.hs
    bias = None if attn.qkv.bias is None else attn.qkv.bias[nq:]
    k, v = F.linear(h, attn.qkv.weight[nq:], bias).view(*h.shape[:2], 2 * attn.n_kv, attn.hs).chunk(2, dim=2)
    return attn._rope(k, positions), v


def _project_q(attn: SelfAttention, h: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    nq = attn.n_head * attn.hs
    bias = None if attn.qkv.bias is None else attn.qkv.bias[:nq]
    q = F.linear(h, attn.qkv.weight[:nq], bias).view(*h.shape[:2], attn.n_head, attn.hs)
    return attn._rope(q, positions)


def self_attention_prefill(attn: SelfAttention, h: torch.Tensor, batch: PrefillBatch, state: dict[str, torch.Tensor],
                           last_only: bool = False) -> torch.Tensor | None:
    """h (B, T, d) -> (B, T, d), or (B, 1, d) for the last token only with `last_only`.

    Queries see the keys already in the slot (its K/V cache or ring buffer) plus this piece's keys, under
    the true sliding window (position p sees p-window+1 .. p). The piece's keys are then written: all of
    them into a full K/V cache, the last `window` into a ring buffer (index p % window). With `last_only`
    the query/attention/output run for the last column only (the YOCO prefill skip); K/V still cover all.
    """
    k_cache, v_cache = state["k"], state["v"]
    window = attn.window
    pos, real = batch.positions, batch.real
    k, v = _project_kv(attn, h, pos)

    # Keys already in the slots, with the position each index holds and whether it is filled.
    if batch.max_start == 0:
        past_k = past_v = None
    elif window is None:
        n = batch.max_start
        past_k, past_v = k_cache[batch.slots, :, :n], v_cache[batch.slots, :, :n]
        past_pos = torch.arange(n, device=pos.device).expand(len(pos), n)
        past_ok = past_pos < batch.starts[:, None]
    else:
        past_k, past_v = k_cache[batch.slots], v_cache[batch.slots]
        j = torch.arange(k_cache.shape[2], device=pos.device)
        last = batch.starts[:, None] - 1
        past_pos = last - torch.remainder(last - j, k_cache.shape[2])  # newest position p < start with p % w == j
        past_ok = past_pos >= 0
    if past_k is None:
        keys, values, key_pos, key_ok = k, v, pos, real
    else:
        keys, values = torch.cat([past_k.transpose(1, 2), k], 1), torch.cat([past_v.transpose(1, 2), v], 1)
        key_pos, key_ok = torch.cat([past_pos, pos], 1), torch.cat([past_ok, real], 1)

    q_pos, q_ok = (pos[:, -1:], real[:, -1:]) if last_only else (pos, real)
    q = _project_q(attn, h[:, -1:] if last_only else h, q_pos)
    mask = key_ok[:, None, :] & q_ok[:, :, None] & (key_pos[:, None, :] <= q_pos[:, :, None])
    if window is not None:
        mask &= q_pos[:, :, None] - key_pos[:, None, :] < window
    if not last_only:
        # A padded query (its output is never used) looks at its own key only, so no softmax row is empty.
        n_past = keys.shape[1] - k.shape[1]
        own = torch.arange(keys.shape[1], device=pos.device)[None, :] == n_past + torch.arange(k.shape[1], device=pos.device)[:, None]
        mask |= (~q_ok)[:, :, None] & own
    out = attn.attend(q, keys, values, masked_core(mask[:, None]))

    write = real if window is None else real & (torch.arange(k.shape[1], device=pos.device) >= k.shape[1] - window)
    rows, cols = write.nonzero(as_tuple=True)
    index = pos[rows, cols] if window is None else pos[rows, cols] % window
    k_cache[batch.slots[rows], :, index] = k[rows, cols].to(k_cache.dtype)
    v_cache[batch.slots[rows], :, index] = v[rows, cols].to(v_cache.dtype)
    return out


def write_kv_only(attn: SelfAttention, h: torch.Tensor, batch: PrefillBatch, state: dict[str, torch.Tensor]) -> None:
    """Project and store a piece's K/V without attending (a YOCO prefill piece that is not the last)."""
    k, v = _project_kv(attn, h, batch.positions)
    rows, cols = batch.real.nonzero(as_tuple=True)
    state["k"][batch.slots[rows], :, batch.positions[rows, cols]] = k[rows, cols].to(state["k"].dtype)
    state["v"][batch.slots[rows], :, batch.positions[rows, cols]] = v[rows, cols].to(state["v"].dtype)


def decode_attend(attn, q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, lens: torch.Tensor,
                  slots: torch.Tensor) -> torch.Tensor:
    """q (B, 1, H, hs) over the first lens[b] entries of cache row slots[b] -> projected output (B, 1, d).

    Reads the pooled cache in place (split-K kernel on CUDA), never gathering a copy. Differential attention
    runs both softmaxes in one pass, so each K/V element is read once.
    """
    q = q[:, 0]
    if attn.diff is None:
        o = decode_attention(q, k_cache, v_cache, lens, slots)  # (B, H, hs)
    else:
        o1, o2 = decode_diff_attention(q, k_cache, v_cache, lens, slots)  # 2 x (B, H/2, 2hs)
        o = attn.diff.combine(o1, o2)
    return attn.out_proj(o.flatten(1))[:, None]


def self_attention_step(attn: SelfAttention, h: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor,
                        state: dict[str, torch.Tensor]) -> torch.Tensor:
    """h (B, 1, d), pos (B,) -> (B, 1, d). Writes this token's K/V (index pos, or pos % window), then
    attends over the slot's cache: all pos + 1 keys, or the min(pos + 1, window) filled ring entries."""
    k_cache, v_cache = state["k"], state["v"]
    q, k, v = attn.project_qkv(h, pos[:, None])
    index = pos if attn.window is None else pos % attn.window
    k_cache[slots, :, index] = k[:, 0].to(k_cache.dtype)
    v_cache[slots, :, index] = v[:, 0].to(v_cache.dtype)
    lens = pos + 1 if attn.window is None else torch.clamp(pos + 1, max=attn.window)
    return decode_attend(attn, q, k_cache, v_cache, lens, slots)


def cross_attention(attn: CrossAttention, h: torch.Tensor, pos: torch.Tensor, slots: torch.Tensor,
                    shared: dict[str, torch.Tensor]) -> torch.Tensor:
    """h (B, 1, d) at positions pos (B,), over the shared K/V cache of the full_kv layer -> (B, 1, d)."""
    q = attn.project_q(h, pos[:, None])
    return decode_attend(attn, q, shared["k"], shared["v"], pos + 1, slots)
