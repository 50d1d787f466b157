"""Prometheus metrics under vLLM's names with the `sambay:` prefix (a vLLM dashboard carries over by
replacing `vllm:` with `sambay:`), labelled with `model_name`.

Engine gauges and the preemption counter are read from `Engine.stats()` when /metrics is scraped; request
counters and latency histograms are observed from each request's outputs as they stream.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sambay.engine import Engine, RequestOutput

PREFIX = "sambay:"
_LATENCY = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0,
            40.0, 80.0, 160.0, 640.0, 2560.0)
_TOKENS = tuple(2 ** k for k in range(0, 19))


class _EngineCollector:
    def __init__(self, engine: Engine, model_name: str):
        self.engine, self.model_name = engine, model_name

    def collect(self):
        stats = self.engine.stats()
        for name, doc, value in (
                ("num_requests_running", "Requests holding a state slot.", stats.num_running),
                ("num_requests_waiting", "Requests waiting for a state slot.", stats.num_waiting),
                ("kv_cache_usage_perc", "Share of the K/V cache pages in use (1 = full).", stats.kv_cache_usage)):
            g = GaugeMetricFamily(PREFIX + name, doc, labels=["model_name"])
            g.add_metric([self.model_name], value)
            yield g
        for name, doc, value in (
                ("num_preemptions", "Requests preempted (recomputed later).", stats.num_preemptions),
                ("prefix_cache_queries", "Prompt tokens looked up in the prefix cache.", stats.prefix_cache_queries),
                ("prefix_cache_hits", "Prompt tokens restored from the prefix cache.", stats.prefix_cache_hits)):
            c = CounterMetricFamily(PREFIX + name, doc, labels=["model_name"])
            c.add_metric([self.model_name], value)
            yield c
        g = GaugeMetricFamily(PREFIX + "prefix_cache_snapshot_bytes", "Memory of the prefix cache's state snapshots.",
                              labels=["model_name"])
        g.add_metric([self.model_name], stats.prefix_cache_bytes)
        yield g


class ServerMetrics:
    """The registry behind /metrics, and the per-request observations."""

    def __init__(self, engine: Engine, model_name: str):
        disable_created_metrics()  # the `_created` series only double the output (vLLM turns them off too)
        self.registry = CollectorRegistry()
        self.registry.register(_EngineCollector(engine, model_name))
        labels = {"model_name": model_name}

        def counter(name, doc, extra=()):
            c = Counter(PREFIX + name, doc, ["model_name", *extra], registry=self.registry)
            return c if extra else c.labels(**labels)

        def histogram(name, doc, buckets=_LATENCY):
            return Histogram(PREFIX + name, doc, ["model_name"], buckets=buckets, registry=self.registry).labels(**labels)

        self.model_name = model_name
        self.prompt_tokens = counter("prompt_tokens", "Prompt tokens processed.")
        self.generation_tokens = counter("generation_tokens", "Tokens generated.")
        self.request_success = counter("request_success", "Finished requests, by finish reason.", ["finished_reason"])
        self.ttft = histogram("time_to_first_token_seconds", "From arrival to the first generated token.")
        self.itl = histogram("inter_token_latency_seconds", "Between successive generated tokens of a request.")
        self.e2e = histogram("e2e_request_latency_seconds", "From arrival to the last token.")
        self.queue = histogram("request_queue_time_seconds", "From arrival to the first scheduled step.")
        self.prefill = histogram("request_prefill_time_seconds", "From the first scheduled step to the first token.")
        self.decode = histogram("request_decode_time_seconds", "From the first to the last generated token.")
        self.request_prompt_tokens = histogram("request_prompt_tokens", "Prompt tokens per request.", _TOKENS)
        self.request_generation_tokens = histogram("request_generation_tokens", "Generated tokens per request.", _TOKENS)

    def tracker(self, arrival: float) -> RequestTracker:
        """Observations of one completion; `arrival` is time.perf_counter() when the request came in."""
        return RequestTracker(self, arrival)


class RequestTracker:
    def __init__(self, metrics: ServerMetrics, arrival: float):
        self.m, self.arrival = metrics, arrival
        self.last_token: float | None = None
        self.counted_prompt = False

    def observe(self, out: RequestOutput) -> None:
        m, now = self.m, time.perf_counter()
        if out.delta_token_ids:
            m.generation_tokens.inc(len(out.delta_token_ids))
            if self.last_token is None:
                m.ttft.observe(now - self.arrival)
            else:
                m.itl.observe((now - self.last_token) / len(out.delta_token_ids))
            self.last_token = now
        if not self.counted_prompt and (out.delta_token_ids or out.finished):
            self.counted_prompt = True
            m.prompt_tokens.inc(len(out.prompt_token_ids))
        if out.finished:
            self._finished(out, now)

    def _finished(self, out: RequestOutput, now: float) -> None:
        m, t = self.m, out.metrics
        m.request_success.labels(model_name=m.model_name, finished_reason=out.finish_reason or "abort").inc()
        m.e2e.observe(now - self.arrival)
        m.request_prompt_tokens.observe(len(out.prompt_token_ids))
        m.request_generation_tokens.observe(len(out.token_ids))
        if t is not None and t.first_scheduled_time is not None:
            m.queue.observe(max(0.0, t.first_scheduled_time - self.arrival))
            if t.first_token_time is not None:
                m.prefill.observe(t.first_token_time - t.first_scheduled_time)
                m.decode.observe((t.last_token_time or t.first_token_time) - t.first_token_time)

    def aborted(self) -> None:
        """The client went away (or the server gave up) before the request finished."""
        m = self.m
        m.request_success.labels(model_name=m.model_name, finished_reason="abort").inc()
        m.e2e.observe(time.perf_counter() - self.arrival)
