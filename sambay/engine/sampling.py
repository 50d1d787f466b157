"""Sampling settings per request and a batched sampler that runs on the device.

Per-row settings live in per-slot device tensors, written once when a request is admitted, so a step does
no host work per row except drawing its noise from the request's own `torch.Generator` (which is what makes
a seeded request reproducible whatever else is in the batch). Nothing syncs with the host: the token is
`argmax(probs / E)` with E ~ Exp(1) (the Gumbel-max trick, as in gpt-fast), not `multinomial`. Rows that
filter (top-k / top-p / min-p) sample without sorting the vocabulary (`sambay.engine.nucleus`): a top-k
selection, or a draw tested for membership in the nucleus; the few rows whose draw falls outside it are
redrawn exactly after the step's host sync (`draw` / `redraw` / `commit`; `sample` does all three).

Order of the transforms (vLLM's): min_tokens (stop ids masked) -> logit bias -> repetition, presence and
frequency penalties -> temperature -> min-p -> top-k -> top-p. Logprobs are those of the model's raw logits
(before any of these transforms), as vLLM reports them by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from sambay.engine.nucleus import rejection_pick, sorted_filter, top_k_filter


@dataclass
class SamplingParams:
    """How to pick the tokens of one request.

    temperature: 0 means greedy (argmax); otherwise logits are divided by it.
    top_k: keep the k most likely tokens (0 or -1: all). top_p: keep the smallest set whose probability
    reaches p (1: all). min_p: drop tokens below min_p x the top probability (0: none).
    repetition_penalty: > 1 discourages tokens already in the prompt or the output (HF / vLLM rule:
    positive logits are divided by it, negative ones multiplied).
    seed: a per-request generator seed; None draws one from torch's global RNG when the request starts.
    presence_penalty / frequency_penalty: subtracted from the logit of every token already generated, once /
    once per occurrence (OpenAI's rule, in [-2, 2]). logit_bias: token id -> value added to its logit.
    stop_token_ids: ids that end the request (besides the tokenizer's / model's EOS unless ignore_eos); the
    stop token is kept in `token_ids`, not in `text`. stop: strings that end the request; the text is cut
    before the match, unless include_stop_str_in_output. skip_special_tokens: leave special tokens out of
    `text` (token_ids keep them). max_new_tokens: at most this many generated tokens (0: none; with
    prompt_logprobs the prompt is still scored). min_tokens: stop ids cannot be sampled before this many
    tokens. logprobs: also return the sampled token's log-probability
    and the `logprobs` most likely tokens' (None: no logprobs). prompt_logprobs: the same for every prompt
    token after the first (the prompt then runs through every layer at every position). n: completions of the prompt, sharing one
    prefill (a seeded request's completion i uses seed + i).
    """

    max_new_tokens: int = 128  # as `sambay generate`; the HTTP completions endpoint keeps OpenAI's 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] | None = None
    seed: int | None = None
    stop_token_ids: Sequence[int] = field(default_factory=tuple)
    stop: Sequence[str] | str = field(default_factory=tuple)
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    n: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = (self.stop,)
        self.stop = tuple(self.stop)
        self.stop_token_ids = tuple(int(t) for t in self.stop_token_ids)

        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(msg)

        need(type(self.max_new_tokens) is int and self.max_new_tokens >= 0,
             f"max_new_tokens must be an integer >= 0 (got {self.max_new_tokens!r})")
        need(math.isfinite(self.temperature) and self.temperature >= 0,
             f"temperature must be >= 0 (0 = greedy; got {self.temperature!r})")
        need(type(self.top_k) is int and self.top_k >= -1, f"top_k must be -1, 0 (all) or >= 1 (got {self.top_k!r})")
        need(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1] (got {self.top_p!r})")
        need(0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1] (got {self.min_p!r})")
        need(math.isfinite(self.repetition_penalty) and self.repetition_penalty > 0,
             f"repetition_penalty must be > 0 (got {self.repetition_penalty!r})")
        need(all(s for s in self.stop), "stop strings must be non-empty")
        need(all(t >= 0 for t in self.stop_token_ids), "stop_token_ids must be >= 0")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            need(math.isfinite(value) and -2.0 <= value <= 2.0, f"{name} must be in [-2, 2] (got {value!r})")
        if self.logit_bias is not None:
            self.logit_bias = {int(k): float(v) for k, v in dict(self.logit_bias).items()}
            need(all(k >= 0 and math.isfinite(v) and -100 <= v <= 100 for k, v in self.logit_bias.items()),
                 "logit_bias maps token ids >= 0 to values in [-100, 100]")
        need(isinstance(self.min_tokens, int) and not isinstance(self.min_tokens, bool) and self.min_tokens >= 0,
             f"min_tokens must be an integer >= 0 (got {self.min_tokens!r})")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            need(value is None or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 20),
                 f"{name} must be None or an integer in [0, 20] (got {value!r})")
        need(isinstance(self.n, int) and not isinstance(self.n, bool) and 1 <= self.n <= 128,
             f"n must be an integer in [1, 128] (got {self.n!r})")
        need(self.seed is None or (isinstance(self.seed, int) and 0 <= self.seed < 2**63),
             f"seed must be an integer in [0, 2**63) (got {self.seed!r})")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalised(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0


@dataclass
class Draw:
    """One step's sampled tokens (B,) on the device, the rows that must be redrawn exactly (B,) bool or None,
    and what `redraw` and `logprobs` need: the raw logits (B, V) fp32 and the scaled, processed ones."""

    tokens: torch.Tensor
    incomplete: torch.Tensor | None
    raw: torch.Tensor
    scaled: torch.Tensor | None
    slot_list: Sequence[int]


@dataclass
class Logprobs:
    """Of one sampled token: its log-probability and the top-N (token id, log-probability), best first."""

    token_logprob: float
    top: list[tuple[int, float]]


class Sampler:
    """Per-slot sampling settings, the tokens each sequence has seen (repetition penalty) and generated
    (presence / frequency penalties), and per-slot random generators."""

    def __init__(self, max_batch: int, vocab_size: int, device: torch.device | str = "cpu"):
        dev = torch.device(device)
        self.device, self.vocab_size = dev, vocab_size
        self.temperature = torch.zeros(max_batch, device=dev)
        self.top_k = torch.zeros(max_batch, dtype=torch.long, device=dev)
        self.top_p = torch.ones(max_batch, device=dev)
        self.min_p = torch.zeros(max_batch, device=dev)
        self.penalty = torch.ones(max_batch, device=dev)
        self.presence = torch.zeros(max_batch, device=dev)
        self.frequency = torch.zeros(max_batch, device=dev)
        self.seen: torch.Tensor | None = None  # (slots, V) bool, allocated when a request asks for a penalty
        self.counts: torch.Tensor | None = None  # (slots, V) generated-token counts, likewise
        self.generators: list[torch.Generator | None] = [None] * max_batch
        self.params: list[SamplingParams | None] = [None] * max_batch
        self.bias: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * max_batch
        self.stop_ids: list[torch.Tensor | None] = [None] * max_batch

    def admit(self, slot: int, params: SamplingParams, prompt: Sequence[int], stop_ids: Sequence[int] = (),
              generated: Sequence[int] = (), generator: torch.Generator | None = None) -> None:
        """Take a request into `slot`. `generated`: tokens it already produced (a request resumed after a
        preemption: they count for the penalties); `generator`: its random generator from before."""
        self.params[slot] = params
        self.temperature[slot] = params.temperature
        self.top_k[slot] = params.top_k if params.top_k > 0 else self.vocab_size
        self.top_p[slot] = params.top_p
        self.min_p[slot] = params.min_p
        self.penalty[slot] = params.repetition_penalty
        self.presence[slot] = params.presence_penalty
        self.frequency[slot] = params.frequency_penalty
        if params.repetition_penalty != 1.0:
            if self.seen is None:
                self.seen = torch.zeros(len(self.params), self.vocab_size, dtype=torch.bool, device=self.device)
            self.seen[slot] = False
            self.seen[slot, torch.as_tensor([*prompt, *generated], dtype=torch.long, device=self.device)] = True
        if params.penalised:
            if self.counts is None:
                self.counts = torch.zeros(len(self.params), self.vocab_size, dtype=torch.int32, device=self.device)
            self.counts[slot] = torch.bincount(torch.as_tensor(list(generated), dtype=torch.long),
                                               minlength=self.vocab_size).to(self.device, torch.int32)
        bias = {k: v for k, v in (params.logit_bias or {}).items() if k < self.vocab_size}
        self.bias[slot] = None if not bias else (torch.tensor(list(bias), device=self.device),
                                                 torch.tensor(list(bias.values()), device=self.device))
        ids = [t for t in stop_ids if t < self.vocab_size]
        self.stop_ids[slot] = torch.tensor(ids, device=self.device) if params.min_tokens and ids else None
        # Only seeded requests own a generator (reproducible in any batch); the others share one batched draw.
        seeded = params.seed is not None and not params.greedy
        if seeded and generator is None:
            generator = torch.Generator(self.device).manual_seed(params.seed)
        self.generators[slot] = generator if seeded else None

    def release(self, slot: int) -> None:
        self.params[slot] = self.generators[slot] = self.bias[slot] = self.stop_ids[slot] = None

    @torch.inference_mode()
    def draw(self, logits: torch.Tensor, slots: torch.Tensor, slot_list: Sequence[int],
             generated: Sequence[int] | None = None) -> Draw:
        """Sample one token per row without waiting for the host. logits (B, V) for rows in `slots` (B,) (the
        same slots as the Python list); generated[b]: tokens row b has generated so far (for min_tokens).
        Rows in `Draw.incomplete` must be redrawn (`redraw`) before their token is used."""
        params = [self.params[s] for s in slot_list]
        raw = logits.float()
        logits = self._processed(raw, slots, slot_list, params, generated)
        tokens = logits.argmax(-1)
        if all(p.greedy for p in params):
            return Draw(tokens, None, raw, None, slot_list)
        temperature = self.temperature[slots]
        scaled = logits / torch.where(temperature > 0, temperature, torch.ones_like(temperature))[:, None]
        V = scaled.shape[-1]
        with_top_k = [not p.greedy and 0 < p.top_k < V for p in params]
        nucleus = [not p.greedy and not k and (p.top_p < 1 or p.min_p > 0) for p, k in zip(params, with_top_k)]
        plain = [not p.greedy and not k and not n for p, k, n in zip(params, with_top_k, nucleus)]
        incomplete = None

        def rows(flags):
            return torch.tensor(flags, device=tokens.device)

        if any(plain):  # Gumbel-max over the whole vocabulary: argmax(log p - log E)
            noise = self._exponential(slot_list, V, [V * f for f in plain])
            tokens = torch.where(rows(plain), (scaled - noise.log()).argmax(-1), tokens)
        if any(with_top_k):  # among the top-k candidates (a selection, not a sort)
            top_k = self.top_k[slots].clamp_max(V)
            weights, ids = top_k_filter(scaled, torch.where(rows(with_top_k), top_k, torch.ones_like(top_k)),
                                        self.top_p[slots], self.min_p[slots], max(p.top_k * f for p, f in zip(params, with_top_k)))
            noise = self._exponential(slot_list, weights.shape[-1], [p.top_k * f for p, f in zip(params, with_top_k)])
            pick = ids.gather(-1, (weights / noise).argmax(-1, keepdim=True))[:, 0]
            tokens = torch.where(rows(with_top_k), pick, tokens)
        if any(nucleus):  # a draw from the min-p survivors, kept if it is in the top-p nucleus
            noise = self._exponential(slot_list, V, [V * f for f in nucleus])
            pick, accepted = rejection_pick(scaled, noise, self.top_p[slots], self.min_p[slots])
            tokens = torch.where(rows(nucleus), pick, tokens)
            incomplete = rows(nucleus) & ~accepted
        return Draw(tokens, incomplete, raw, scaled, slot_list)

    @torch.inference_mode()
    def redraw(self, draw: Draw, rows: Sequence[int]) -> torch.Tensor:
        """Draw `rows` (indices into the batch) again with the exact, sorting filter -> the batch's tokens."""
        rows_t = torch.tensor(list(rows), device=draw.tokens.device)
        slots = torch.tensor([draw.slot_list[r] for r in rows], device=draw.tokens.device)
        probs, order = sorted_filter(draw.scaled[rows_t], self.top_k[slots], self.top_p[slots], self.min_p[slots])
        noise = self._exponential([draw.slot_list[r] for r in rows], probs.shape[-1], [probs.shape[-1]] * len(rows))
        noise = noise.gather(-1, order)  # each token keeps its own noise
        picked = order.gather(-1, (probs / noise).argmax(-1, keepdim=True))[:, 0]
        tokens = draw.tokens.clone()
        tokens[rows_t] = picked
        return tokens

    @torch.inference_mode()
    def commit(self, slots: torch.Tensor, tokens: torch.Tensor) -> None:
        """Record the step's final tokens (for the repetition, presence and frequency penalties)."""
        if self.seen is not None:
            self.seen[slots, tokens] = True
        if self.counts is not None:
            self.counts[slots, tokens] += 1

    def sample(self, logits: torch.Tensor, slots: torch.Tensor, slot_list: Sequence[int],
               generated: Sequence[int] | None = None, return_logprobs: bool = False):
        """`draw`, `redraw` where needed (a host sync) and `commit` -> tokens (B,) int64; with
        `return_logprobs`, (tokens, `token_logprobs` of the sampled and top-N tokens, or None when no row
        asks for logprobs)."""
        draw = self.draw(logits, slots, slot_list, generated)
        tokens = draw.tokens
        if draw.incomplete is not None and bool(draw.incomplete.any()):
            tokens = self.redraw(draw, draw.incomplete.nonzero()[:, 0].tolist())
        self.commit(slots, tokens)
        if not return_logprobs:
            return tokens
        return tokens, self.logprobs(draw, tokens)

    def logprobs(self, draw: Draw, tokens: torch.Tensor) -> torch.Tensor | None:
        """`token_logprobs` of the raw logits for the step's tokens, or None when no row asks for them."""
        n_top = max((self.params[s].logprobs for s in draw.slot_list if self.params[s].logprobs is not None),
                    default=None)
        return None if n_top is None else token_logprobs(draw.raw, tokens, n_top)

    def _exponential(self, slot_list: Sequence[int], width: int, widths: Sequence[int]) -> torch.Tensor:
        """(B, width) Exp(1) noise: one batched draw, then each seeded row redraws its first widths[b] values
        from its own generator (0: the row does not use this noise). A seeded row thus draws the same numbers
        whatever its batch mates do."""
        noise = torch.empty(len(slot_list), width, device=self.device).exponential_()
        for row, s in enumerate(slot_list):
            if self.generators[s] is not None and widths[row]:
                noise[row, :widths[row]].exponential_(generator=self.generators[s])
        return noise

    def _processed(self, logits, slots, slot_list, params, generated) -> torch.Tensor:
        logits = logits.clone()  # the caller's (raw) logits stay as they are, for logprobs
        for row, s in enumerate(slot_list):  # sparse per-row edits: a handful of ids each
            if self.stop_ids[s] is not None and generated is not None and generated[row] < params[row].min_tokens:
                logits[row, self.stop_ids[s]] = float("-inf")
            if self.bias[s] is not None:
                logits[row].index_add_(0, *self.bias[s])
        if self.seen is not None and any(p.repetition_penalty != 1.0 for p in params):
            logits = apply_repetition_penalty(logits, self.seen[slots], self.penalty[slots])
        if self.counts is not None and any(p.penalised for p in params):
            counts = self.counts[slots].float()
            logits = logits - self.frequency[slots, None] * counts - self.presence[slots, None] * (counts > 0)
        return logits


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, n_top: int) -> torch.Tensor:
    """logits (B, V) fp32, tokens (B,) -> (B, 1 + n_top, 2): row b holds (token, logprob) of the sampled
    token, then of the n_top most likely tokens (ids stored as floats: one tensor, one host copy)."""
    logp = torch.log_softmax(logits, -1)
    top_vals, top_ids = logp.topk(n_top, -1) if n_top else (logp[:, :0], tokens[:, None][:, :0])
    ids = torch.cat([tokens[:, None], top_ids], 1).double()
    vals = torch.cat([logp.gather(-1, tokens[:, None]), top_vals], 1).double()
    return torch.stack([ids, vals], -1)


def split_logprobs(row: list, n_top: int) -> Logprobs:
    """One row of `token_logprobs(...).tolist()` -> `Logprobs` with the request's own top-N."""
    return Logprobs(token_logprob=row[0][1], top=[(int(t), v) for t, v in row[1:1 + n_top]])


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """logits (B, V) fp32, seen (B, V) bool, penalty (B,) -> logits with seen tokens penalised."""
    p = penalty[:, None]
    return torch.where(seen, torch.where(logits > 0, logits / p, logits * p), logits)


def sampling_probs(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                   min_p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference filtered distribution per row: (probs (B, V) over tokens sorted by decreasing logit,
    order (B, V) token ids). top_k (B,) holds V for "all"; rows with temperature 0 are scaled by 1."""
    t = torch.where(temperature > 0, temperature, torch.ones_like(temperature))[:, None]
    return sorted_filter(logits / t, top_k, top_p, min_p)
