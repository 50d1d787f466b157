"""Multi-query associative recall (MQAR, Zoology: Arora et al., arXiv 2312.04927): generator and accuracy.

One sequence of ``seq_len`` tokens holds, first, ``num_kv_pairs`` key/value pairs ``k1 v1 k2 v2 ...`` (keys
distinct ids from ``[1, V/2)``, values distinct ids from ``[V/2, V)``: disjoint halves of the vocabulary),
then a query region of ``seq_len - 2·num_kv_pairs`` tokens in which every key appears once more. The query
slots are the even offsets of that region; slot ``g`` (0-based) is drawn without replacement with
probability proportional to ``a·(g+1)^(a-1)`` (``power_a = a = 0.01`` by default), so queries crowd near the
key/value block and thin out towards the end. Everything else is filler: uniform random ids from ``[0, V)``
(``random_non_queries=True``, the default) or 0.

Targets are aligned next-token targets (position t is scored against ``targets[t]``, as the packed training
loader gives them): the value paired with the key at each query position, -100 everywhere else. The token
after a query key in the input is filler, not the value, so the answer must be recalled. The metric is the
accuracy of the argmax prediction at the scored positions.

Why it separates architectures: attention solves it at any width, fixed-size recurrent states need room
growing with ``num_kv_pairs``, and sliding-window attention fails once the key-to-query distance exceeds
its window (choose ``seq_len`` well above the window). Zoology's standard sweep uses V = 8192, e.g.
(seq_len 64, 4 pairs) ... (1024, 256 pairs). ``sambay train --data mqar:num_kv_pairs=16,seq_len=256``
trains on it (see `sambay.train.data`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

POWER_A = 0.01


def check_mqar_args(vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float = POWER_A,
                    batch_size: int = 1) -> None:
    """Raise ValueError, naming the argument, for settings that cannot make an MQAR sequence."""
    for name, value in (("vocab_size", vocab_size), ("seq_len", seq_len), ("num_kv_pairs", num_kv_pairs),
                        ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"MQAR: {name} must be a positive integer (got {value!r})")
    if isinstance(power_a, bool) or not isinstance(power_a, (int, float)) or not math.isfinite(power_a) \
            or power_a <= 0:
        raise ValueError(f"MQAR: power_a must be a positive number (got {power_a!r})")
    keys = vocab_size // 2 - 1  # key ids 1 .. V/2 - 1 (0 is the filler id)
    if keys < num_kv_pairs:
        raise ValueError(f"MQAR: vocab_size {vocab_size} is too small for {num_kv_pairs} key-value pairs: keys come "
                         f"from ids 1..{vocab_size // 2 - 1} ({max(keys, 0)} distinct keys); need vocab_size >= "
                         f"{2 * (num_kv_pairs + 1)}")
    if seq_len < 4 * num_kv_pairs:
        raise ValueError(f"MQAR: seq_len {seq_len} is too short for {num_kv_pairs} key-value pairs: the pairs take "
                         f"{2 * num_kv_pairs} tokens and the {num_kv_pairs} queries need as many distinct slots "
                         f"among the (seq_len - {2 * num_kv_pairs}) // 2 = {max(seq_len - 2 * num_kv_pairs, 0) // 2} "
                         f"of the query region; need seq_len >= 4·num_kv_pairs = {4 * num_kv_pairs}")


def _ordered_sample(rng: np.random.Generator, rows: int, n: int, k: int,
                    log_weights: np.ndarray | None = None) -> np.ndarray:
    """(rows, k) indices into range(n), distinct within a row, drawn one after another without replacement
    with probability proportional to exp(log_weights) (uniform when None): the k largest of log-weight +
    Gumbel noise, in decreasing order, have exactly that distribution."""
    scores = rng.gumbel(size=(rows, n))
    if log_weights is not None:
        scores += log_weights
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n else np.tile(np.arange(n), (rows, 1))
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def query_slot_weights(seq_len: int, num_kv_pairs: int, power_a: float = POWER_A) -> np.ndarray:
    """Probability of each query slot (the g-th even offset of the query region) for the first draw:
    proportional to a·(g+1)^(a-1)."""
    space = (seq_len - 2 * num_kv_pairs) // 2
    w = power_a * np.arange(1, space + 1, dtype=np.float64) ** (power_a - 1)
    return w / w.sum()


def mqar_batch(batch_size: int, vocab_size: int, seq_len: int, num_kv_pairs: int, power_a: float = POWER_A,
               seed: int | Sequence[int] = 0, *, random_non_queries: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of MQAR sequences: (inputs (B, T) int64, targets (B, T) int64 with -100 where not scored).

    ``targets[b, t]`` is the value paired with the key ``inputs[b, t]`` at each query position and -100
    elsewhere (aligned next-token targets: pass them as ``targets=``, or score the logits at position t).
    ``seed`` (an int or a sequence of ints, as numpy's ``default_rng`` takes) fixes the whole batch.
    """
    check_mqar_args(vocab_size, seq_len, num_kv_pairs, power_a, batch_size)
    rng = np.random.default_rng(seed)
    b, k, half = batch_size, num_kv_pairs, vocab_size // 2
    keys = 1 + _ordered_sample(rng, b, half - 1, k)
    values = half + _ordered_sample(rng, b, vocab_size - half, k)
    weights = query_slot_weights(seq_len, k, power_a)
    slots = _ordered_sample(rng, b, weights.shape[0], k, np.log(weights))
    query_pos = 2 * k + 2 * slots  # keys[:, j] is asked at query_pos[:, j]

    inputs = np.zeros((b, seq_len), dtype=np.int64)
    inputs[:, 0:2 * k:2] = keys
    inputs[:, 1:2 * k:2] = values
    rows = np.arange(b)[:, None]
    inputs[rows, query_pos] = keys
    targets = np.full((b, seq_len), -100, dtype=np.int64)
    targets[rows, query_pos] = values
    if random_non_queries:
        filler = np.ones((b, seq_len), dtype=bool)
        filler[:, :2 * k] = False
        filler[rows, query_pos] = False
        noise = rng.integers(0, vocab_size, size=(b, seq_len))
        inputs[filler] = noise[filler]
    return torch.from_numpy(inputs), torch.from_numpy(targets)


