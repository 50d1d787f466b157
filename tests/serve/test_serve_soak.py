"""Soak (slow; its own CI step): 64 concurrent streams against one server for SAMBAY_SOAK_SECONDS (default 60):
no errors, every stream complete, and the server's resident memory flat once warm."""

import asyncio
import json
import os
import random
import time

import httpx
import pytest
from serve_helpers import Server

pytestmark = pytest.mark.slow


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


async def worker(client, seed: int, stop_at: float, stats: dict):
    rng = random.Random(seed)
    while time.monotonic() < stop_at:
        n = rng.randint(8, 48)
        body = {"prompt": "the quick brown fox " * rng.randint(1, 6), "max_tokens": n, "temperature": 0.8,
                "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
        try:
            async with client.stream("POST", "/v1/completions", json=body) as r:
                if r.status_code != 200:
                    stats["errors"].append(f"status {r.status_code}: {await r.aread()}")
                    continue
                usage = None
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        event = json.loads(line[6:])
                        if "error" in event:
                            stats["errors"].append(event["error"]["message"])
                        usage = event.get("usage") or usage
                if usage is None or usage["completion_tokens"] != n:
                    stats["errors"].append(f"incomplete stream: {usage}")
                stats["requests"] += 1
        except httpx.HTTPError as e:
            stats["errors"].append(repr(e))


def test_64_concurrent_streams_soak_without_errors_or_memory_growth(chat_model_dir, tmp_path):
    seconds = float(os.environ.get("SAMBAY_SOAK_SECONDS", "60"))
    server = Server(chat_model_dir, "--max-num-seqs", "64", "--max-num-batched-tokens", "512", log=tmp_path / "log")
    try:
        stats = {"requests": 0, "errors": []}
        samples = []

        async def main():
            start = time.monotonic()
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            async with httpx.AsyncClient(base_url=server.base, timeout=120, limits=limits) as client:
                tasks = [asyncio.create_task(worker(client, i, start + seconds, stats)) for i in range(64)]
                while not all(t.done() for t in tasks):
                    samples.append((time.monotonic() - start, rss_bytes(server.proc.pid)))
                    await asyncio.sleep(1)
                await asyncio.gather(*tasks)

        asyncio.run(main())
        assert not stats["errors"], stats["errors"][:5]
        assert stats["requests"] >= 64
        warm = [rss for t, rss in samples if t >= seconds / 3]
        growth = (warm[-1] - warm[0]) / warm[0]
        assert growth < 0.05, f"resident memory grew {growth:.1%} while warm: {warm[0]} -> {warm[-1]} bytes"
        assert httpx.get(server.base + "/health").status_code == 200
        metrics = httpx.get(server.base + "/metrics").text
        assert 'sambay:num_requests_running{model_name="tiny-chat"} 0.0' in metrics
    finally:
        server.stop()
