"""Tests for sambay.tokenizer (loading, chat templates, incremental decoding) with a tiny byte-level BPE trained
in the fixture (CPU, fast)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from sambay.interop.errors import ChatTemplateError, CheckpointError, TokenizerError
from sambay.tokenizer import IncrementalDecoder, Tokenizer, load_tokenizer

SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]

# Phi-4-mini style: optional system turn, <|role|>content<|end|> per turn, <|assistant|> to prompt.
# Written for these tests; exercises loop controls, raise_exception, tojson and the special-token globals.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% if message['role'] == 'system' and message['content'] == '' %}{% continue %}{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if tools %}<|system|>tools: {{ tools | tojson }}<|end|>{% endif %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Phi-4-mini-flash-reasoning is a hybrid SambaY model with Mamba and attention layers.",
    "Solve for x: 2x + 3 = 7. The answer is x = 2.",
    "Hello world! How are you today? I am fine, thank you.",
    "def f(x):\n    return x * x\n",
    "日本語のテキストと中文文本 and emoji 🙂🚀 appear here too.",
] * 20


def _build_folder(folder: Path) -> None:
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = Backend(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    # Added after training so the special ids sit at the end of the vocabulary, as in Phi-4-mini.
    tok.add_special_tokens(SPECIALS)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    ids = {s: tok.token_to_id(s) for s in SPECIALS}
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "add_bos_token": False,
        "add_eos_token": False,
        "bos_token": "<|endoftext|>",
        "eos_token": {"__type": "AddedToken", "content": "<|endoftext|>", "special": True},
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "clean_up_tokenization_spaces": False,
        "model_max_length": 131072,
        "chat_template": CHAT_TEMPLATE,
        "added_tokens_decoder": {
            str(i): {"content": s, "lstrip": False, "rstrip": False, "normalized": False,
                     "single_word": False, "special": True}
            for s, i in ids.items()
        },
    }, indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}))
    (folder / "added_tokens.json").write_text(json.dumps(ids))
    (folder / "generation_config.json").write_text(json.dumps({
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": [ids["<|end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
    }))


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tok")
    _build_folder(folder)
    return folder


@pytest.fixture(scope="module")
def tok(tok_dir: Path) -> Tokenizer:
    return load_tokenizer(tok_dir)


@pytest.fixture()
def copy_dir(tok_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "tok"
    shutil.copytree(tok_dir, dst)
    return dst


def test_no_transformers_import() -> None:
    import sys

    import sambay.tokenizer  # noqa: F401

    assert "transformers" not in sys.modules


def test_special_tokens_are_single_ids(tok: Tokenizer) -> None:
    for s in SPECIALS:
        tid = tok.token_to_id(s)
        assert tid is not None
        assert tok.encode(s) == [tid]
        assert tok.id_to_token(tid) == s
    assert tok.vocab_size == len(tok) >= 400
    assert tok.special_token_ids == {tok.token_to_id(s) for s in SPECIALS}


@pytest.mark.parametrize("text", [
    "Hello world! How are you today?",
    "<|system|>You are Phi.<|end|><|user|>Solve 2x + 3 = 7<|end|><|assistant|>x = 2<|end|><|endoftext|>",
    "  leading spaces,\ttabs\nand newlines\n\n",
    "unseen words: zyxwvut qqq",
    "日本語のテキスト, 中文, emoji 🙂🚀👩‍👩‍👧 and é ñ ü",
    "",
])
def test_encode_decode_round_trip(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.encode(text, add_special_tokens=True) == ids  # no post-processor, add_bos_token False


def test_skip_special_tokens(tok: Tokenizer) -> None:
    ids = tok.encode("<|user|>hi there<|end|>")
    assert ids[0] == tok.token_to_id("<|user|>") and ids[-1] == tok.token_to_id("<|end|>")
    assert tok.decode(ids, skip_special_tokens=True) == "hi there"


def test_eos_ids_and_special_tokens(tok: Tokenizer) -> None:
    end, eot = tok.token_to_id("<|end|>"), tok.token_to_id("<|endoftext|>")
    assert tok.eos_token_ids == [end, eot]
    assert tok.eos_token == "<|endoftext|>" and tok.eos_token_id == eot
    assert tok.bos_token_id == eot and tok.pad_token_id == eot
    assert tok.model_max_length == 131072


def test_eos_falls_back_to_tokenizer(copy_dir: Path) -> None:
    (copy_dir / "generation_config.json").unlink()
    t = load_tokenizer(copy_dir)
    assert t.eos_token_ids == [t.token_to_id("<|endoftext|>")]
    (copy_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": t.token_to_id("<|end|>")}))
    assert load_tokenizer(copy_dir).eos_token_ids == [t.token_to_id("<|end|>")]


def test_chat_template(tok: Tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Your name is Phi."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ]
    text = tok.apply_chat_template(messages)
    assert text == ("<|system|>Your name is Phi.<|end|><|user|>What is 2+2?<|end|><|assistant|>4<|end|>"
                    "<|user|>And 3+3?<|end|><|assistant|>")
    assert tok.apply_chat_template(messages[:2], add_generation_prompt=False).endswith("<|end|><|endoftext|>")
    # {% continue %} (loop controls) skips the empty system turn.
    assert tok.apply_chat_template([{"role": "system", "content": ""}, {"role": "user", "content": "x"}]) == (
        "<|user|>x<|end|><|assistant|>")
    ids = tok.encode_chat(messages)
    assert ids == tok.encode(text) and ids[-1] == tok.token_to_id("<|assistant|>")
    assert ids.count(tok.token_to_id("<|end|>")) == 4
    assert tok.decode(ids) == text


def test_chat_template_tojson_not_html_escaped(tok: Tokenizer) -> None:
    text = tok.apply_chat_template([{"role": "user", "content": "q"}], tools=[{"name": "a<b>&'c", "x": "é"}])
    assert '[{"name": "a<b>&\'c", "x": "é"}]' in text


def test_chat_template_raise_exception_and_bad_messages(tok: Tokenizer) -> None:
    with pytest.raises(ChatTemplateError, match="rejected the messages: unknown role: wizard"):
        tok.apply_chat_template([{"role": "wizard", "content": "hi"}])
    with pytest.raises(ChatTemplateError, match="list of dicts"):
        tok.apply_chat_template("hello")  # type: ignore[arg-type]


def test_chat_template_is_sandboxed(tok: Tokenizer) -> None:
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(ChatTemplateError, match="error while rendering"):
        tok.apply_chat_template([{"role": "user", "content": "x"}], chat_template=evil)
    mutate = "{% set _ = messages.append({'role': 'x'}) %}{{ messages | length }}"
    with pytest.raises(ChatTemplateError):
        tok.apply_chat_template([{"role": "user", "content": "x"}], chat_template=mutate)


def test_chat_template_features(tok: Tokenizer) -> None:
    tpl = ("{%- for m in messages -%}{% if loop.index > 2 %}{% break %}{% endif %}"
           "{% generation %}{{ m['content'] | upper }}{% endgeneration %}{% endfor %}"
           "{{ bos_token }}|{{ extra }}|{{ strftime_now('%Y') | length }}")
    msgs = [{"role": "user", "content": c} for c in "abc"]
    assert tok.apply_chat_template(msgs, chat_template=tpl, extra=42) == "AB<|endoftext|>|42|4"


def test_trim_and_lstrip_blocks_like_hf(tok: Tokenizer) -> None:
    tpl = "{% for m in messages %}\n    {% if true %}\n{{ m['content'] }}\n    {% endif %}\n{% endfor %}"
    assert tok.apply_chat_template([{"role": "u", "content": "a"}, {"role": "u", "content": "b"}],
                                   chat_template=tpl) == "a\nb\n"


def test_named_templates_and_jinja_file(copy_dir: Path) -> None:
    cfg = json.loads((copy_dir / "tokenizer_config.json").read_text())
    cfg["chat_template"] = [{"name": "default", "template": "D{{ messages | length }}"},
                            {"name": "tool_use", "template": "T{{ tools | length }}"}]
    (copy_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    t = load_tokenizer(copy_dir)
    msgs = [{"role": "user", "content": "x"}]
    assert t.apply_chat_template(msgs) == "D1"
    assert t.apply_chat_template(msgs, tools=[1, 2]) == "T2"
    assert t.apply_chat_template(msgs, chat_template="tool_use", tools=[1]) == "T1"
    (copy_dir / "chat_template.jinja").write_text("J{{ messages[0]['content'] }}")
    assert load_tokenizer(copy_dir).apply_chat_template(msgs) == "Jx"
    assert load_tokenizer(copy_dir, chat_template="A").apply_chat_template(msgs) == "A"


def test_missing_chat_template(copy_dir: Path) -> None:
    cfg = json.loads((copy_dir / "tokenizer_config.json").read_text())
    del cfg["chat_template"]
    (copy_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    t = load_tokenizer(copy_dir)
    assert t.chat_template is None
    assert t.encode("hi") != []  # the tokenizer itself still works
    with pytest.raises(ChatTemplateError, match="has no chat template"):
        t.apply_chat_template([{"role": "user", "content": "x"}])


def test_chat_template_syntax_error_names_file(copy_dir: Path) -> None:
    cfg = json.loads((copy_dir / "tokenizer_config.json").read_text())
    cfg["chat_template"] = "{% for m in messages %}\n{{ m['content'] }"
    (copy_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(TokenizerError, match=r"chat template in .*tokenizer_config.json has a syntax error at "
                                             r"template line 2"):
        load_tokenizer(copy_dir)
    (copy_dir / "chat_template.jinja").write_text("{% if %}")
    with pytest.raises(TokenizerError, match=r"chat_template.jinja has a syntax error"):
        load_tokenizer(copy_dir)


def test_missing_and_corrupt_tokenizer_json(copy_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="tokenizer path not found"):
        load_tokenizer(tmp_path / "nowhere")
    raw = (copy_dir / "tokenizer.json").read_text()
    (copy_dir / "tokenizer.json").write_text(raw[: len(raw) // 2])
    with pytest.raises(TokenizerError, match=r"tokenizer.json is not valid JSON: .* at line \d+, column \d+"):
        load_tokenizer(copy_dir)
    (copy_dir / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "Nope"}}')
    with pytest.raises(TokenizerError, match="valid JSON but the `tokenizers` library"):
        load_tokenizer(copy_dir)
    (copy_dir / "tokenizer.json").unlink()
    (copy_dir / "tokenizer.model").write_bytes(b"\0")
    with pytest.raises(CheckpointError, match="tokenizer.json not found in .*only slow-tokenizer files"):
        load_tokenizer(copy_dir)


def test_corrupt_side_files(copy_dir: Path) -> None:
    (copy_dir / "generation_config.json").write_text('{"eos_token_id": [1, 2,]}')
    with pytest.raises(TokenizerError, match=r"generation_config.json is not valid JSON.*line 1, column 24"):
        load_tokenizer(copy_dir)
    (copy_dir / "generation_config.json").write_text('{"eos_token_id": "end"}')
    with pytest.raises(TokenizerError, match="eos_token_id must be an int or a list of ints"):
        load_tokenizer(copy_dir)
    (copy_dir / "generation_config.json").write_text('{"eos_token_id": [99999]}')
    with pytest.raises(TokenizerError, match="does not have"):
        load_tokenizer(copy_dir)


def test_inconsistent_added_tokens(copy_dir: Path) -> None:
    ids = json.loads((copy_dir / "added_tokens.json").read_text())
    ids["<|end|>"] += 1000
    (copy_dir / "added_tokens.json").write_text(json.dumps(ids))
    with pytest.raises(TokenizerError, match="disagree about added tokens"):
        load_tokenizer(copy_dir)


def test_added_token_missing_from_tokenizer_json_is_added(copy_dir: Path, tok: Tokenizer) -> None:
    new_id = tok.vocab_size
    cfg = json.loads((copy_dir / "tokenizer_config.json").read_text())
    cfg["added_tokens_decoder"][str(new_id)] = {"content": "<|tool|>", "special": True}
    (copy_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    t = load_tokenizer(copy_dir)
    assert t.encode("<|tool|>") == [new_id]


# ---------------------------------------------------------------------------------------------------
# incremental decoding
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "日本語のテキストと中文文本 🙂🚀👩‍👩‍👧 ok",
    "<|assistant|>答案是 x = 2 ✅<|end|>",
    "plain ascii text, streamed token by token.",
    "🇯🇵" * 5,
])
def test_incremental_decoder_never_emits_partial_chars(tok: Tokenizer, text: str) -> None:
    ids = tok.encode(text)
    dec = IncrementalDecoder(tok)
    pieces = [dec.push(i) for i in ids]
    pieces.append(dec.flush())
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)
    # The fixture really does split characters across tokens, so the test is meaningful.
    if not text.isascii():
        assert any(tok.decode([i]).count("\ufffd") for i in ids)
        assert "" in pieces[:-1]


def test_incremental_decoder_skip_special_and_context(tok: Tokenizer) -> None:
    prompt = tok.encode("<|user|>hi<|end|><|assistant|>")
    out = tok.encode("中文 🙂<|end|>")
    dec = IncrementalDecoder(tok, skip_special_tokens=True, context_ids=prompt)
    text = dec.push_many(out) + dec.flush()
    assert text == "中文 🙂"


def test_incremental_decoder_flush_incomplete(tok: Tokenizer) -> None:
    ids = tok.encode("🙂")
    partial = ids[:-1] if len(ids) > 1 else ids
    dec = IncrementalDecoder(tok)
    assert dec.push_many(partial) == "" or len(ids) == 1
    tail = dec.flush()
    assert len(ids) == 1 or "\ufffd" in tail


def test_incremental_decoder_long_stream(tok: Tokenizer) -> None:
    text = " ".join(CORPUS[:6]) * 4
    ids = tok.encode(text)
    dec = IncrementalDecoder(tok)
    assert "".join(dec.push(i) for i in ids) + dec.flush() == text
    assert len(dec._ids) < 80  # the id buffer is trimmed as the stream goes


@pytest.mark.parametrize("template, what", [
    ("{{ 'a' * 10000000000 }}", "a repetition of 1 x 10,000,000,000 items"),
    ("{{ [0] * 10000000 }}", "a repetition of 1 x 10,000,000 items"),
    ("{{ 9 ** 99999999 }}", "a power 9 ** 99999999"),
    ("{% set s = 'x' * 1000000 %}{{ s + s }}", "a concatenation of 2,000,000 items"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "range loops over more than 1,048,576 items"),
    ("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", "a rendered prompt of more than"),
])
def test_a_hostile_chat_template_fails_with_a_message_instead_of_exhausting_memory_or_time(copy_dir, template, what):
    """At load (Jinja would fold constant expressions while compiling) and at render."""
    cfg = json.loads((copy_dir / "tokenizer_config.json").read_text())
    cfg["chat_template"] = template
    (copy_dir / "tokenizer_config.json").write_text(json.dumps(cfg))
    t = load_tokenizer(copy_dir)  # compiling the template no longer evaluates it
    with pytest.raises(ChatTemplateError, match=re.escape(what)):
        t.apply_chat_template([{"role": "user", "content": "x"}])