@torch.no_grad()
def batch_accuracy(model, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
    """(correct, scored) for one batch: argmax of the model's next-token prediction at every position whose
    target is not -100 (one teacher-forced forward, no generation). The LM head runs only at those positions."""
    from sambay.eval.perplexity import final_hidden_states

    device = next(model.parameters()).device
    inputs, targets = inputs.to(device), targets.to(device)
    mask = targets != -100
    h = final_hidden_states(model, inputs)[mask]
    logits = torch.nn.functional.linear(h, model.head_weight)
    correct = (logits.argmax(dim=-1) == targets[mask]).sum().item()
    return int(correct), int(mask.sum().item())


def mqar_accuracy(model, *, seq_len: int, num_kv_pairs: int, vocab_size: int | None = None, num_examples: int = 256,
                  batch_size: int = 32, power_a: float = POWER_A, seed: int = 0,
                  random_non_queries: bool = True) -> float:
    """Accuracy of a `sambay.CausalLM` on ``num_examples`` MQAR sequences (``vocab_size`` defaults to the
    model's): the share of query positions where the argmax prediction is the paired value.

    Batch i is generated from ``[seed, i]``: the examples are fixed by the settings (batch_size included) and
    the seed. The model runs in eval mode under no_grad; its train/eval mode is restored afterwards.
    """
    vocab = model.config.vocab_size if vocab_size is None else vocab_size
    if vocab > model.config.vocab_size:
        raise ValueError(f"MQAR: vocab_size {vocab} exceeds the model's vocabulary ({model.config.vocab_size})")
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"MQAR: num_examples must be a positive integer (got {num_examples!r})")
    check_mqar_args(vocab, seq_len, num_kv_pairs, power_a, batch_size)
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        for i, start in enumerate(range(0, num_examples, batch_size)):
            rows = min(batch_size, num_examples - start)
            x, y = mqar_batch(rows, vocab, seq_len, num_kv_pairs, power_a, seed=[seed, i],
                              random_non_queries=random_non_queries)
            c, n = batch_accuracy(model, x, y)
            correct, total = correct + c, total + n
    finally:
        model.train(was_training)
    return correct / total
