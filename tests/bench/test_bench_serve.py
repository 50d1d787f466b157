"""`sambay bench serve`: arrivals, datasets, SSE parsing, metrics, CLI errors, and one whole run against a tiny
OpenAI-style server (FastAPI under uvicorn on a loopback port). Nothing here times anything."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi import FastAPI, Request  # module level: the endpoints' annotations are resolved by name
from fastapi.responses import JSONResponse, StreamingResponse
from serve.serve_helpers import app_in_thread, free_port

from sambay.bench import serve as bench
from sambay.bench import serve_load as load
from sambay.bench.serve_metrics import RequestRecord, compute_metrics, format_report, parse_goodput
from sambay.cli.main import main

# ---------------------------------------------------------------------------------------------- arrivals


def test_arrivals_have_mean_gap_one_over_the_rate_and_poisson_variance():
    t = load.arrival_times(100_000, rate=4.0, burstiness=1.0, seed=1)
    gaps = np.diff(t)
    assert t.shape == (100_000,) and t[0] == 0.0 and (gaps >= 0).all()
    assert gaps.mean() == pytest.approx(0.25, rel=0.02)
    assert gaps.var() == pytest.approx(0.25**2, rel=0.05)  # exponential: variance = mean^2


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_burstiness_is_the_gamma_shape(burstiness):
    gaps = np.diff(load.arrival_times(100_000, rate=10.0, burstiness=burstiness, seed=2))
    assert gaps.mean() == pytest.approx(0.1, rel=0.03)  # the rate does not depend on the burstiness
    # gamma with shape k and mean m has variance m^2 / k
    assert gaps.var() == pytest.approx(0.1**2 / burstiness, rel=0.06)


def test_arrivals_are_seeded_and_an_infinite_rate_sends_everything_at_once():
    a, b = load.arrival_times(50, 3.0, 0.5, seed=7), load.arrival_times(50, 3.0, 0.5, seed=7)
    assert np.array_equal(a, b) and not np.array_equal(a, load.arrival_times(50, 3.0, 0.5, seed=8))
    assert np.array_equal(load.arrival_times(5, float("inf"), 1.0, seed=0), np.zeros(5))
    assert load.arrival_times(1, 2.0).tolist() == [0.0] and load.arrival_times(0, 2.0).shape == (0,)


# ---------------------------------------------------------------------------------------------- datasets


def test_length_bounds_are_the_integers_inside_the_range():
    assert load.length_bounds(10, 0.25) == (8, 12)  # [7.5, 12.5]
    assert load.length_bounds(100, 0.0) == (100, 100)
    assert load.length_bounds(1, 0.9) == (1, 1)  # never below one token


def test_random_dataset_lengths_stay_in_bounds_and_are_seeded():
    reqs = load.random_requests(300, input_len=100, output_len=20, vocab_size=50, range_ratio=0.3, seed=3)
    in_lens = [r.prompt_len for r in reqs]
    assert all(len(r.prompt) == r.prompt_len for r in reqs)
    assert min(in_lens) >= 70 and max(in_lens) <= 130 and len(set(in_lens)) > 20
    assert all(14 <= r.max_tokens <= 26 for r in reqs)
    ids = np.concatenate([r.prompt for r in reqs])
    assert ids.min() >= 0 and ids.max() < 50
    assert reqs == load.random_requests(300, 100, 20, 50, 0.3, seed=3)
    assert reqs != load.random_requests(300, 100, 20, 50, 0.3, seed=4)
    fixed = load.random_requests(10, 7, 3, 1000, 0.0, seed=0)
    assert {r.prompt_len for r in fixed} == {7} and {r.max_tokens for r in fixed} == {3}


def test_jsonl_dataset_reads_text_and_token_prompts(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "hello there"}\n\n{"prompt": [1, 2, 3], "max_tokens": 9, "id": "x"}\n'
                    '  \n{"prompt": "third", "max_tokens": 1}\n')
    reqs = load.jsonl_requests(path, output_len=5)
    assert reqs == [load.BenchRequest("hello there", None, 5), load.BenchRequest([1, 2, 3], 3, 9),
                    load.BenchRequest("third", None, 1)]
    assert load.jsonl_requests(path, output_len=5, limit=2) == reqs[:2]


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a"', "not JSON"),
    ('["a"]', "expected a JSON object"),
    ('{"text": "a"}', 'no "prompt"'),
    ('{"prompt": ""}', "is empty"),
    ('{"prompt": 5}', "must be a string or a list"),
    ('{"prompt": [1, -2]}', "integers >= 0"),
    ('{"prompt": [1, true]}', "integers >= 0"),
    ('{"prompt": "a", "max_tokens": 0}', '"max_tokens" must be an integer >= 1'),
    ('{"prompt": "a", "max_tokens": "5"}', '"max_tokens" must be an integer >= 1'),
])
def test_a_bad_jsonl_line_is_named_by_its_number(tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "fine"}\n\n' + line + "\n")
    with pytest.raises(load.DatasetError) as e:
        load.jsonl_requests(path, 4)
    assert f"{path}:3:" in str(e.value) and message in str(e.value)


def test_jsonl_reads_a_bounded_number_of_bytes(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text('{"prompt": "' + "x" * 5000 + '"}\n')  # one long line, more than the budget
    with pytest.raises(load.DatasetError, match="more than"):
        load.jsonl_requests(path, 4, max_bytes=1000)
    assert len(load.jsonl_requests(path, 4, limit=1)) == 1
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(load.DatasetError, match="no requests"):
        load.jsonl_requests(tmp_path / "empty.jsonl", 4)
    with pytest.raises(load.DatasetError, match="cannot read"):
        load.jsonl_requests(tmp_path / "missing.jsonl", 4)


# ---------------------------------------------------------------------------------------------- metrics


def _records():
    a = RequestRecord(prompt_len=10, max_tokens=3, success=True, ttft=0.1, itl=[0.02, 0.04], latency=0.16,
                      output_tokens=3)  # TPOT (0.16 - 0.1) / 2 = 0.03
    b = RequestRecord(prompt_len=20, max_tokens=1, success=True, ttft=0.3, latency=0.3, output_tokens=1)  # no TPOT
    c = RequestRecord(prompt_len=30, max_tokens=8, error="HTTP 500: boom", latency=0.01)
    return [a, b, c]


def test_metrics_follow_vllm_definitions_on_known_records():
    m = compute_metrics(_records(), duration=2.0, percentiles=[50, 90, 99])
    assert (m["completed"], m["failed"]) == (2, 1)
    assert (m["total_input_tokens"], m["total_output_tokens"]) == (30, 4)  # the failed request counts nowhere
    assert m["request_throughput"] == pytest.approx(1.0)
    assert m["output_throughput"] == pytest.approx(2.0)
    assert m["total_token_throughput"] == pytest.approx(17.0)
    ttft = m["ttft_ms"]
    assert ttft["mean"] == pytest.approx(200) and ttft["median"] == pytest.approx(200)
    assert ttft["p50"] == pytest.approx(200) and ttft["p90"] == pytest.approx(280) and ttft["p99"] == pytest.approx(298)
    assert ttft["std"] == pytest.approx(100)
    assert m["tpot_ms"]["mean"] == pytest.approx(30) and m["tpot_ms"]["p99"] == pytest.approx(30)
    assert m["itl_ms"]["mean"] == pytest.approx(30) and m["itl_ms"]["p90"] == pytest.approx(38)
    assert m["e2el_ms"]["mean"] == pytest.approx(230) and m["e2el_ms"]["median"] == pytest.approx(230)
    assert m["errors"] == [{"error": "HTTP 500: boom", "count": 1}]
    assert m["goodput"] is None and m["good_requests"] is None


@pytest.mark.parametrize("slos, good", [
    (["ttft:150"], 1),  # a only
    (["tpot:20"], 1),  # a misses (30 ms); b has one token, so no TPOT to miss
    (["e2el:200"], 1),  # b misses (300 ms)
    (["ttft:400", "tpot:40", "e2el:400"], 2),
    (["ttft:50"], 0),
])
def test_goodput_counts_requests_meeting_every_slo(slos, good):
    m = compute_metrics(_records(), duration=2.0, slos=parse_goodput(slos))
    assert m["good_requests"] == good and m["goodput"] == pytest.approx(good / 2.0)


def test_metrics_of_a_run_where_everything_failed_are_null_not_errors():
    m = compute_metrics([_records()[2]], duration=0.5, percentiles=[99])
    assert m["completed"] == 0 and m["ttft_ms"] == {"mean": None, "median": None, "std": None, "p99": None}
    text = format_report(m, [("Model", "x")])
    assert "Successful requests:" in text and "n/a" in text and "HTTP 500: boom" in text


def test_goodput_syntax_errors_say_what_is_wrong():
    assert parse_goodput(["ttft:200", "e2el:1.5e3"]) == {"ttft": 200.0, "e2el": 1500.0}
    for bad, msg in [("ttft=5", "NAME:MS"), ("itl:5", "NAME:MS"), ("ttft:x", "not a number"), ("ttft:0", "positive")]:
        with pytest.raises(ValueError, match=msg):
            parse_goodput([bad])
    with pytest.raises(ValueError, match="twice"):
        parse_goodput(["ttft:1", "ttft:2"])


# ---------------------------------------------------------------------------------------------- SSE


def _chunk(text, finish=None):
    return "data: " + json.dumps({"id": "cmpl-1", "object": "text_completion", "model": "m",
                                  "choices": [{"index": 0, "text": text, "finish_reason": finish}]})


RECORDED = [  # an OpenAI-style stream as the server writes it, line by line, with each line's arrival time
    (": keep-alive", 0.05), (_chunk(" The"), 0.10), ("", 0.10), (_chunk(" cat sat"), 0.13), ("", 0.13),
    (_chunk(" down"), 0.18), ("", 0.18), (_chunk("", "length"), 0.19), ("", 0.19),
    ('data: {"id":"cmpl-1","choices":[],"usage":{"prompt_tokens":7,"completion_tokens":5,"total_tokens":12}}', 0.2),
    ("", 0.2), ("data: [DONE]", 0.21), ("", 0.21)]


def _parse(lines, sent=0.0, ended=0.25):
    parser = bench.StreamParser()
    for line, t in lines:
        parser.feed(line, t)
    return parser.finish(RequestRecord(prompt_len=None, max_tokens=5), sent, ended)


def test_sse_stream_gives_ttft_itl_and_usage_token_count():
    r = _parse(RECORDED)
    assert r.success and r.error is None
    assert r.ttft == pytest.approx(0.10) and r.latency == pytest.approx(0.25)
    assert r.itl == pytest.approx([0.03, 0.05])  # the finish-only chunk carries no token: no gap for it
    assert r.output_tokens == 5 and r.prompt_len == 7  # from the usage chunk, not the 3 text chunks
    assert r.tpot == pytest.approx((0.25 - 0.10) / 4)


def test_sse_without_usage_counts_text_chunks():
    r = _parse([line for line in RECORDED if "usage" not in line[0]])
    assert r.success and r.output_tokens == 3 and r.prompt_len is None


def test_sse_error_event_and_missing_done_fail_the_request():
    error = ('data: {"error":{"message":"the request failed in the engine: boom","type":"InternalServerError",'
             '"param":null,"code":500}}', 0.15)
    r = _parse(RECORDED[:3] + [error, ("data: [DONE]", 0.16)])
    assert not r.success and r.error == "the request failed in the engine: boom" and r.latency == pytest.approx(0.25)
    r = _parse(RECORDED[:4])
    assert not r.success and "without data: [DONE]" in r.error
    r = _parse([("data: {not json", 0.1), ("data: [DONE]", 0.2)])
    assert not r.success and "malformed event" in r.error


def test_error_bodies_give_their_message():
    assert bench.error_message(b'{"error": {"message": "too long", "code": 400}}') == "too long"
    assert bench.error_message(b'{"detail": "Not Found"}') == "Not Found"
    assert bench.error_message(b"<html>bad gateway</html>") == "<html>bad gateway</html>"


# ---------------------------------------------------------------------------------------------- CLI errors


@pytest.mark.parametrize("argv, message", [
    (["--request-rate", "-1"], "--request-rate must be > 0"),
    (["--request-rate", "0"], "--request-rate must be > 0"),
    (["--request-rate", "nan"], "--request-rate must be > 0"),
    (["--burstiness", "0"], "--burstiness must be a finite number > 0"),
    (["--num-prompts", "0"], "--num-prompts must be >= 1"),
    (["--output-len", "-3"], "--output-len must be >= 1"),
    (["--max-concurrency", "0"], "--max-concurrency must be >= 1"),
    (["--range-ratio", "1"], "--range-ratio must be in [0, 1)"),
    (["--temperature", "-0.5"], "--temperature must be >= 0"),
    (["--goodput", "ttft=200"], "--goodput: 'ttft=200' is not NAME:MS"),
    (["--goodput", "ttft:200", "latency:5"], "--goodput: 'latency:5' is not NAME:MS"),
    (["--percentiles", "50,101"], "--percentiles: percentile 101 is not in [0, 100]"),
    (["--base-url", "localhost:8000"], "--base-url must be an http:// or https:// URL"),
    (["--base-url", "http://127.0.0.1:8000/v1/"], "without /v1"),
    (["--dataset", "jsonl"], "--dataset jsonl needs --dataset-path"),
    (["--dataset", "jsonl", "--dataset-path", "/nonexistent/d.jsonl"], "no such file"),
    (["--dataset-path", "x.jsonl"], "with --dataset jsonl only"),
])
def test_bad_arguments_are_one_clear_line(argv, message, capsys):
    assert main(["bench", "serve", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_bad_jsonl_line_is_reported_before_the_server_is_asked(tmp_path, capsys):
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b", "max_tokens": -1}\n')
    assert main(["bench", "serve", "--dataset", "jsonl", "--dataset-path", str(path),
                 "--base-url", f"http://127.0.0.1:{free_port()}"]) == 2
    assert f"{path}:2:" in capsys.readouterr().err


def test_an_unreachable_server_is_a_clear_error(capsys):
    assert main(["bench", "serve", "--base-url", f"http://127.0.0.1:{free_port()}"]) == 2
    assert "cannot reach http://127.0.0.1:" in capsys.readouterr().err


def test_every_request_to_a_closed_port_fails_without_stopping_the_run():
    reqs = load.random_requests(3, 4, 2, 10)
    records, _ = bench.run(reqs, [0.0] * 3, base_url=f"http://127.0.0.1:{free_port()}", model="m",
                           max_concurrency=2)
    assert [r.success for r in records] == [False] * 3 and all("ConnectError" in r.error for r in records)


# ---------------------------------------------------------------------------------------------- a real server

VOCAB, KEY = 50, "sekrit"


def _fake_openai_app(state):
    """/v1/models and a streamed /v1/completions in OpenAI's format: two tokens per text chunk (so chunks and
    tokens differ), then the usage chunk and [DONE]. Of the requests it receives, every 4th gets HTTP 500
    and the 6th an error event after its first chunk."""
    app = FastAPI()
    unauthorized = JSONResponse({"error": {"message": "bad key", "code": 401}}, status_code=401)

    @app.get("/v1/models")
    async def models(request: Request):
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return unauthorized
        return {"object": "list", "data": [{"id": "tiny", "object": "model", "vocab_size": VOCAB},
                                           {"id": "novocab", "object": "model"}]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return unauthorized
        body = await request.json()
        state.bodies.append(body)
        n = len(state.bodies)
        if n % 4 == 0:
            return JSONResponse({"error": {"message": "engine exploded", "code": 500}}, status_code=500)
        prompt, k = body["prompt"], body["max_tokens"]
        n_prompt = len(prompt) if isinstance(prompt, list) else len(prompt.split())

        async def events():
            for i in range(0, k, 2):
                await asyncio.sleep(0.001)
                if n == 6 and i > 0:
                    yield 'data: {"error": {"message": "mid-stream failure", "code": 500}}\n\n'
                    break
                choice = {"index": 0, "text": " tok" * min(2, k - i), "finish_reason": "length" if i + 2 >= k else None}
                yield f"data: {json.dumps({'object': 'text_completion', 'choices': [choice]})}\n\n"
            else:
                if body.get("stream_options", {}).get("include_usage"):
                    usage = {"prompt_tokens": n_prompt, "completion_tokens": k, "total_tokens": n_prompt + k}
                    yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


@pytest.fixture(scope="module")
def fake_server():
    state = SimpleNamespace(bodies=[])
    with app_in_thread(_fake_openai_app(state), start_timeout=20) as url:
        yield url, state


def test_whole_run_against_an_openai_style_server(fake_server, tmp_path, capsys, monkeypatch):
    base, state = fake_server
    state.bodies.clear()
    monkeypatch.setenv("SAMBAY_API_KEY", KEY)
    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--base-url", base + "/", "--num-prompts", "8", "--input-len", "5",
                 "--output-len", "6", "--ignore-eos", "--request-rate", "500", "--burstiness", "0.5",
                 "--max-concurrency", "3", "--goodput", "e2el:60000", "--json", str(out)]) == 0
    report = capsys.readouterr().out
    assert "Successful requests:" in report and "engine exploded" in report
    # the model and the vocabulary came from GET /v1/models; every body asked for what the flags said
    assert len(state.bodies) == 8
    for body in state.bodies:
        assert body["model"] == "tiny" and body["stream"] is True and body["stream_options"] == {"include_usage": True}
        assert body["ignore_eos"] is True and body["temperature"] == 0 and body["max_tokens"] == 6
        assert len(body["prompt"]) == 5 and all(0 <= t < VOCAB for t in body["prompt"])
    data = json.loads(out.read_text())
    m = data["metrics"]
    assert (m["completed"], m["failed"]) == (5, 3)  # requests 4 and 8: HTTP 500; request 6: an error event
    assert m["total_output_tokens"] == 5 * 6  # from usage, though each request sent only 3 text chunks
    assert m["total_input_tokens"] == 5 * 5 and m["good_requests"] == 5
    assert sorted((e["error"], e["count"]) for e in m["errors"]) == [("HTTP 500: engine exploded", 2),
                                                                     ("mid-stream failure", 1)]
    r = data["requests"]
    assert len(r["ttfts_ms"]) == 8 and r["success"].count(True) == 5
    assert sorted(len(itl) for itl, ok in zip(r["itls_ms"], r["success"]) if ok) == [2] * 5
    assert [n for n in r["output_lens"] if n is not None] == [6] * 5
    assert data["meta"]["command"].startswith("sambay bench serve") and data["meta"]["device"] == "remote"
    assert data["server"]["card"]["vocab_size"] == VOCAB and data["settings"]["request_rate"] == 500


def test_jsonl_run_with_text_prompts_and_no_ignore_eos(fake_server, tmp_path, capsys):
    base, state = fake_server
    state.bodies.clear()
    path = tmp_path / "d.jsonl"
    path.write_text('{"prompt": "one two three", "max_tokens": 4}\n{"prompt": [3, 1], "max_tokens": 1}\n'
                    '{"prompt": "four"}\n')
    assert main(["bench", "serve", "--base-url", base, "--api-key", KEY, "--model", "tiny", "--dataset", "jsonl",
                 "--dataset-path", str(path), "--output-len", "2", "--max-concurrency", "1"]) == 0  # in order
    assert "(3 unknown)" not in capsys.readouterr().out  # the usage chunk counted the text prompts' tokens
    assert [b["prompt"] for b in state.bodies] == ["one two three", [3, 1], "four"]
    assert [b["max_tokens"] for b in state.bodies] == [4, 1, 2] and not any("ignore_eos" in b for b in state.bodies)


@pytest.mark.parametrize("argv, message", [
    (["--model", "novocab"], "has no vocab_size: pass --vocab-size"),
    (["--model", "missing"], "does not serve 'missing' (it serves: tiny, novocab)"),
    (["--api-key", "wrong"], "HTTP 401: bad key"),
])
def test_model_card_problems_are_clear_errors(fake_server, argv, message, capsys):
    base, _ = fake_server
    assert main(["bench", "serve", "--base-url", base, "--api-key", KEY, *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_client_alone_returns_records_in_request_order(fake_server):
    base, state = fake_server
    state.bodies.clear()
    reqs = [load.BenchRequest("a b", None, k) for k in (1, 2, 3)]
    records, duration = bench.run(reqs, [0.0, 0.0, 0.0], base_url=base, model="tiny", api_key=KEY)
    assert duration > 0 and [r.output_tokens for r in records] == [1, 2, 3]
    assert [r.prompt_len for r in records] == [2, 2, 2] and all(r.success for r in records)
    assert records[0].tpot is None and records[2].ttft is not None

