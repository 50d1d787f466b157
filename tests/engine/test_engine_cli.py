"""`sambay generate`: streams a completion; bad arguments are one line and exit code 2."""

from __future__ import annotations

import pytest

from sambay.cli.main import main


def _run(capsys, *argv):
    code = main(["generate", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_generate_with_a_tiny_preset_streams_bytes_reproducibly(capsys):
    args = ["--model", "tiny:sambay", "--prompt", "Hi", "--max-new-tokens", "6", "--seed", "3", "--stats"]
    code, out, err = _run(capsys, *args)
    assert code == 0 and out.endswith("\n") and "6 generated" in err
    assert _run(capsys, *args)[1] == out


def test_generate_greedy_with_depth_and_chunking(capsys):
    code, out, _ = _run(capsys, "--model", "tiny:samba", "--depth", "4", "--prompt", "abcdefghij",
                        "--max-new-tokens", "3", "--temperature", "0", "--chunk-size", "4")
    assert code == 0


@pytest.mark.parametrize("argv, message", [
    (["--model", "no-such-preset", "--prompt", "x"], "not a preset or a folder; presets: "),
    (["--model", "tiny:no-such", "--prompt", "x"], "not a preset or a folder"),
    (["--model", "./no/such/dir", "--prompt", "x"], "no such checkpoint folder"),
    (["--model", "tiny:sambay", "--prompt", "x", "--max-new-tokens", "-3"], "--max-new-tokens must be >= 0"),
    (["--model", "tiny:sambay", "--prompt", "x", "--temperature", "-1"], "--temperature must be >= 0"),
    (["--model", "tiny:sambay", "--prompt", "x", "--top-p", "0"], "top-p must be in (0, 1]"),
    (["--model", "tiny:sambay", "--prompt", "x", "--depth", "6"], "divisible by 4"),
    (["--model", "tiny:sambay", "--prompt", ""], "--prompt is empty"),
    (["--model", "tiny:sambay", "--prompt", "x", "--tokenizer", "/no/such/tok"], "no such file"),
    (["--model", "tiny:sambay", "--prompt", "x", "--compile"], "--compile compiles the CUDA-graph decode step"),
])
def test_bad_arguments_give_one_line_and_exit_code_2(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("sambay generate: error: ") and message in err


def test_help_documents_the_model_forms(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = capsys.readouterr().out
    assert "tiny:PRESET" in text and "UTF-8 bytes" in text and "checkpoint folder" in text


def test_a_preset_name_means_the_preset_even_beside_a_folder_of_that_name(tmp_path, monkeypatch, capsys):
    (tmp_path / "sambay").mkdir()  # e.g. inside a checkout of this repository
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--model", "sambay", "--depth", "8", "--prompt", "Hi", "--max-new-tokens", "2"]) == 0
    (tmp_path / "empty").mkdir()
    assert main(["generate", "--model", "empty", "--prompt", "Hi", "--max-new-tokens", "1"]) == 2
    assert "has no config.json, so it is not a checkpoint folder" in capsys.readouterr().err


def test_a_training_run_folder_generates_from_its_newest_checkpoint(tmp_path, capsys):
    from sambay import CausalLM
    from sambay.config import tiny

    run = tmp_path / "run"
    for step in (1, 2):
        folder = run / "checkpoints" / f"step-{step:08d}"
        CausalLM(tiny("sambay")).save_pretrained(folder)
        (folder / "train_state.pt").write_bytes(b"")
    assert main(["generate", "--model", str(run), "--prompt", "Hi", "--max-new-tokens", "2"]) == 0
    assert f"using the newest checkpoint of the run: {run / 'checkpoints' / 'step-00000002'}" in capsys.readouterr().err


def test_version(capsys):
    import sambay

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"sambay {sambay.__version__}"


def test_every_option_of_every_command_says_what_it_does():
    import argparse

    from sambay.cli.main import build_parser

    missing = []

    def walk(parser, name):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, sub_parser in action.choices.items():
                    walk(sub_parser, f"{name} {sub}")
            elif action.option_strings and action.dest != "help" and not action.help:
                missing.append(f"{name} {action.option_strings[-1]}")

    walk(build_parser(), "sambay")
    assert not missing, missing


def test_describe_takes_counts_with_suffixes(capsys):
    assert main(["describe", "sambay", "--depth", "8", "--length", "32K"]) == 0
    assert "at 32,000 tokens:" in capsys.readouterr().out


def test_generate_and_bench_take_a_thread_count(capsys):
    import torch

    from sambay.cli.main import main

    before = torch.get_num_threads()
    try:
        assert main(["generate", "--model", "tiny:sambay", "--prompt", "hi", "--max-new-tokens", "2", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1
        assert main(["generate", "--model", "tiny:sambay", "--prompt", "hi", "--threads", "0"]) == 2
        assert "--threads must be >= 1" in capsys.readouterr().err
        assert main(["bench", "engine", "--tiny", "--preset", "sambay", "--batch", "1", "--prompt-len", "4",
                     "--gen-len", "2", "--steps", "1", "--device", "cpu", "--dtype", "fp32", "--threads", "0"]) == 2
    finally:
        torch.set_num_threads(before)
