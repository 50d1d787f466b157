"""Training/validation batch sources for the trainer: packed shards (`sambay.data.loader`) or synthetic tokens.

`--data` accepts a shard directory / file / glob, a mixture JSON file `{"source": weight, ...}`,
`synthetic`, or `mqar:KEY=VALUE,...`. Synthetic data is a noisy permutation chain (x[t+1] = perm[x[t]] with
probability 0.9, else a uniform token): learnable (the loss falls from ln V towards ≈ 0.1·ln V + 0.33) yet
generated on the fly, for smoke tests and throughput benchmarks without a corpus. `mqar:` trains on
multi-query associative recall (`sambay.eval.mqar`), with the loss on the answer positions only (targets are
-100 elsewhere, which the model's loss ignores): e.g. `--data mqar:num_kv_pairs=16,seq_len=256` (keys:
num_kv_pairs, seq_len, vocab_size, power_a, random_non_queries; `mqar` alone takes the defaults), for
architecture comparisons that train in minutes. Its seq_len, when given, is the training length unless
--seq-len says otherwise (then they must agree); vocab_size defaults to the model's. Every batch of both
generated sources is a pure function of (seed, step, rank), so they resume exactly like the shard loader.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from sambay.data.sources import DataError

SYNTHETIC = "synthetic"
_VAL_STREAM = 0x76616C  # separates synthetic validation from training batches


def _markov_rows(rng: np.random.Generator, perm: np.ndarray, rows: int, length: int) -> np.ndarray:
    """(rows, length) int64 tokens of the noisy permutation chain."""
    vocab = perm.shape[0]
    out = np.empty((rows, length), dtype=np.int64)
    out[:, 0] = rng.integers(0, vocab, rows)
    follow = rng.random((rows, length)) < 0.9
    noise = rng.integers(0, vocab, (rows, length))
    for t in range(1, length):
        out[:, t] = np.where(follow[:, t], perm[out[:, t - 1]], noise[:, t])
    return out


def _document_ids(x: torch.Tensor, eos_id: int) -> torch.Tensor:
    from sambay.data.loader import document_ids

    return document_ids(x, eos_id)


class _GeneratedLoader:
    """Infinite generated batches with the `TokenLoader` interface: batch k of stream s is a pure function of
    (seed, s, k, rank), so resuming needs only the step. Subclasses define `batch` and `_identity` (the
    settings a resumed run must share)."""

    kind = "generated"

    def batch(self, step: int, stream: int = 0) -> tuple[torch.Tensor, ...]:
        raise NotImplementedError

    def _identity(self) -> dict:
        return {"seed": self.seed, "seq_len": self.seq_len}

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, ...]:
        out = self.batch(self.step)
        self.step += 1
        return out

    def state_dict(self) -> dict:
        return {**self._identity(), "step": self.step, "batch_size": self.batch_size, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        for key, now in self._identity().items():
            if state.get(key) != now:
                raise ValueError(f"{self.kind} loader state mismatch in {key!r}: saved {state.get(key)}, now {now}")
        self.step = int(state["step"])


class SyntheticLoader(_GeneratedLoader):
    """Infinite synthetic training batches (a random Markov chain over the vocabulary)."""

    kind = "synthetic"

    def __init__(self, vocab_size: int, seq_len: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1, document_ids: bool = False, eos_id: int | None = None):
        self.vocab_size, self.seq_len, self.batch_size = vocab_size, seq_len, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.perm = np.random.default_rng([seed, 0]).permutation(vocab_size)
        self.eos_id = eos_id if eos_id is not None else 0
        self.document_ids = document_ids
        self.step = 0

    def batch(self, step: int, stream: int = 0) -> tuple[torch.Tensor, ...]:
        rng = np.random.default_rng([self.seed, stream, step, self.rank])
        buf = torch.from_numpy(_markov_rows(rng, self.perm, self.batch_size, self.seq_len + 1))
        x, y = buf[:, :-1].contiguous(), buf[:, 1:].contiguous()
        return (x, y, _document_ids(x, self.eos_id)) if self.document_ids else (x, y)

    def _identity(self) -> dict:
        return {"synthetic": True, "seed": self.seed, "seq_len": self.seq_len}


class GeneratedValidation:
    """A fixed, re-iterable set of validation batches from a generated loader (a stream disjoint from
    training): `num_batches` batches of `src`, a loader built for the validation length and batch."""

    def __init__(self, src: _GeneratedLoader, num_batches: int):
        self.src, self.num_batches = src, num_batches

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self):
        return (self.src.batch(k, stream=_VAL_STREAM) for k in range(self.num_batches))


def synthetic_validation(train: SyntheticLoader, seq_len: int, batch_size: int, num_batches: int) -> GeneratedValidation:
    return GeneratedValidation(SyntheticLoader(train.vocab_size, seq_len, batch_size, seed=train.seed, rank=train.rank,
                                               world_size=train.world_size, document_ids=train.document_ids,
                                               eos_id=train.eos_id), num_batches)


def parse_source(data: str):
    """A source for `TokenLoader`: a mixture mapping for `*.json` files, else the path/glob itself."""
    p = Path(data)
    if p.suffix == ".json" and p.is_file():
        try:
            mixture = json.loads(p.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise DataError(f"{data}: a mixture file must be JSON {{source: weight}} ({e})") from None
        if not isinstance(mixture, dict) or not mixture:
            raise DataError(f"{data}: a mixture file must be a non-empty JSON object {{source: weight}}")
        base = p.parent
        return {str(base / k) if not Path(k).is_absolute() and (base / k).exists() else k: float(w)
                for k, w in mixture.items()}
    return data


MQAR = "mqar"
# key: (type, default); seq_len None: the training length; vocab_size None: the model's vocabulary
MQAR_KEYS = {"num_kv_pairs": (int, 8), "seq_len": (int, None), "vocab_size": (int, None), "power_a": (float, 0.01),
             "random_non_queries": (bool, True)}


def is_mqar(data: str) -> bool:
    return data == MQAR or data.startswith(MQAR + ":")


def parse_mqar(data: str) -> dict:
    """The settings of an `mqar[:KEY=VALUE,...]` source, defaults filled in. Raises DataError."""
    if not is_mqar(data):
        raise DataError(f"not an mqar source: {data!r}")
    spec = {key: default for key, (_, default) in MQAR_KEYS.items()}
    body = data[len(MQAR) + 1:]
    for item in filter(None, (part.strip() for part in body.split(","))):
        key, sep, value = (x.strip() for x in item.partition("="))
        if not sep or not key:
            raise DataError(f"--data {data}: expected KEY=VALUE, got {item!r} (keys: {', '.join(MQAR_KEYS)})")
        if key not in MQAR_KEYS:
            raise DataError(f"--data {data}: unknown mqar key {key!r} (keys: {', '.join(MQAR_KEYS)})")
        kind = MQAR_KEYS[key][0]
        try:
            if kind is bool:
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                spec[key] = value.lower() in ("true", "1")
            else:
                spec[key] = kind(value)
        except ValueError:
            raise DataError(f"--data {data}: mqar {key}={value!r} is not a valid {kind.__name__}") from None
    return spec


def data_seq_len(data: str) -> int | None:
    """The training length a `--data` source fixes (an mqar source's seq_len), else None."""
    return parse_mqar(data)["seq_len"] if is_mqar(data) else None


class MQARLoader(_GeneratedLoader):
    """Infinite MQAR training batches (x, targets with -100 off the answers)."""

    kind = "mqar"

    def __init__(self, spec: dict, vocab_size: int, seq_len: int, batch_size: int, *, seed: int = 0, rank: int = 0,
                 world_size: int = 1):
        from sambay.eval.mqar import check_mqar_args

        self.spec = {**spec, "seq_len": seq_len, "vocab_size": spec["vocab_size"] or vocab_size}
        if self.spec["vocab_size"] > vocab_size:
            raise DataError(f"mqar vocab_size {self.spec['vocab_size']} exceeds the model's vocabulary ({vocab_size})")
        try:
            check_mqar_args(self.spec["vocab_size"], seq_len, self.spec["num_kv_pairs"], self.spec["power_a"],
                            batch_size)
        except ValueError as e:
            raise DataError(f"--data mqar: {e}") from None
        self.seq_len, self.batch_size = seq_len, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.step = 0

    def batch(self, step: int, stream: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        from sambay.eval.mqar import mqar_batch

        s = self.spec
        return mqar_batch(self.batch_size, s["vocab_size"], self.seq_len, s["num_kv_pairs"], s["power_a"],
                          seed=[self.seed, stream, step, self.rank], random_non_queries=s["random_non_queries"])

    def _identity(self) -> dict:
        return {"mqar": dict(self.spec), "seed": self.seed, "seq_len": self.seq_len}


def mqar_validation(train: MQARLoader, seq_len: int, batch_size: int, num_batches: int) -> GeneratedValidation:
    """At another length (the 2x validation) the same number of pairs is spread over the longer sequence."""
    spec = {**train.spec, "seq_len": None}
    return GeneratedValidation(MQARLoader(spec, train.spec["vocab_size"], seq_len, batch_size, seed=train.seed,
                                          rank=train.rank, world_size=train.world_size), num_batches)


def _mqar_loaders(cfg, model_config, seq_len: int, micro_batch: int, rank: int, world_size: int):
    spec = parse_mqar(cfg.data)
    if spec["seq_len"] is not None and spec["seq_len"] != seq_len:
        raise DataError(f"--data {cfg.data}: seq_len={spec['seq_len']} but the training length is {seq_len} "
                        f"(--seq-len); give one of them, or the same value")
    if cfg.val_data:
        raise DataError("--val-data is for shard data; an mqar source validates on its own held-out stream")
    train = MQARLoader(spec, model_config.vocab_size, seq_len, micro_batch, seed=cfg.seed, rank=rank,
                       world_size=world_size)
    vals = {"val_loss": mqar_validation(train, seq_len, micro_batch, cfg.eval_batches)}
    if cfg.eval_2x:
        vals["val_loss_2x"] = mqar_validation(train, 2 * seq_len, max(1, micro_batch // 2), cfg.eval_batches)
    return train, vals


def build_loaders(cfg, model_config, seq_len: int, micro_batch: int, rank: int, world_size: int):
    """(train loader, {"val_loss": val batches at 1x, "val_loss_2x": at 2x} or {}) for this rank."""
    if is_mqar(cfg.data):
        return _mqar_loaders(cfg, model_config, seq_len, micro_batch, rank, world_size)
    eos = model_config.eos_token_id
    if cfg.data == SYNTHETIC:
        train = SyntheticLoader(model_config.vocab_size, seq_len, micro_batch, seed=cfg.seed, rank=rank,
                                world_size=world_size, document_ids=cfg.document_ids, eos_id=eos)
        vals = {"val_loss": synthetic_validation(train, seq_len, micro_batch, cfg.eval_batches)}
        if cfg.eval_2x:
            vals["val_loss_2x"] = synthetic_validation(train, 2 * seq_len, max(1, micro_batch // 2),
                                                      cfg.eval_batches)
        return train, vals
    from sambay.data.loader import MissingEOSError, TokenLoader, ValidationLoader

    def make(cls, *args, **kwargs):
        # the prepared data's manifest names its EOS id; fall back to the model's only for bare shards
        try:
            return cls(*args, **kwargs, document_ids=cfg.document_ids, vocab_size=model_config.vocab_size)
        except MissingEOSError:  # raised only with document_ids=True
            if eos is None:
                raise
            return cls(*args, **kwargs, document_ids=True, eos_id=eos, vocab_size=model_config.vocab_size)

    train = make(TokenLoader, parse_source(cfg.data), seq_len, micro_batch, seed=cfg.seed, rank=rank,
                 world_size=world_size)
    vals = {}
    if cfg.val_data:
        # ArchScale validates at 1x and 2x the training length with half the sequences per batch at 2x
        shapes = {"val_loss": (seq_len, micro_batch)}
        if cfg.eval_2x:
            shapes["val_loss_2x"] = (2 * seq_len, max(1, micro_batch // 2))
        for key, (t, b) in shapes.items():
            vals[key] = make(ValidationLoader, cfg.val_data, t, b, rank=rank, world_size=world_size,
                             max_batches=cfg.eval_batches)
    return train, vals
