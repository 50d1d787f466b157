"""Prefix caching for hybrid models: reuse the state a sequence had after a prefix it shares with an earlier one.

A Transformer engine reuses K/V pages of a shared prefix. A SambaY model also keeps constant-size state per
sequence (Mamba conv and SSM states, SWA rings), which is overwritten as the sequence advances, so it can
only be reused where it was copied out: a *snapshot*. An `Entry` is one snapshot at P tokens: the constant
state (a row of `StateSnapshots`) plus the K/V pages covering those P tokens (full pages shared by
reference count; a partly filled last page copied, since its owner keeps writing into it). Restoring an
entry into a slot shares the full pages, copies the partial one, and copies the constant state: the
sequence then prefills only its tokens after P.

Where snapshots are taken (each costs one copy of the constant state, ~23 MiB for Phi-4-mini-flash):
* at the end of every finished request (prompt and answer), so the next turn of a chat hits it;
* at the end of every prompt, for a next turn whose re-tokenized answer differs from the generated tokens
  (both are where a chunk ends anyway: they cost no extra prefill step);
* at a *branch point*: when a new prompt shares full K/V blocks with cached entries beyond their
  snapshots (a common system prompt or few-shot header, the first time two requests meet), its prefill is
  cut at the last shared block boundary and snapshotted there, so every later request with that prefix
  hits it (the insertion idea of Marconi).

`policy="align"` keeps only vLLM's align-mode snapshots, at the last block boundary of each prompt (an
ablation, for comparing hit rates on the same traces).

Lookups key entries by a chained digest of the full blocks before P plus the P mod block_size tokens after
them, so a lookup hashes each block of the prompt once. The longest entry that is a proper prefix of the
prompt wins (at least one token must be computed, for the logits). Memory is bounded: `capacity` snapshots,
and the pages entries hold are given back (entries evicted) before a running request is preempted.
Eviction keeps what has proved shared. `uses` counts an entry's hits and repeated insertions, plus one for a
branch point (shared when it is made), less one for each hit whose request went on to leave its own longer
snapshot (a chat turn superseded by the next: its use is spent). Entries with no uses go first, the one with
the largest age / (1 + P / 1024) first (recency against the prefill work it saves); then the others by
age / ((1 + P / 1024) (1 + uses)). A few-shot header thus outlives the unique prompts that restore it.
"""

from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass

import torch

from sambay.engine.state import InferenceState

_ROOT = b"sambay-prefix"


@dataclass(eq=False)
class Entry:
    length: int  # tokens in the snapshot
    digest: bytes  # chained digest of its full blocks
    tail: tuple[int, ...]  # its tokens after the last full block
    snapshot: int  # row in StateSnapshots
    pages: list[int]  # its K/V pages: full ones shared, the partial last one its own copy
    digests: list[bytes]  # of every full block before `length`
    last_used: int = 0
    uses: int = 0  # hits and repeated insertions not yet superseded, and 1 for a branch point


@dataclass
class PrefixCacheStats:
    queries: int = 0  # prompt tokens looked up
    hits: int = 0  # of which restored from the cache
    requests: int = 0
    request_hits: int = 0
    snapshots: int = 0  # entries held
    snapshot_bytes: int = 0  # memory of the snapshot rows in use
    evictions: int = 0


class StateSnapshots:
    """Copies of a slot's constant-size state: `capacity` rows of every slot tensor of the state."""

    def __init__(self, state: InferenceState, capacity: int):
        self.state = state
        self.rows = [torch.zeros((capacity, *t.shape[1:]), dtype=t.dtype, device=t.device) for t in state.slot_tensors]
        self.row_bytes = sum(t[0].numel() * t.element_size() for t in self.rows) if capacity else 0
        self.free = list(range(capacity))[::-1]

    def save(self, slot: int) -> int | None:
        if not self.free:
            return None
        row = self.free.pop()
        for snap, live in zip(self.rows, self.state.slot_tensors):
            snap[row] = live[slot]
        return row

    def load(self, row: int, slot: int) -> None:
        for snap, live in zip(self.rows, self.state.slot_tensors):
            live[slot] = snap[row]

    def release(self, row: int) -> None:
        self.free.append(row)


