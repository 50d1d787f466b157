"""The numbers of `sambay bench serve`, by vLLM's definitions (`vllm bench serve`), from per-request records.

Per successful request: TTFT, the time from sending to the first chunk carrying text; E2E latency, from
sending to the end of the stream; TPOT = (latency - TTFT) / (output tokens - 1), for requests of more than one
output token; ITL, each gap between successive text-carrying chunks (all requests' gaps pooled). Throughputs
divide by the benchmark's duration (first send to last completion); goodput counts the requests meeting every
SLO given. Failed requests count only as failed. Latencies are reported in milliseconds.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field

import numpy as np

SLO_METRICS = ("ttft", "tpot", "e2el")  # the names --goodput accepts, each in ms


@dataclass
class RequestRecord:
    """One request's outcome. Times in seconds: `start` from the beginning of the run (when it was sent,
    after any wait for a concurrency slot); `ttft`, `itl` and `latency` from its own send."""

    prompt_len: int | None  # prompt tokens: the server's usage count, else the dataset's, else unknown
    max_tokens: int
    success: bool = False
    error: str | None = None
    start: float = 0.0
    ttft: float | None = None  # None when no chunk carried text
    itl: list[float] = field(default_factory=list)
    latency: float | None = None
    output_tokens: int = 0  # the usage block's completion_tokens, else the text-carrying chunks

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first (s); None unless it succeeded with > 1 token."""
        if not self.success or self.ttft is None or self.latency is None or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


def parse_percentiles(text: str) -> list[float]:
    """'50,90,99' -> [50.0, 90.0, 99.0]; ValueError unless each is a number in [0, 100]."""
    out = []
    for part in text.split(","):
        try:
            p = float(part)
        except ValueError:
            raise ValueError(f"not a number: {part.strip()!r} (expected e.g. 50,90,99)") from None
        if not 0 <= p <= 100:
            raise ValueError(f"percentile {part.strip()} is not in [0, 100]")
        out.append(p)
    return sorted(set(out))


def parse_goodput(items: list[str]) -> dict[str, float]:
    """['ttft:200', 'tpot:50'] -> {'ttft': 200.0, 'tpot': 50.0} (ms); ValueError on another form."""
    slos: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or name not in SLO_METRICS:
            raise ValueError(f"{item!r} is not NAME:MS with NAME one of {', '.join(SLO_METRICS)} (e.g. ttft:200)")
        if name in slos:
            raise ValueError(f"{name} is given twice")
        try:
            ms = float(value)
        except ValueError:
            raise ValueError(f"{item!r}: {value!r} is not a number of milliseconds") from None
        if not (ms > 0 and math.isfinite(ms)):
            raise ValueError(f"{item!r}: the SLO must be a positive number of milliseconds")
        slos[name] = ms
    return slos


def pkey(p: float) -> str:
    """The key of percentile `p`: 'p99', 'p99.9'."""
    return f"p{p:g}"


def summarize(values_s: list[float], percentiles: list[float]) -> dict[str, float | None]:
    """mean, median, std and each percentile (linear interpolation) of `values_s` (seconds), in ms; all
    None when there are no values."""
    keys = ["mean", "median", "std", *(pkey(p) for p in percentiles)]
    if not values_s:
        return dict.fromkeys(keys)
    ms = np.asarray(values_s, dtype=np.float64) * 1000.0
    out = {"mean": float(ms.mean()), "median": float(np.median(ms)), "std": float(ms.std())}
    out.update({pkey(p): float(np.percentile(ms, p)) for p in percentiles})
    return out


def _meets(r: RequestRecord, slos: dict[str, float]) -> bool:
    if "ttft" in slos and (r.ttft is None or r.ttft * 1000.0 > slos["ttft"]):
        return False
    if "tpot" in slos and r.tpot is not None and r.tpot * 1000.0 > slos["tpot"]:
        return False  # a one-token request has no TPOT to miss (vLLM counts it as 0)
    return not ("e2el" in slos and r.latency * 1000.0 > slos["e2el"])


