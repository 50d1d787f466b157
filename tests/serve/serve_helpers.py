"""A small chat model folder (real BPE tokenizer, Phi-style chat template, generation_config.json) and a
`sambay serve` subprocess on a loopback port, for the server tests."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import torch
import uvicorn
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from sambay.config import tiny
from sambay.model import CausalLM

SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
CORPUS = ["what is two plus two? the answer is four.", "<think>let me think about it</think> fine",
          "héllo wörld, ünïcode and emoji \U0001f600 too", "the quick brown fox jumps over the lazy dog"]


def write_chat_model(folder: Path, vocab: int = 384, max_seq_len: int = 256, generation_config: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab - 16, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 20, trainer)
    tok.add_tokens(["<think>", "</think>"])  # plain (not special) added tokens: they stay in the text
    torch.manual_seed(0)
    model = CausalLM(tiny("sambay", vocab_size=vocab, max_seq_len=max_seq_len))
    with torch.no_grad():  # random weights with enough spread that greedy output varies
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.5)
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|endoftext|>", "chat_template": TEMPLATE}))
    gen = {"eos_token_id": [tok.token_to_id("<|end|>"), tok.token_to_id("<|endoftext|>")]}
    (folder / "generation_config.json").write_text(json.dumps({**gen, **(generation_config or {})}))
    return folder


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`sambay serve` in a subprocess; `url` is its /v1 base."""

    def __init__(self, folder: Path, *args: str, log: Path | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/v1"
        env = {**os.environ, "OMP_NUM_THREADS": "1", "SAMBAY_API_KEY": ""}
        self.log = open(log, "w+") if log else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sambay", "serve", "--model", str(folder), "--port", str(self.port),
             "--log-level", "warning", *args], stdout=self.log, stderr=self.log, env=env)
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}: {self.output()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/health", timeout=1).status_code == 200:
                    return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the server did not start within 120 s")
            time.sleep(0.2)

    def output(self) -> str:
        if self.log is subprocess.DEVNULL:
            return ""
        self.log.seek(0)
        return self.log.read()

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()
        return self.proc.returncode


@contextlib.contextmanager
def app_in_thread(app, start_timeout: float = 30.0):
    """An ASGI app under uvicorn in a background thread of this process, on a loopback port -> its base URL
    (for tests that reach into the app: fault injection, a fake upstream)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
