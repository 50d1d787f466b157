"""The model runner: owns the state pool's tensors, the (CUDA-graph) decode step and the sampler, and runs one
scheduled step with `execute`.

Prefill chunks are grouped into batched calls: chunks that start a prompt can share a left-padded batch
(padding is a separate leading document and the slots start from zero state, so it never reaches a state),
while chunks that continue a prompt share a call only with chunks of the same length (left padding would cut
them off from the state they continue). Then every decoding request steps one token. Tokens are sampled on
the device and come to the host once per step.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

import torch

from sambay.engine.cuda_graphs import GraphedDecoder
from sambay.engine.decode import decode_step
from sambay.engine.prefill import prefill_chunk
from sambay.engine.prefix_cache import PrefixCache
from sambay.engine.request import Request
from sambay.engine.sampling import Logprobs, Sampler, split_logprobs, token_logprobs
from sambay.engine.scheduler import PrefillChunk, SchedulerOutput
from sambay.engine.state import InferenceState
from sambay.model.context import InferenceContext
from sambay.model.model import CausalLM


@dataclass
class RunnerOutput:
    """The token sampled this step for each request that produced one (decoders and completed prompts), with
    its logprobs when the request asked for them; and the requests that only wanted their prompt scored
    (max_new 0 with prompt logprobs), whose prompt is now done."""

    sampled: list[tuple[Request, int, Logprobs | None]]
    scored: list[Request] = dataclasses.field(default_factory=list)


class ModelRunner:
    def __init__(self, model: CausalLM, state: InferenceState, *, cuda_graphs: bool = False, compile: bool = False,
                 prefix_cache: PrefixCache | None = None):
        self.model, self.state, self.prefix_cache = model, state, prefix_cache
        self.device = state.device
        self.sampler = Sampler(state.max_batch, model.config.vocab_size, self.device)
        self.last_tokens = torch.zeros(state.max_batch, dtype=torch.long, device=self.device)
        self.decoder = GraphedDecoder(model, state, compile=compile) if cuda_graphs else None

    def warm_up(self) -> None:
        """Capture (and compile) the decode step of every batch bucket now, so no request waits for it."""
        if self.decoder is not None:
            self.decoder.capture_all()

    def admit(self, request: Request) -> None:
        params = request.params
        if request.index and params.seed is not None:  # completion i of a seeded request draws from seed + i
            params = dataclasses.replace(params, seed=(params.seed + request.index) % 2**63)
        self.sampler.admit(request.slot, params, request.prompt_token_ids, request.stop_ids,
                           generated=request.output_token_ids, generator=request.generator)

    def release(self, slot: int) -> None:
        self.sampler.release(slot)

    def preempted(self, request: Request, slot: int) -> None:
        """`request` gave up `slot`: keep its random generator, so that it samples on as if never preempted."""
        request.generator = self.sampler.generators[slot]
        self.sampler.release(slot)

    @torch.inference_mode()
    def execute(self, plan: SchedulerOutput) -> RunnerOutput:
        rows: list[Request] = []
        scored: list[Request] = []
        logits: list[torch.Tensor] = []
        for group in _prefill_groups(plan.prefill):
            out = self._prefill(group)
            if out is not None and out.dim() == 3:  # every position's logits: prompt logprobs
                self._prompt_logprobs(group, out)
                out = out[:, -1]
            for i, c in enumerate(group):
                if c.completes_prompt and c.request.max_new == 0:  # nothing to sample: its forks share the scores
                    for f in c.request.pending_forks:
                        f.prompt_logprobs = c.request.prompt_logprobs
                    scored += [c.request, *c.request.pending_forks]
                elif c.completes_prompt:  # its forks (n > 1) continue from this state and sample from these logits
                    members = [c.request, *self._fork(c.request)]
                    rows += members
                    logits.append(out[i:i + 1].expand(len(members), -1))
        if plan.decode:
            slots = torch.tensor([r.slot for r in plan.decode], device=self.device)
            tokens = self.last_tokens[slots]
            step = self.decoder.step if self.decoder is not None else (
                lambda t, s: decode_step(self.model, self.state, t, s))
            logits.append(step(tokens, slots))
            rows += plan.decode
            for r in plan.decode:
                r.state_len += 1
        if not rows:
            return RunnerOutput([], scored)
        slot_list = [r.slot for r in rows]
        slots = torch.tensor(slot_list, device=self.device)
        draw = self.sampler.draw(torch.cat(logits), slots, slot_list, [len(r.output_token_ids) for r in rows])
        tokens = draw.tokens
        if draw.incomplete is None:
            ids = tokens.tolist()  # the host sync of the step
        else:  # the same sync brings the rows whose candidates were too few; they are redrawn exactly
            ids, redo = torch.stack([tokens, draw.incomplete.long()]).tolist()
            if any(redo):
                tokens = self.sampler.redraw(draw, [b for b, r in enumerate(redo) if r])
                ids = tokens.tolist()
        self.sampler.commit(slots, tokens)
        self.last_tokens[slots] = tokens
        logprobs = self.sampler.logprobs(draw, tokens)
        if logprobs is None:
            return RunnerOutput([(r, t, None) for r, t in zip(rows, ids)], scored)
        return RunnerOutput([(r, t, None if r.params.logprobs is None else split_logprobs(lp, r.params.logprobs))
                             for r, t, lp in zip(rows, ids, logprobs.tolist())], scored)

    def _fork(self, request: Request) -> list[Request]:
        forks = request.pending_forks
        if forks and self.prefix_cache is not None:  # a page each for the copies of the partial last page
            self.prefix_cache.free_pages_for(len(forks))
        for f in forks:
            self.state.copy_slot(request.slot, f.slot, request.state_len)
            f.num_computed, f.state_len, f.prompt_logprobs = f.prompt_len, request.state_len, request.prompt_logprobs
            f.fork_of = None
        return forks

    def _prefill(self, group: list[PrefillChunk]) -> torch.Tensor | None:
        """One batched prefill call -> logits (B, V) after each row's last token (None if no row ends its
        prompt), or (B, T, V) at every column for a group that wants prompt logprobs."""
        ctx, ids = InferenceContext.prefill(
            [c.request.prefill_tokens[c.start:c.end] for c in group], [c.request.slot for c in group],
            [c.start for c in group], self.device)
        out = prefill_chunk(self.model, self.state, ctx, ids, last=any(c.completes_prompt for c in group),
                            every_position=_wants_prompt_logprobs(group[0]))
        for c in group:
            r = c.request
            r.num_computed = r.state_len = c.end
            if c.end in r.snapshot_at and self.prefix_cache is not None:
                self.prefix_cache.insert(r.slot, r.prefill_tokens[:c.end], r.snapshot_at[c.end])
        return out

    def _prompt_logprobs(self, group: list[PrefillChunk], logits: torch.Tensor) -> None:
        """Append, for each prompt token after a chunk's first position, the log-probability the model gave it
        (and the top-N) from the logits (B, T, V) of the position before (raw logits, as for sampled tokens)."""
        width = logits.shape[1]
        for b, c in enumerate(group):
            r = c.request
            n = c.end - c.start
            targets = r.prompt_token_ids[c.start + 1:c.end + 1]  # the next prompt token of each position
            if not targets:
                continue
            row = logits[b, width - n:width - n + len(targets)].float()
            lp = token_logprobs(row, torch.tensor(targets, device=row.device), r.params.prompt_logprobs)
            r.prompt_logprobs += [split_logprobs(x, r.params.prompt_logprobs) for x in lp.tolist()]


def _prefill_groups(chunks: list[PrefillChunk]) -> list[list[PrefillChunk]]:
    """Chunks that start a prompt in one group; continuing chunks grouped by length; prompt-logprob requests
    apart (they run every layer on every token)."""
    groups: dict[object, list[PrefillChunk]] = defaultdict(list)
    for c in chunks:
        groups[("start" if c.start == 0 else c.end - c.start, _wants_prompt_logprobs(c))].append(c)
    return list(groups.values())


def _wants_prompt_logprobs(chunk: PrefillChunk) -> bool:
    return chunk.request.params.prompt_logprobs is not None and chunk.request.resume_tokens is None
