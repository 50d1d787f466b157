"""SIGTERM drains the server: no new connections or requests, running requests finish, and those that outlast
--drain-timeout end with a clear error event."""

import json
import threading
import time

import httpx
import pytest
from serve_helpers import Server, write_chat_model


@pytest.fixture(scope="module")
def long_model_dir(tmp_path_factory):
    return write_chat_model(tmp_path_factory.mktemp("drain") / "long", max_seq_len=4096)


def stream_events(url: str, max_tokens: int, events: list, started: threading.Event) -> None:
    body = {"prompt": "the", "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", url + "/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                started.set()


def run_stream(server, max_tokens):
    events, started = [], threading.Event()
    thread = threading.Thread(target=stream_events, args=(server.url, max_tokens, events, started))
    thread.start()
    assert started.wait(60)
    return thread, events


def test_sigterm_lets_running_requests_finish_and_refuses_new_ones(long_model_dir, tmp_path):
    server = Server(long_model_dir, "--drain-timeout", "60", log=tmp_path / "log")
    thread, events = run_stream(server, 400)
    server.terminate()
    deadline = time.monotonic() + 10
    while True:  # the listening socket closes: new clients cannot connect
        try:
            httpx.get(server.base + "/health", timeout=1)
        except httpx.ConnectError:
            break
        assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
        time.sleep(0.05)
    thread.join(60)
    assert events[-1] == "[DONE]"
    last = json.loads(events[-2])
    assert last["choices"][0]["finish_reason"] == "length"
    assert server.proc.wait(30) in (0, -15)  # uvicorn re-raises the signal it handled


def test_requests_that_outlast_the_drain_timeout_end_with_an_error_event(long_model_dir, tmp_path):
    server = Server(long_model_dir, "--drain-timeout", "0.5", log=tmp_path / "log")
    thread, events = run_stream(server, 4000)
    server.terminate()
    thread.join(60)
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == 503 and "shut down before this request finished" in error["message"]
    assert server.proc.wait(30) in (0, -15)
