"""Top-k / top-p / min-p sampling without sorting the vocabulary.

The reference (`sorted_filter`) sorts every row: simple and exact, but a full sort of a 200K vocabulary per
token costs more than the rest of sampling together. Two exact ways around it:

* `top_k_filter`: a row with top-k needs only its k most likely tokens, which one `topk` selection finds;
  min-p and top-p then apply inside them (every token they keep is among them).
* `rejection_pick` for top-p / min-p without top-k (the kept set may be most of the vocabulary, e.g. for
  a flat distribution): draw a token from the min-p survivors with the Gumbel-max trick, then test whether
  it lies in the nucleus (the mass of the tokens more likely than it is below top_p). Conditioned on
  acceptance, the draw follows the filtered distribution exactly; a rejected row (probability 1 - top_p at
  most) is redrawn with the reference by the caller, after the step's one host sync.

All keep vLLM's order: min-p (relative to the top probability), top-k, then top-p over what survived,
renormalised; the most likely token always survives.
"""

from __future__ import annotations

import math

import torch


def sorted_filter(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                  min_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scaled (B, V) temperature-scaled logits; top_k (B,) long (V for "all"), top_p, min_p (B,) ->
    (probs (B, V) over tokens sorted by decreasing logit, summing to 1 per row; order (B, V) token ids)."""
    scaled, order = scaled.sort(-1, descending=True)
    probs = torch.softmax(scaled, -1)
    ranks = torch.arange(scaled.shape[-1], device=scaled.device)[None, :]
    drop = probs < min_p[:, None] * probs[:, :1]
    drop |= ranks >= top_k[:, None]
    kept = probs.masked_fill(drop, 0.0)
    kept = kept / kept.sum(-1, keepdim=True)
    before = kept.cumsum(-1) - kept  # mass of the more likely tokens: keep until it reaches top_p
    drop |= before >= top_p[:, None]
    drop[:, 0] = False
    kept = probs.masked_fill(drop, 0.0)
    return kept / kept.sum(-1, keepdim=True), order


def top_k_filter(scaled: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor, min_p: torch.Tensor,
                 width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The filters for rows with top_k (B,) in [1, width]: -> (weights (B, width): the kept candidates'
    probabilities, unnormalised, 0 elsewhere; ids (B, width) their token ids, most likely first)."""
    values, ids = scaled.topk(width, dim=-1)  # a selection, sorted, most likely first
    probs = torch.softmax(values, -1)  # over the candidates: the top-k renormalisation
    rank = torch.arange(values.shape[-1], device=scaled.device)[None, :]
    # min-p relative to the top probability is the same ratio within the candidates as in the vocabulary
    drop = (rank >= top_k[:, None]) | (probs < min_p[:, None] * probs[:, :1])
    kept = probs.masked_fill(drop, 0.0)
    before = kept.cumsum(-1) - kept
    keep = (before < top_p[:, None] * kept.sum(-1, keepdim=True)) & ~drop
    keep[:, 0] = True
    return probs.masked_fill(~keep, 0.0), ids


def rejection_pick(scaled: torch.Tensor, noise: torch.Tensor, top_p: torch.Tensor,
                   min_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """scaled (B, V); noise (B, V) Exp(1); top_p, min_p (B,) -> (tokens (B,), accepted (B,) bool): a draw
    from the min-p survivors, and whether it is in the top-p nucleus (if not, redraw the row exactly)."""
    logp = scaled - torch.logsumexp(scaled, -1, keepdim=True)
    floor = torch.where(min_p > 0, min_p.clamp_min(1e-30).log(), torch.full_like(min_p, -math.inf))
    alive = logp >= (floor + logp.max(-1).values)[:, None]
    tokens = (logp - noise.log()).masked_fill(~alive, -math.inf).argmax(-1)
    probs = logp.exp().masked_fill(~alive, 0.0)
    p_token = probs.gather(-1, tokens[:, None])
    above = (probs * (probs > p_token)).sum(-1)  # the survivors more likely than the draw
    return tokens, above < top_p * probs.sum(-1)
