import json
import re

import pytest
from helpers import random_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from sambay.cli.main import main
from sambay.config import tiny
from sambay.tokenizer import load_tokenizer

SPECIALS = ["<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
TEMPLATE = ("{% for m in messages %}{{ '<|' + m['role'] + '|>' + m['content'] + '<|end|>' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")


def write_model_folder(folder, chat_template=True):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["what is two plus two", "the answer is four"] * 20, trainer)
    model = random_model(tiny("sambay", vocab_size=320))
    model.save_pretrained(folder)
    tok.save(str(folder / "tokenizer.json"))
    config = {"eos_token": "<|endoftext|>"}
    if chat_template:
        config["chat_template"] = TEMPLATE
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "generation_config.json").write_text(json.dumps(
        {"eos_token_id": [tok.token_to_id("<|end|>"), tok.token_to_id("<|endoftext|>")]}))
    return folder


def test_generate_chat_applies_the_template_and_stops_at_end_tokens(tmp_path, capsys):
    folder = write_model_folder(tmp_path / "m")
    rc = main(["generate", "--model", str(folder), "--chat", "what is two plus two", "--system", "be brief",
               "--temperature", "0", "--max-new-tokens", "6", "--stats"])
    assert rc == 0
    err = capsys.readouterr().err
    tok = load_tokenizer(folder)
    rendered = "<|system|>be brief<|end|><|user|>what is two plus two<|end|><|assistant|>"
    assert tok.apply_chat_template([{"role": "system", "content": "be brief"},
                                    {"role": "user", "content": "what is two plus two"}]) == rendered
    n_prompt = int(re.search(r"\[(\d+) prompt tokens", err).group(1))
    assert n_prompt == len(tok.encode(rendered))
    assert set(tok.eos_token_ids) == {tok.token_to_id("<|end|>"), tok.token_to_id("<|endoftext|>")}


def test_generate_chat_without_a_template_is_a_clear_error(tmp_path, capsys):
    folder = write_model_folder(tmp_path / "m", chat_template=False)
    assert main(["generate", "--model", str(folder), "--chat", "hi"]) == 2
    assert "chat template" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--prompt", "a", "--chat", "b"], []])
def test_prompt_and_chat_are_exclusive_and_one_is_required(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", "--model", "tiny:sambay", *argv])
    assert e.value.code == 2
