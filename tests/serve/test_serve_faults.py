"""Faults inside the server: one request's failure leaves the others and the engine running; a failed
engine step marks the engine dead (503 on /health and on new requests)."""

import asyncio

import httpx
import pytest
from serve_helpers import app_in_thread

from sambay import Engine, SamplingParams, from_pretrained, load_tokenizer
from sambay.serve import ServedModel, ServeOptions, build_app


class PoisonedTokenizer:
    """The real tokenizer, except that decoding `poison` raises (a detokenizer bug hit by one request)."""

    def __init__(self, tokenizer, poison: int):
        self._tok, self.poison = tokenizer, poison

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def decode(self, ids, skip_special_tokens=False):
        if self.poison in list(ids):
            raise RuntimeError("decoder bug")
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)


def in_process_server(served):
    return app_in_thread(build_app(served))


def greedy(engine_model, tok, prompt, n):
    from sambay import Generator

    return Generator(engine_model, tok, max_batch=1).generate(prompt, SamplingParams(
        temperature=0, max_new_tokens=n, ignore_eos=True))[0].token_ids


@pytest.fixture(scope="module")
def model_and_tokenizer(chat_model_dir):
    return from_pretrained(chat_model_dir), load_tokenizer(chat_model_dir)


def test_one_failing_request_does_not_stop_the_others(model_and_tokenizer):
    model, tok = model_and_tokenizer
    victim, bystander = tok.encode("the quick"), tok.encode("what is")
    victim_out = greedy(model, tok, victim, 8)
    poison = victim_out[3]
    bystander_out = greedy(model, tok, bystander, 8)
    assert poison not in bystander_out
    bad_tok = PoisonedTokenizer(tok, poison)
    served = ServedModel(Engine(model, bad_tok, max_num_seqs=4), bad_tok, ServeOptions(served_model_name="m"))
    body = {"max_tokens": 8, "temperature": 0, "ignore_eos": True}

    async def both(base):
        async with httpx.AsyncClient(base_url=base, timeout=60) as c:
            return await asyncio.gather(c.post("/v1/completions", json={**body, "prompt": victim}),
                                        c.post("/v1/completions", json={**body, "prompt": bystander}))

    with in_process_server(served) as base:
        bad, good = asyncio.run(both(base))
        assert bad.status_code == 500 and "decoder bug" in bad.json()["error"]["message"]
        assert good.status_code == 200 and good.json()["usage"]["completion_tokens"] == 8
        assert good.json()["choices"][0]["text"] == tok.decode(bystander_out)
        assert httpx.get(base + "/health").status_code == 200
        again = httpx.post(base + "/v1/completions", json={**body, "prompt": bystander}, timeout=60)
        assert again.json()["choices"][0]["text"] == tok.decode(bystander_out)
    assert not served.engine.has_unfinished_requests()


def test_a_failed_engine_step_makes_health_503_and_refuses_requests(model_and_tokenizer):
    model, tok = model_and_tokenizer
    engine = Engine(model, tok, max_num_seqs=2)
    served = ServedModel(engine, tok, ServeOptions(served_model_name="m"))

    def broken(plan):
        raise RuntimeError("simulated device fault")

    engine.runner.execute = broken
    with in_process_server(served) as base:
        r = httpx.post(base + "/v1/completions", json={"prompt": "the", "max_tokens": 4}, timeout=60)
        assert r.status_code == 503 and "simulated device fault" in r.json()["error"]["message"]
        health = httpx.get(base + "/health")
        assert health.status_code == 503 and "simulated device fault" in health.json()["error"]["message"]
        again = httpx.post(base + "/v1/completions", json={"prompt": "the", "max_tokens": 4}, timeout=60)
        assert again.status_code == 503