POLICIES = ("sambay", "align")


class PrefixCache:
    def __init__(self, state: InferenceState, capacity: int, block_size: int, policy: str = "sambay"):
        if capacity < 1:
            raise ValueError(f"the prefix cache needs room for at least one snapshot (got {capacity})")
        if policy not in POLICIES:
            raise ValueError(f"unknown prefix-cache policy {policy!r}; choose from {', '.join(POLICIES)}")
        self.state, self.block_size, self.policy = state, block_size, policy
        self.snapshots = StateSnapshots(state, capacity)
        self.entries: dict[tuple[bytes, tuple[int, ...]], Entry] = {}
        self.by_digest: dict[bytes, list[Entry]] = {}  # entries by the digest of their last full block
        self.known: dict[bytes, int] = {}  # digest of a full block -> entries whose prefix contains it
        self.inflight: dict[bytes, int] = {}  # digest of a full block -> running prompts that contain it
        self._inflight_of: dict[int, list[bytes]] = {}
        self.clock = 0
        self.stats = PrefixCacheStats()
        self._pinned: Entry | None = None

    # ------------------------------------------------------------------ hashing
    def digests(self, tokens: list[int], n_blocks: int | None = None) -> list[bytes]:
        """Chained digests of the first n_blocks full blocks of `tokens` (all full blocks by default)."""
        b = self.block_size
        n = len(tokens) // b if n_blocks is None else n_blocks
        out, parent = [], _ROOT
        for i in range(n):
            parent = hashlib.blake2b(parent + _pack(tokens[i * b:(i + 1) * b]), digest_size=16).digest()
            out.append(parent)
        return out

    # ------------------------------------------------------------------ lookup
    def lookup(self, tokens: list[int]) -> tuple[Entry | None, int, list[bytes]]:
        """-> (the longest entry that is a proper prefix of `tokens`, or None; the number of leading tokens
        whose full blocks an entry or a running prompt holds: a branch point past the entry when larger than
        its length; the digests of the full blocks before the last token)."""
        b = self.block_size
        digests = self.digests(tokens[:len(tokens) - 1])
        known = 0
        while known < len(digests) and (digests[known] in self.known or digests[known] in self.inflight):
            known += 1
        best = None
        for k in range(len(digests), -1, -1):
            key = digests[k - 1] if k else _ROOT
            for e in self.by_digest.get(key, ()):
                if e.length <= len(tokens) - 1 and tuple(tokens[k * b:e.length]) == e.tail and \
                        (best is None or e.length > best.length):
                    best = e
            if best is not None:
                break
        return best, known * b, digests

    def running(self, owner: object, digests: list[bytes]) -> None:
        """A prompt with these block digests is now being prefilled: later prompts that share them know."""
        self._inflight_of[id(owner)] = digests
        for d in digests:
            self.inflight[d] = self.inflight.get(d, 0) + 1

    def done(self, owner: object) -> None:
        """The prompt of `owner` left (finished, aborted or preempted)."""
        for d in self._inflight_of.pop(id(owner), ()):
            self.inflight[d] -= 1
            if not self.inflight[d]:
                del self.inflight[d]

    def record(self, n_tokens: int, entry: Entry | None) -> None:
        """Count a lookup of an admitted request (and mark its entry used)."""
        self.clock += 1
        self.stats.requests += 1
        self.stats.queries += n_tokens
        if entry is not None:
            self.stats.request_hits += 1
            self.stats.hits += entry.length
            entry.last_used = self.clock
            entry.uses += 1

    def superseded(self, entry: Entry) -> None:
        """A request restored from `entry` has left a longer snapshot of its own: that hit's use is spent."""
        if (entry.digest, entry.tail) in self.entries and self.entries[entry.digest, entry.tail] is entry:
            entry.uses -= 1

    def restore(self, entry: Entry, slot: int) -> bool:
        """Make the empty `slot` continue from the entry's snapshot. False when no page is free for the
        copy of its partial last page."""
        full = entry.length // self.block_size
        partial = entry.pages[full:]
        self._pinned = entry  # making room for the copy must not evict the entry being restored
        try:
            if partial and not self.free_pages_for(1):
                return False
        finally:
            self._pinned = None
        self.state.share_pages(slot, entry.pages[:full])
        if partial:
            self.state.append_page_copy(slot, partial[0])
        self.snapshots.load(entry.snapshot, slot)
        self.state.lengths[slot] = entry.length
        return True

    def snapshot_points(self, n_tokens: int, start: int, known: int) -> dict[int, int]:
        """Where the prefill of an n_tokens prompt, restored at `start`, leaves snapshots -> {position: uses
        to credit the entry with}; `known`: leading tokens whose full blocks some entry holds."""
        boundary = (n_tokens - 1) // self.block_size * self.block_size  # the last one before the last token
        if self.policy == "align":
            points = {boundary: 0}
        else:
            points = {n_tokens: 0}  # the whole prompt (for a next turn whose answer re-tokenizes differently)
            if known > start:  # a branch point: later requests with this prefix start there
                points[min(known, boundary)] = 1
        return {p: uses for p, uses in points.items() if p > start}

    @property
    def snapshots_answers(self) -> bool:
        """Whether a finished request leaves a snapshot of its prompt and answer."""
        return self.policy != "align"

    # ------------------------------------------------------------------ insertion
    def insert(self, slot: int, tokens: list[int], uses: int = 0) -> Entry | None:
        """Snapshot `slot`, whose state holds exactly `tokens`. Returns the entry (an existing one for the
        same tokens is only touched), or None when there is no room even after evicting."""
        self.clock += 1
        b = self.block_size
        n_full = len(tokens) // b
        digests = self.digests(tokens, n_full)
        key = (digests[-1] if digests else _ROOT, tuple(tokens[n_full * b:]))
        entry = self.entries.get(key)
        if entry is not None:
            entry.last_used = self.clock
            entry.uses += 1
            return entry
        held = self.state.pages_of(slot)
        needs_page = self.state.paged and len(tokens) % b != 0
        if not self.snapshots.free and not self.evict_one():
            return None
        if needs_page and not self.free_pages_for(1):
            return None
        row = self.snapshots.save(slot)
        pages = held[:n_full] if self.state.paged else []
        self.state.ref_pages(pages)
        if needs_page:
            (own,) = self.state.take_pages(1)
            self.state.copy_page(held[n_full], own)
            pages = pages + [own]
        entry = Entry(len(tokens), key[0], key[1], row, pages, digests, self.clock, uses)
        self.entries[key] = entry
        self.by_digest.setdefault(key[0], []).append(entry)
        for d in digests:
            self.known[d] = self.known.get(d, 0) + 1
        self._account()
        return entry

    # ------------------------------------------------------------------ eviction
    def evict_one(self) -> bool:
        """Drop the entry least worth keeping; False when there is none."""
        candidates = [e for e in self.entries.values() if e is not self._pinned]
        if not candidates:
            return False
        unused = [e for e in candidates if e.uses <= 0]
        entry = max(unused or candidates,
                    key=lambda e: (self.clock - e.last_used) / ((1 + e.length / 1024) * (1 + max(e.uses, 0))))
        self._drop(entry)
        self.stats.evictions += 1
        return True

    def clear(self) -> None:
        for entry in list(self.entries.values()):
            self._drop(entry)

    def free_pages_for(self, n: int) -> bool:
        """Evict entries until n pages are free; False if even an empty cache leaves fewer."""
        while self.state.free_blocks < n:
            if not self.evict_one():
                return False
        return True

    def _drop(self, entry: Entry) -> None:
        del self.entries[(entry.digest, entry.tail)]
        self.by_digest[entry.digest].remove(entry)
        if not self.by_digest[entry.digest]:
            del self.by_digest[entry.digest]
        for d in entry.digests:
            self.known[d] -= 1
            if not self.known[d]:
                del self.known[d]
        self.state.unref_pages(entry.pages)
        self.snapshots.release(entry.snapshot)
        self._account()

    def _account(self) -> None:
        self.stats.snapshots = len(self.entries)
        self.stats.snapshot_bytes = len(self.entries) * self.snapshots.row_bytes


def _pack(tokens: list[int]) -> bytes:
    return array("q", tokens).tobytes()
