"""`sambay bench train | kernels | attention` and the metadata every result file carries."""

from __future__ import annotations

import json
import math
import sys

import pytest

from sambay.bench import meta
from sambay.cli.main import main


def test_metadata_names_the_commit_device_date_versions_and_command():
    m = meta.metadata("cpu", ["bench", "train", "--tiny"])
    assert set(m) == {"git_sha", "device", "date", "versions", "command", "argv"}
    assert m["device"] == "cpu" and m["command"] == "sambay bench train --tiny" and m["argv"] == sys.argv
    assert set(m["versions"]) == {"torch", "triton", "python", "sambay"}
    assert m["git_sha"] == "unknown" or len(m["git_sha"]) == 40
    assert m["date"].endswith("+00:00")


def test_git_sha_outside_a_checkout_is_unknown(tmp_path):
    assert meta.git_sha(tmp_path) == "unknown"


def test_result_json_has_null_where_a_value_is_not_finite(tmp_path):
    path = tmp_path / "sub" / "r.json"
    meta.write_json(path, {"a": math.nan, "b": [1.5, math.inf, (2, -math.inf)], "c": {"d": path}})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": [1.5, None, [2, None]], "c": {"d": str(path)}}


def test_bench_train_runs_a_tiny_model_on_cpu_and_writes_its_result(tmp_path, capsys):
    out = tmp_path / "train.json"
    rc = main(["bench", "train", "--tiny", "--device", "cpu", "--steps", "2", "--warmup", "1", "--seq-len", "32",
               "--micro-batch", "2", "--json", str(out)])
    assert rc == 0
    assert "tokens_per_s" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["meta"]["command"].startswith("sambay bench train --tiny") and data["meta"]["device"] == "cpu"
    r = data["result"]
    assert r["preset"] == "sambay" and r["world_size"] == 1 and r["steps"] == 2
    assert r["batch_tokens"] == 64 and r["tokens_per_s"] > 0 and math.isfinite(r["last_loss"])


def test_bench_train_rejects_bad_arguments(capsys):
    assert main(["bench", "train", "--tiny", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize("bench", ["kernels", "attention"])
def test_gpu_benchmarks_say_they_need_a_cuda_device(bench, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["bench", bench]) == 2
    assert "CUDA" in capsys.readouterr().err


@pytest.mark.parametrize("bench", ["generate", "engine", "prefix-cache", "serve", "train", "kernels", "attention"])
def test_every_benchmark_documents_its_json_output(bench, capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", bench, "--help"])
    assert e.value.code == 0
    assert "--json PATH" in capsys.readouterr().out


def test_kernel_report_rows_are_rates_against_the_ceilings_and_the_file_keeps_up(tmp_path, capsys):
    from sambay.bench.report import Report

    path = tmp_path / "k.json"
    rep = Report("kernels", meta.metadata("cpu"), path)
    rep.timing("scan", "before the ceilings", 1.0, nbytes=1e9)  # no ceiling yet: the fraction is null
    assert json.loads(path.read_text())["rows"][0]["of_copy_bandwidth"] is None
    rep.set_ceilings(2000.0, 500.0)
    row = rep.timing("scan", "fwd", 2.0, nbytes=2e9, flops=1e12, registers="fwd 255 regs")
    assert row["gb_per_s"] == pytest.approx(1000.0) and row["of_copy_bandwidth"] == pytest.approx(0.5)
    assert row["tflops"] == pytest.approx(500.0) and row["of_matmul_peak"] == pytest.approx(1.0)
    rep.failure("decode", "ssm update", RuntimeError("out of resources"))
    rep.say("a line")
    data = json.loads(path.read_text())
    assert data["ceilings"] == {"copy_gb_per_s": 2000.0, "bf16_matmul_tflops": 500.0}
    assert [r["case"] for r in data["rows"]] == ["before the ceilings", "fwd", "ssm update"]
    assert data["rows"][2]["error"] == "out of resources"
    assert capsys.readouterr().out == "a line\n"


def test_bench_engine_runs_end_to_end_through_the_engine_and_writes_strict_json(tmp_path, capsys):
    from sambay.cli.main import main

    out = tmp_path / "engine.json"
    assert main(["bench", "engine", "--tiny", "--batch", "2", "--prompt-len", "9", "--gen-len", "6", "--steps", "2",
                 "--long-prompt", "20", "--max-chunk", "4", "--max-num-batched-tokens", "8",
                 "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "e2e/est" in text and "one 20-token prompt admitted (chunks of 4)" in text
    data = json.loads(out.read_text())
    model = data["models"][0]
    assert model["batch"] == 2 and model["decode_tokens_per_s"] > 0 and model["estimate_tokens_per_s"] > 0
    assert model["itl_during_long_ms"]["p50"] > 0 and data["meta"]["command"]
