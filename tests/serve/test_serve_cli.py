"""`sambay serve` options: bad values are one-line errors before anything loads; overrides take effect."""

import json

import httpx
import pytest
from serve_helpers import Server

from sambay.cli.main import main


@pytest.mark.parametrize("argv, words", [
    (["--port", "70000"], "--port must be <= 65535"),
    (["--port", "-1"], "--port must be >= 0"),
    (["--max-model-len", "1"], "--max-model-len must be >= 2"),
    (["--max-num-seqs", "0"], "--max-num-seqs must be >= 1"),
    (["--max-num-batched-tokens", "0"], "--max-num-batched-tokens must be >= 1"),
    (["--gpu-memory-utilization", "1.5"], "--gpu-memory-utilization must be in (0, 1]"),
    (["--drain-timeout", "nan"], "--drain-timeout must be >= 0"),
    (["--compile", "--device", "cpu"], "--compile"),
    (["--tokenizer", "/nonexistent/tok"], "no such file"),
    (["--generation-config", "/nonexistent/gen.json"], "--generation-config"),
])
def test_bad_options_are_one_line_errors(chat_model_dir, capsys, argv, words):
    assert main(["serve", "--model", str(chat_model_dir), *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_a_generation_config_with_a_bad_value_names_it(chat_model_dir, tmp_path, capsys):
    bad = tmp_path / "generation_config.json"
    bad.write_text(json.dumps({"temperature": "hot"}))
    assert main(["serve", "--model", str(chat_model_dir), "--generation-config", str(bad)]) == 2
    assert "temperature must be a number" in capsys.readouterr().err


def test_chat_template_option_replaces_the_tokenizers_template(chat_model_dir, tmp_path):
    template = tmp_path / "t.jinja"
    template.write_text("{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant] ")
    server = Server(chat_model_dir, "--chat-template", str(template), log=tmp_path / "log")
    try:
        r = httpx.post(server.base + "/tokenize", json={"messages": [{"role": "user", "content": "hi"}]}).json()
        d = httpx.post(server.base + "/detokenize", json={"tokens": r["tokens"]}).json()
        assert d["prompt"] == "[user] hi\n[assistant] "
    finally:
        server.stop()
