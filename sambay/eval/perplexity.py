"""Perplexity by context length, with sliding windows, and the loss as a function of position.

`sliding_window_perplexity(model, ids, length, stride)` cuts one long token sequence into windows of
``length`` tokens starting at ``0, stride, 2·stride, ...`` and runs a `sambay.CausalLM` forward on each. In
the default ``mode="new"`` every window scores only the tokens that no earlier window scored (its last
``stride`` tokens; the first window scores all of its own), so each token after the first is scored exactly
once, with up to ``length - 1`` tokens of context. With ``stride == length`` the windows do not overlap and
each scores its tokens 1 .. length-1 (a window's first token has no context inside it): the mean loss is
then exactly the model's own ``model(window, labels=window).loss`` averaged over the windows.
``mode="all"`` scores every position of every full window instead (windows overlap when stride < length;
the mean per-window loss is reported), the Proof-Pile protocol of ArchScale's long-context evaluation.

Besides the mean loss and perplexity (e^loss), a result holds the mean loss per *position bucket*: the
position of a scored token is the number of tokens before it in its window, so with ``length`` above the
training length the curve shows where length extrapolation breaks down. `perplexity_by_length` runs
several lengths; `plot_perplexity` draws the curves (needs matplotlib).

The logits are never materialised for a whole window: the forward stops at the final norm
(`final_hidden_states`) and the LM head and log-softmax run in row chunks (`token_nll`), so a long window
of a large-vocabulary model costs O(rows · vocab) memory per chunk only.

Data: `load_token_ids` reads token ids from prepared shards (``sambay data prepare``) or tokenizes a
text / jsonl file, up to ``max_tokens``. For the offline corpus of ``scripts/offline_corpus.py`` pass its
output folder: its ``val.jsonl`` is the held-out split (a document is held out when a hash of its text
falls below the validation fraction, so the split is fixed by the text alone), or its prepared ``val``
shards.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MODES = ("new", "all")
HELDOUT_FILE = "val.jsonl"  # scripts/offline_corpus.py's held-out documents
HELDOUT_SHARDS = "val"  # where its documented `sambay data prepare` step writes their shards
DEFAULT_MAX_TOKENS = 1 << 20
_CHARS_PER_TOKEN_BOUND = 32  # text read per wanted token: tokens rarely span more characters than this


class _StopForward(Exception):
    """Raised by the final-norm hook: the forward has produced what we need."""


def final_hidden_states(model, input_ids: torch.Tensor, **forward_kwargs) -> torch.Tensor:
    """(B, T, d) final hidden states of a `sambay.CausalLM` — the final norm's output (times the μP logit
    multiplier), i.e. what the LM head multiplies. The model's own forward runs and is stopped at its final
    norm, so the (B, T, V) logits are never computed."""
    captured: list[torch.Tensor] = []

    def stop(module, args):
        captured.append(args[0])
        raise _StopForward

    handle = model.final_norm.register_forward_pre_hook(stop)
    try:
        model(input_ids, **forward_kwargs)
    except _StopForward:
        pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the model's forward never reached its final norm")
    return model.final_hidden(captured[0])


def token_nll(model, input_ids: torch.Tensor, targets: torch.Tensor, chunk_rows: int | None = None) -> torch.Tensor:
    """(B, T) fp32 negative log-likelihood of each aligned target (``targets[b, t]`` is the token predicted
    at position t), 0 where the target is -100. The head and log-softmax run over ``chunk_rows`` scored
    positions at a time (default: about 2^26 logits per chunk)."""
    if targets.shape != input_ids.shape:
        raise ValueError(f"targets {tuple(targets.shape)} and input_ids {tuple(input_ids.shape)} differ in shape")
    weight = model.head_weight
    rows = chunk_rows or max(1, (1 << 26) // weight.shape[0])
    h = final_hidden_states(model, input_ids).flatten(0, 1)
    flat = targets.flatten().to(h.device)
    out = torch.zeros(flat.shape[0], dtype=torch.float32, device=h.device)
    scored = (flat != -100).nonzero().squeeze(1)
    for i in range(0, scored.shape[0], rows):
        idx = scored[i:i + rows]
        logits = F.linear(h[idx], weight).float()
        out[idx] = torch.logsumexp(logits, dim=-1) - logits.gather(1, flat[idx, None]).squeeze(1)
    return out.view(targets.shape)


@dataclass
class PerplexityResult:
    """One (length, stride) measurement. ``position_loss[b]`` is the mean loss of the scored tokens with
    ``b·bucket_size <= position < (b+1)·bucket_size`` tokens before them in their window (None if none was
    scored there); ``position_tokens[b]`` how many there were."""

    length: int
    stride: int
    mode: str
    loss: float
    perplexity: float
    num_tokens: int
    num_windows: int
    bucket_size: int
    position_loss: list[float | None] = field(default_factory=list)
    position_tokens: list[int] = field(default_factory=list)

    @property
    def bucket_centers(self) -> list[float]:
        return [(b + 0.5) * self.bucket_size for b in range(len(self.position_loss))]

    def to_dict(self) -> dict:
        return asdict(self)


def _windows(num_tokens: int, length: int, stride: int, mode: str) -> list[tuple[int, int, int]]:
    """(begin, end, first scored target index) of each window, in absolute token indices."""
    if mode == "all":
        return [(b, b + length, b + 1) for b in range(0, num_tokens - length + 1, stride)]
    out, scored_to = [], 0
    for begin in range(0, num_tokens, stride):
        end = min(begin + length, num_tokens)
        first = max(scored_to, begin + 1)
        if first < end:
            out.append((begin, end, first))
        scored_to = end
        if end == num_tokens:
            break
    return out


def _check_positive(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer (got {value!r})")


@torch.no_grad()
def sliding_window_perplexity(model, ids: torch.Tensor | Sequence[int], length: int, stride: int | None = None, *,
                              mode: str = "new", batch_size: int = 1, bucket_size: int | None = None,
                              num_buckets: int = 32, chunk_rows: int | None = None) -> PerplexityResult:
    """Mean loss and perplexity of a `sambay.CausalLM` over ``ids`` (1-D) in windows of ``length`` tokens
    moved by ``stride`` (default ``length``: no overlap), and the loss per position bucket (``bucket_size``
    positions each, default ``ceil(length / num_buckets)``). See the module docstring for what is scored.

    ``batch_size`` windows of equal size go through the model together. The model runs in eval mode; its
    train/eval mode is restored afterwards.
    """
    ids = torch.as_tensor(ids, dtype=torch.long).flatten().cpu()
    stride = length if stride is None else stride
    _check_positive("length", length)
    _check_positive("stride", stride)
    _check_positive("batch_size", batch_size)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} (got {mode!r})")
    if mode == "new" and stride > length:
        raise ValueError(f"stride {stride} > length {length} would leave tokens unscored")
    if ids.numel() < max(length, 2):
        raise ValueError(f"{ids.numel()} tokens are fewer than one window of {length} tokens")
    vocab = model.config.vocab_size
    if int(ids.min()) < 0 or int(ids.max()) >= vocab:
        raise ValueError(f"token ids must lie in [0, {vocab}) for this model (got {int(ids.min())}..{int(ids.max())})")
    bucket = bucket_size if bucket_size is not None else math.ceil(length / num_buckets)
    _check_positive("bucket_size", bucket)

    windows = _windows(ids.numel(), length, stride, mode)
    pos_sum = torch.zeros(length, dtype=torch.float64)
    pos_count = torch.zeros(length, dtype=torch.float64)
    window_losses: list[float] = []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        # windows of one size are batched; in "new" mode only the last one can be shorter
        by_size: dict[int, list[tuple[int, int, int]]] = {}
        for w in windows:
            by_size.setdefault(w[1] - w[0], []).append(w)
        for size, group in by_size.items():
            for i in range(0, len(group), batch_size):
                chunk = group[i:i + batch_size]
                x = torch.stack([ids[b:e] for b, e, _ in chunk])
                targets = torch.full_like(x, -100)
                for row, (b, e, first) in enumerate(chunk):
                    targets[row, first - b - 1:e - b - 1] = ids[first:e]
                nll = token_nll(model, x.to(device), targets.to(device), chunk_rows).double().cpu()
                mask = (targets != -100).double()
                # the target at window index t + 1 has t + 1 tokens of context before it
                pos_sum[1:size] += nll[:, :size - 1].sum(0)
                pos_count[1:size] += mask[:, :size - 1].sum(0)
                window_losses += (nll.sum(1) / mask.sum(1)).tolist()
    finally:
        model.train(was_training)

    total = int(pos_count.sum().item())
    if mode == "all":  # ArchScale: the mean of the windows' mean losses
        loss = sum(window_losses) / len(window_losses)
    else:
        loss = pos_sum.sum().item() / total
    n_buckets = math.ceil(length / bucket)
    pad = n_buckets * bucket - length
    b_sum = F.pad(pos_sum, (0, pad)).view(n_buckets, bucket).sum(1)
    b_count = F.pad(pos_count, (0, pad)).view(n_buckets, bucket).sum(1)
    return PerplexityResult(
        length=length, stride=stride, mode=mode, loss=loss, perplexity=math.exp(loss), num_tokens=total,
        num_windows=len(windows), bucket_size=bucket,
        position_loss=[(s / c) if c else None for s, c in zip(b_sum.tolist(), b_count.tolist())],
        position_tokens=[int(c) for c in b_count.tolist()])


def perplexity_by_length(model, ids: torch.Tensor | Sequence[int], lengths: Iterable[int], stride: int | None = None,
                         **kwargs) -> list[PerplexityResult]:
    """`sliding_window_perplexity` at each length (``stride=None``: each length's windows do not overlap);
    lengths longer than ``ids`` are an error."""
    return [sliding_window_perplexity(model, ids, length, stride, **kwargs) for length in lengths]


# ---------------------------------------------------------------------------------------------- data

def _eos_of(tokenizer) -> int | None:
    try:
        eos = getattr(tokenizer, "eos_id", None)
    except Exception:  # the tokenizer names no EOS token that exists: documents are joined without one
        return None
    return int(eos) if eos is not None else None


def _shard_ids(source: Path, max_tokens: int) -> torch.Tensor:
    from sambay.data.dataset import resolve_shards
    from sambay.data.shards import read_shard

    files, _ = resolve_shards(source)
    parts, n = [], 0
    for f in files:
        if n >= max_tokens:
            break
        tokens = read_shard(f)[:max_tokens - n]
        parts.append(np.asarray(tokens, dtype=np.int64))
        n += len(parts[-1])
    return torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64))


def load_token_ids(path: str | os.PathLike, tokenizer=None, *, max_tokens: int = DEFAULT_MAX_TOKENS,
                   text_field: str = "text") -> torch.Tensor:
    """At most ``max_tokens`` token ids (1-D int64) of held-out data, in file order.

    ``path`` is one of: token shards (a prepared folder with manifest.json, a folder of ``*.bin``, one
    ``.bin`` file: no tokenizer needed); a text file (``.txt`` = one document, ``.jsonl`` with the document
    in ``text_field``, optionally ``.gz``; needs ``tokenizer``, a `sambay.Tokenizer` or a path for
    `sambay.load_tokenizer`); or the output folder of ``scripts/offline_corpus.py``, whose held-out split is
    its ``val.jsonl`` (tokenized) or, without a tokenizer, its prepared ``val`` shards. Documents are joined
    with the tokenizer's EOS id, as ``sambay data prepare`` does; empty documents are skipped and at most
    ``32·(tokens still wanted)`` characters of a document are read.
    """
    _check_positive("max_tokens", max_tokens)
    p = Path(path)
    if p.is_dir():
        if (p / HELDOUT_FILE).is_file() and (tokenizer is not None or not (p / HELDOUT_SHARDS).is_dir()):
            p = p / HELDOUT_FILE
        elif not (p / "manifest.json").is_file() and not any(p.glob("*.bin")) and (p / HELDOUT_SHARDS).is_dir():
            p = p / HELDOUT_SHARDS
    if p.is_dir() or p.suffix == ".bin":
        return _shard_ids(p, max_tokens)
    from sambay.data.sources import iter_documents

    if tokenizer is None:
        raise ValueError(f"{p}: text input needs a tokenizer (or pass prepared token shards)")
    if isinstance(tokenizer, (str, os.PathLike)):
        from sambay.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(tokenizer)
    eos = _eos_of(tokenizer)
    ids: list[int] = []
    for doc in iter_documents(p, text_field=text_field):
        want = max_tokens - len(ids)
        if want <= 0:
            break
        if not doc:
            continue
        ids += tokenizer.encode(doc[:want * _CHARS_PER_TOKEN_BOUND], add_special_tokens=False)
        if eos is not None:
            ids.append(eos)
    return torch.tensor(ids[:max_tokens], dtype=torch.long)


# ---------------------------------------------------------------------------------------------- plot

def plot_perplexity(results: PerplexityResult | dict | Iterable[PerplexityResult | dict], path: str | os.PathLike,
                    title: str | None = None) -> Path:
    """Write a figure of the loss against position (one curve per result) and, when the results span
    several lengths, the perplexity against length. Needs matplotlib (``pip install matplotlib``, part of
    the ``eval`` extra). Returns the path written."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("plot_perplexity needs matplotlib: pip install matplotlib (or sambay[eval])") from e
    if isinstance(results, (PerplexityResult, dict)):
        results = [results]
    results = [r if isinstance(r, PerplexityResult) else PerplexityResult(**r) for r in results]
    if not results:
        raise ValueError("plot_perplexity: no results to plot")
    lengths = sorted({r.length for r in results})
    fig = Figure(figsize=(11 if len(lengths) > 1 else 6, 4.2), layout="constrained")
    axes = fig.subplots(1, 2 if len(lengths) > 1 else 1, squeeze=False)[0]
    ax = axes[0]
    for r in results:
        xs = [c for c, v in zip(r.bucket_centers, r.position_loss) if v is not None]
        ys = [v for v in r.position_loss if v is not None]
        ax.plot(xs, ys, marker=".", label=f"length {r.length}, stride {r.stride} (ppl {r.perplexity:.3g})")
    ax.set_xlabel("position in window (tokens of context)")
    ax.set_ylabel("mean loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if len(lengths) > 1:
        ax2 = axes[1]
        series: dict[str, list[tuple[int, float]]] = {}
        for r in results:
            name = "stride = length" if r.stride == r.length else f"stride {r.stride}"
            series.setdefault(f"{name}, {r.mode}", []).append((r.length, r.perplexity))
        for name, pts in series.items():
            pts.sort()
            ax2.plot([a for a, _ in pts], [b for _, b in pts], marker="o", label=name)
        ax2.set_xscale("log", base=2)
        ax2.set_xlabel("window length (tokens)")
        ax2.set_ylabel("perplexity")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    return out