def compute_metrics(records: list[RequestRecord], duration: float, percentiles: list[float] = (50, 90, 99),
                    slos: dict[str, float] | None = None) -> dict:
    """The run's numbers: counts, token totals, throughputs (per second of `duration`), goodput (requests/s
    meeting every SLO in `slos`, ms; None without SLOs) and the latency summaries in ms."""
    done = [r for r in records if r.success]
    input_tokens = sum(r.prompt_len or 0 for r in done)
    output_tokens = sum(r.output_tokens for r in done)
    rate = (lambda x: x / duration) if duration > 0 else (lambda x: None)
    errors = collections.Counter(r.error for r in records if not r.success)
    return {
        "completed": len(done),
        "failed": len(records) - len(done),
        "duration_s": duration,
        "total_input_tokens": input_tokens,
        "input_tokens_unknown": sum(r.prompt_len is None for r in done),  # text prompts the server gave no usage for
        "total_output_tokens": output_tokens,
        "request_throughput": rate(len(done)),
        "output_throughput": rate(output_tokens),
        "total_token_throughput": rate(input_tokens + output_tokens),
        "slos_ms": dict(slos or {}),
        "good_requests": sum(_meets(r, slos) for r in done) if slos else None,
        "goodput": rate(sum(_meets(r, slos) for r in done)) if slos else None,
        "ttft_ms": summarize([r.ttft for r in done if r.ttft is not None], percentiles),
        "tpot_ms": summarize([r.tpot for r in done if r.tpot is not None], percentiles),
        "itl_ms": summarize([gap for r in done for gap in r.itl], percentiles),
        "e2el_ms": summarize([r.latency for r in done], percentiles),
        "errors": [{"error": e, "count": n} for e, n in errors.most_common()],
    }


def per_request(records: list[RequestRecord]) -> dict[str, list]:
    """The per-request arrays of the JSON file, in dataset order (ms; None where a request has no value)."""
    ms = lambda s: None if s is None else s * 1000.0
    return {
        "start_s": [r.start for r in records],
        "success": [r.success for r in records],
        "errors": [r.error for r in records],
        "input_lens": [r.prompt_len for r in records],
        "output_lens": [r.output_tokens if r.success else None for r in records],
        "max_tokens": [r.max_tokens for r in records],
        "ttfts_ms": [ms(r.ttft) for r in records],
        "tpots_ms": [ms(r.tpot) for r in records],
        "itls_ms": [[gap * 1000.0 for gap in r.itl] for r in records],
        "e2els_ms": [ms(r.latency) for r in records],
    }


_SECTIONS = (("ttft_ms", "Time to first token", "TTFT"), ("tpot_ms", "Time per output token (after the first)", "TPOT"),
             ("itl_ms", "Inter-token latency", "ITL"), ("e2el_ms", "End-to-end latency", "E2EL"))
_WIDTH = 56


def _num(value, fmt: str = ",.2f") -> str:
    return "n/a" if value is None else format(value, fmt)


def format_report(metrics: dict, settings: list[tuple[str, object]], max_errors: int = 3) -> str:
    """The printed report: `settings` (label, value) first, then the counts, throughputs and latencies."""
    lines = ["=" * _WIDTH, " Serving benchmark ".center(_WIDTH, "="), "=" * _WIDTH]
    row = lambda label, value: lines.append(f"{label + ':':<40}{value:>{_WIDTH - 40}}")
    for label, value in settings:
        row(label, str(value))
    lines.append("-" * _WIDTH)
    m = metrics
    row("Successful requests", str(m["completed"]))
    row("Failed requests", str(m["failed"]))
    row("Benchmark duration (s)", _num(m["duration_s"]))
    input_note = f" ({m['input_tokens_unknown']} unknown)" if m["input_tokens_unknown"] else ""
    row("Total input tokens", f"{m['total_input_tokens']:,}{input_note}")
    row("Total generated tokens", f"{m['total_output_tokens']:,}")
    row("Request throughput (req/s)", _num(m["request_throughput"]))
    row("Output token throughput (tok/s)", _num(m["output_throughput"]))
    row("Total token throughput (tok/s)", _num(m["total_token_throughput"]))
    if m["slos_ms"]:
        row("Goodput SLOs (ms)", " ".join(f"{k}<={v:g}" for k, v in m["slos_ms"].items()))
        row("Request goodput (req/s)", _num(m["goodput"]))
    for key, title, short in _SECTIONS:
        lines.append(f" {title} ".center(_WIDTH, "-"))
        summary = m[key]
        row(f"Mean {short} (ms)", _num(summary["mean"]))
        row(f"Median {short} (ms)", _num(summary["median"]))
        for name in summary:
            if name.startswith("p") and name != "p50":  # p50 is the median above
                row(f"P{name[1:]} {short} (ms)", _num(summary[name]))
    if m["errors"]:
        lines.append(" Errors ".center(_WIDTH, "-"))
        for e in m["errors"][:max_errors]:
            lines.append(f"{e['count']:>5} x {e['error']}"[:200])
        if len(m["errors"]) > max_errors:
            lines.append(f"      ... and {len(m['errors']) - max_errors} other error messages")
    lines.append("=" * _WIDTH)
    return "\n".join(lines)
