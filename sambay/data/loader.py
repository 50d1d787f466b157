"""Token-block loaders: shuffled, rank-sharded, exactly resumable training batches; fixed validation.

Sampling model (everything is arithmetic on indices, so resuming never re-reads data):

* Dataset ``d`` is cut into ``n_d`` blocks of ``seq_len + 1`` tokens at stride ``seq_len``
  (``TokenStream.block``). Its *sample stream* is the infinite sequence of epochs; sample ``i`` is
  block ``perm(seed, d, epoch = i // n_d)[i % n_d]``, a fresh permutation per epoch.
* Training batch ``k`` has ``world_size * batch_size`` global slots. With one dataset every slot takes
  the next sample index; with a mixture each slot first draws a dataset with the mixture weights from
  an RNG seeded by ``(seed, k)`` and then takes that dataset's next sample index. Rank ``r`` owns slots
  ``[r*B, (r+1)*B)``. All ranks compute the same slot table, so ranks never share a sample index:
  within an epoch they read disjoint blocks.
* The state is ``k`` plus the number of samples consumed per dataset. ``load_state_dict`` just sets
  them. Changing world_size or batch_size on resume stays well defined (consumption continues from the
  saved counters), but the stream equals an uninterrupted run only when both are unchanged.

Batches are tuples ``(input_ids, targets)`` of int64 tensors of shape (B, T), or
``(input_ids, targets, document_ids)`` with ``document_ids=True``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping

import numpy as np
import torch

from .dataset import Source, TokenStream
from .sources import DataError

STATE_VERSION = 1
_MIX_STREAM = 0x6D6978  # separates the mixture RNG from the permutation RNGs


class MissingEOSError(DataError):
    """``document_ids=True`` but no EOS id: the data has no manifest naming one and none was passed."""


def document_ids(input_ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """Per-token document index within each row, shape (B, T) int32.

    The EOS token belongs to the document it ends; the token after an EOS starts a new one, so row
    ``[a, b, EOS, c, EOS, d]`` gives ``[0, 0, 0, 1, 1, 2]``. Equivalent to ArchScale's varlen
    boundaries ``cu_seqlens = [0, eos_positions + 1, ..., T]``.
    """
    starts = torch.zeros_like(input_ids, dtype=torch.int32)
    starts[:, 1:] = (input_ids[:, :-1] == eos_id).to(torch.int32)
    return starts.cumsum(dim=1, dtype=torch.int32)


def _stack(blocks: list[np.ndarray], doc_eos: int | None):
    """(B, T+1) blocks -> (input_ids, targets[, document_ids]), each (B, T)."""
    buf = torch.from_numpy(np.stack(blocks))
    x, y = buf[:, :-1].contiguous(), buf[:, 1:].contiguous()
    return (x, y) if doc_eos is None else (x, y, document_ids(x, doc_eos))


def _open_streams(sources: Source | Mapping, eos_id: int | None,
                  vocab_size: int | None) -> tuple[list[TokenStream], np.ndarray, int | None]:
    if isinstance(sources, Mapping):
        items = list(sources.items())
        if not items:
            raise DataError("empty data mixture")
    else:
        items = [(sources, 1.0)]
    weights = np.array([float(w) for _, w in items])
    if np.any(weights < 0) or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise DataError(f"mixture weights must be finite, >= 0 and not all 0: {weights.tolist()}")
    streams = [TokenStream(s, eos_id=eos_id) for s, _ in items]
    vocabs = {s.vocab_size for s in streams if s.vocab_size}
    if len(vocabs) > 1:
        raise DataError(f"mixture datasets use different vocab sizes {sorted(vocabs)} (tokenizers differ)")
    if vocab_size is not None and vocabs and max(vocabs) > vocab_size:
        raise DataError(f"shards were tokenized with vocab size {max(vocabs)}, larger than the model's "
                        f"{vocab_size}")
    eos = {s.eos_id for s in streams if s.eos_id is not None}
    if len(eos) > 1:
        raise DataError(f"mixture datasets use different EOS ids {sorted(eos)}")
    return streams, weights / weights.sum(), (eos.pop() if eos else None)


class TokenLoader:
    """Infinite shuffled training batches over one dataset or a weighted mixture.

    Args:
        sources: one source (see ``sambay.data.dataset``) or a mapping ``{source: weight}``.
        seq_len: T; each sample is a block of T+1 tokens -> inputs (B, T), targets shifted by one.
        batch_size: B, per rank.
        seed, rank, world_size: the stream is a deterministic function of these (and the data).
        document_ids: also yield (B, T) document indices derived from EOS positions.
        eos_id: overrides/provides the EOS id (needed for document_ids without a manifest).
        vocab_size: if given, reject shards tokenized with a larger vocabulary.
    """

    def __init__(self, sources: Source | Mapping, seq_len: int, batch_size: int, *, seed: int = 0,
                 rank: int = 0, world_size: int = 1, document_ids: bool = False,
                 eos_id: int | None = None, vocab_size: int | None = None):
        if seq_len < 1 or batch_size < 1:
            raise ValueError(f"seq_len and batch_size must be >= 1 (got {seq_len}, {batch_size})")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.streams, self.weights, self.eos_id = _open_streams(sources, eos_id, vocab_size)
        self.seq_len, self.batch_size = seq_len, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.num_blocks = [s.num_blocks(seq_len) for s in self.streams]
        for s, n, w in zip(self.streams, self.num_blocks, self.weights):
            if n == 0 and w > 0:
                raise DataError(f"{s.name}: {s.num_tokens} tokens is less than one block of "
                                f"{seq_len + 1}")
        if document_ids and self.eos_id is None:
            raise MissingEOSError("document_ids=True needs an EOS id: pass eos_id= or use a prepared "
                                  "directory with a manifest.json")
        self.document_ids = document_ids
        self.step = 0  # batches produced so far (identical on every rank)
        self.consumed = [0] * len(self.streams)  # global samples consumed per dataset
        self._perms: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()

    # ---- index arithmetic ----

    def _slot_datasets(self, step: int) -> np.ndarray:
        """Dataset of each of the world_size*batch_size global slots of batch ``step``, shape (W*B,)."""
        n = self.world_size * self.batch_size
        if len(self.streams) == 1:
            return np.zeros(n, dtype=np.int64)
        rng = np.random.default_rng([self.seed, _MIX_STREAM, step])
        return rng.choice(len(self.streams), size=n, p=self.weights)

    def _perm(self, d: int, epoch: int) -> np.ndarray:
        key = (d, epoch)
        if key not in self._perms:
            # seeded by (seed, dataset, epoch): every epoch reshuffles, reproducibly
            self._perms[key] = np.random.default_rng([self.seed, d, epoch]).permutation(self.num_blocks[d])
            while len(self._perms) > 2 * len(self.streams):  # current + next epoch per dataset
                self._perms.popitem(last=False)
        self._perms.move_to_end(key)  # LRU: a slow dataset's epoch is not evicted by a fast one's
        return self._perms[key]

    def _block_index(self, d: int, sample: int) -> int:
        epoch, pos = divmod(sample, self.num_blocks[d])
        return int(self._perm(d, epoch)[pos])

    def batch_indices(self, step: int, consumed: list[int],
                      slots: np.ndarray | None = None) -> list[tuple[int, int]]:
        """(dataset, block) pairs of this rank's rows in batch ``step`` given the counters before it."""
        slots = self._slot_datasets(step) if slots is None else slots
        # how many earlier slots of the global batch drew the same dataset, per slot
        onehot = slots[None, :] == np.arange(len(self.streams))[:, None]
        earlier = (np.cumsum(onehot, axis=1) - onehot)[slots, np.arange(slots.size)]
        lo = self.rank * self.batch_size
        return [(int(slots[j]), self._block_index(int(slots[j]), consumed[slots[j]] + int(earlier[j])))
                for j in range(lo, lo + self.batch_size)]

    # ---- iteration and state ----

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        slots = self._slot_datasets(self.step)
        idx = self.batch_indices(self.step, self.consumed, slots)
        blocks = [self.streams[d].block(b, self.seq_len) for d, b in idx]
        counts = np.bincount(slots, minlength=len(self.streams))
        self.consumed = [c + int(n) for c, n in zip(self.consumed, counts)]
        self.step += 1
        return _stack(blocks, self.eos_id if self.document_ids else None)

    @property
    def epochs(self) -> list[float]:
        """Epochs completed per dataset (fractional)."""
        return [c / n if n else 0.0 for c, n in zip(self.consumed, self.num_blocks)]

    def state_dict(self) -> dict:
        """Small JSON-serialisable position; identical on every rank."""
        return {"version": STATE_VERSION, "step": self.step, "consumed": list(self.consumed),
                "seed": self.seed, "seq_len": self.seq_len, "batch_size": self.batch_size,
                "world_size": self.world_size, "weights": self.weights.tolist(),
                "datasets": [s.fingerprint() for s in self.streams]}

    def load_state_dict(self, state: Mapping) -> None:
        """Jump to a saved position in O(1): no data is read or replayed."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported loader state version {state.get('version')}")
        mine = self.state_dict()
        for key in ("seed", "seq_len", "datasets"):
            if state[key] != mine[key]:
                raise ValueError(f"loader state mismatch in {key!r}: saved {state[key]}, now "
                                 f"{mine[key]} (the data order would differ)")
        if not np.allclose(state["weights"], mine["weights"]):
            raise ValueError(f"loader state mismatch in mixture weights: saved {state['weights']}, "
                             f"now {mine['weights']}")
        self.step = int(state["step"])
        self.consumed = [int(c) for c in state["consumed"]]


class ValidationLoader:
    """Held-out batches in a fixed order (no shuffle), re-iterable, equal batch count on all ranks.

    Blocks are taken in stream order; rank r takes blocks r, r+W, r+2W, ...; only full batches are
    yielded (shapes stay fixed). ``seq_len`` may differ from training (length-extrapolation evals).
    """

    def __init__(self, source: Source, seq_len: int, batch_size: int, *, rank: int = 0,
                 world_size: int = 1, max_batches: int | None = None, document_ids: bool = False,
                 eos_id: int | None = None, vocab_size: int | None = None):
        if isinstance(source, Mapping):
            raise DataError("validation reads one held-out source in fixed order, not a weighted mixture")
        (self.stream,), _, self.eos_id = _open_streams(source, eos_id, vocab_size)
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.seq_len, self.batch_size, self.rank, self.world_size = seq_len, batch_size, rank, world_size
        per_rank = self.stream.num_blocks(seq_len) // world_size
        n = per_rank // batch_size
        self.num_batches = n if max_batches is None else min(n, max_batches)
        if self.num_batches == 0:
            raise DataError(f"{self.stream.name}: {self.stream.num_tokens} tokens give no full validation "
                            f"batch of {world_size}x{batch_size}x{seq_len + 1}")
        if document_ids and self.eos_id is None:
            raise MissingEOSError("document_ids=True needs an EOS id")
        self.document_ids = document_ids

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        W, B = self.world_size, self.batch_size
        for k in range(self.num_batches):
            rows = [(k * B + i) * W + self.rank for i in range(B)]
            blocks = [self.stream.block(j, self.seq_len) for j in rows]
            yield _stack(blocks, self.eos_id if self.document_ids else None)
