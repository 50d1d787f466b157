"""What `sambay bench serve` sends and when: its datasets (random token prompts, a JSONL file) and its arrival
schedule (gamma-distributed gaps at a mean rate; all at once for an infinite rate).

Everything random is seeded, and the dataset and the schedule draw from separate streams of the one seed,
so changing the request rate sends the same prompts.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAX_JSONL_BYTES = 256 * 2**20  # read no more of a dataset file than this (a prompt set, not a corpus)

_DATASET_STREAM, _ARRIVAL_STREAM = 0, 1  # the seed's two independent streams (numpy SeedSequence entropy)


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and line."""


@dataclass(frozen=True)
class BenchRequest:
    """One request to send.

    prompt: text, or token ids sent as they are. prompt_len: its tokens when known (token-id prompts), else
    None (the server's usage block tells). max_tokens: the output tokens asked for.
    """

    prompt: str | list[int]
    prompt_len: int | None
    max_tokens: int


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng((seed, stream))


def length_bounds(length: int, range_ratio: float) -> tuple[int, int]:
    """The integers within [length * (1 - range_ratio), length * (1 + range_ratio)], at least 1."""
    low = max(1, math.ceil(length * (1 - range_ratio)))
    high = max(low, math.floor(length * (1 + range_ratio)))
    return low, high


def random_requests(num: int, input_len: int, output_len: int, vocab_size: int, range_ratio: float = 0.0,
                    seed: int = 0) -> list[BenchRequest]:
    """`num` prompts of random token ids in [0, vocab_size); prompt and output lengths uniform over
    `length_bounds(input_len | output_len, range_ratio)`."""
    rng = _rng(seed, _DATASET_STREAM)
    in_low, in_high = length_bounds(input_len, range_ratio)
    out_low, out_high = length_bounds(output_len, range_ratio)
    in_lens = rng.integers(in_low, in_high + 1, size=num)
    out_lens = rng.integers(out_low, out_high + 1, size=num)
    return [BenchRequest(rng.integers(0, vocab_size, size=int(n)).tolist(), int(n), int(m))
            for n, m in zip(in_lens, out_lens)]


def jsonl_requests(path: Path | str, output_len: int, limit: int | None = None,
                   max_bytes: int = MAX_JSONL_BYTES) -> list[BenchRequest]:
    """The requests of a JSONL file, one JSON object a line: {"prompt": str | list[int], "max_tokens": int
    (optional, else `output_len`)}; other keys are ignored and blank lines skipped. The first `limit`
    requests (all when None). Raises DatasetError naming the line of the first bad one, or when the file
    holds more than `max_bytes` before `limit` requests are read."""
    path = Path(path)
    requests: list[BenchRequest] = []
    read = 0
    try:
        f = path.open("rb")
    except OSError as e:
        raise DatasetError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        for lineno in itertools.count(1):
            if limit is not None and len(requests) >= limit:
                break
            # bounded read: a file without newlines cannot make one line larger than the budget
            raw = f.readline(max_bytes - read + 1)
            if not raw:
                break
            read += len(raw)
            if read > max_bytes:
                raise DatasetError(f"{path}: more than {max_bytes / 2**20:.0f} MiB; pass --num-prompts to read "
                                   "fewer lines, or split the file")
            request = _parse_line(raw, output_len, f"{path}:{lineno}")
            if request is not None:
                requests.append(request)
    if not requests:
        raise DatasetError(f"{path}: no requests (the file is empty)")
    return requests


def _parse_line(raw: bytes, output_len: int, where: str) -> BenchRequest | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DatasetError(f"{where}: not UTF-8 text") from None
    if not text.strip():
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: not JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected a JSON object with a \"prompt\", got {type(obj).__name__}")
    if "prompt" not in obj:
        raise DatasetError(f"{where}: no \"prompt\" key")
    prompt = obj["prompt"]
    if isinstance(prompt, str):
        if not prompt:
            raise DatasetError(f"{where}: \"prompt\" is empty")
        prompt_len = None
    elif isinstance(prompt, list):
        # bool is an int subclass; true/false in a token list is a mistake, not ids 1/0
        if not prompt or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt):
            raise DatasetError(f"{where}: \"prompt\" must be a non-empty string or a non-empty list of token ids "
                               "(integers >= 0)")
        prompt_len = len(prompt)
    else:
        raise DatasetError(f"{where}: \"prompt\" must be a string or a list of token ids, got "
                           f"{type(prompt).__name__}")
    max_tokens = obj.get("max_tokens", output_len)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise DatasetError(f"{where}: \"max_tokens\" must be an integer >= 1, got {max_tokens!r}")
    return BenchRequest(prompt, prompt_len, max_tokens)


def arrival_times(num: int, rate: float, burstiness: float = 1.0, seed: int = 0) -> np.ndarray:
    """Send times (num,) in seconds from the start of the run: the first at 0, then gaps drawn from a gamma
    distribution of shape `burstiness` and mean 1 / `rate` (requests/s). burstiness 1 is a Poisson process;
    below 1 the requests come in bursts, above 1 more evenly. An infinite rate sends everything at 0."""
    if math.isinf(rate):
        return np.zeros(num)
    gaps = _rng(seed, _ARRIVAL_STREAM).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=max(num - 1, 0))
    return np.concatenate([[0.0], np.cumsum(gaps)])[:num]
