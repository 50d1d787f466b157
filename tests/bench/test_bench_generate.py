import json
import math

from sambay.bench.generate import integrate_steps
from sambay.cli.main import main


def test_bench_generate_cli_runs_tiny_models_on_cpu_and_reports_sane_numbers(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = main(["bench", "generate", "--tiny", "--device", "cpu", "--baseline", "phi4-mini", "--baseline",
               "samba-yoco", "--points", "2", "--steps", "1", "--batch", "2", "--long-prompt", "40", "--json", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "decode throughput x" in text
    data = json.loads(out.read_text())
    assert [m["name"] for m in data["models"]] == ["phi4-mini-flash", "phi4-mini", "samba-yoco"]
    for m in data["models"]:
        assert m["prefill_s"] > 0 and m["decode_tokens_per_s"] > 0 and math.isfinite(m["decode_s"])
        assert m["long_prompt_len"] == 40 and m["long_prefill_s"] > 0
        assert len(m["contexts"]) == len(m["step_ms"]) == 2 and all(t > 0 for t in m["step_ms"])
    assert data["meta"]["command"].startswith("sambay bench generate")
    assert data["meta"]["device"] == "cpu" and data["meta"]["versions"]["sambay"]
    assert data["bandwidth_bytes_per_s"] is None  # no copy bandwidth on CPU: null, never a bare NaN
    assert "NaN" not in out.read_text()


def test_bench_rejects_bad_arguments(capsys):
    assert main(["bench", "generate", "--tiny", "--gen-len", "0"]) == 2
    assert "--gen-len must be >= 1" in capsys.readouterr().err
    assert main(["bench", "generate", "--tiny", "--baseline", "gpt5"]) == 2
    assert main(["bench", "generate", "--tiny", "--device", "cpu", "--compile"]) == 2
    assert "--compile times the compiled CUDA-graph decode step" in capsys.readouterr().err


def test_integrated_decode_time_is_exact_for_linear_step_times():
    contexts, prompt, gen = [100, 600, 1100], 100, 1000
    step = [1.0 + 0.01 * (c - 100) for c in contexts]  # linear in the context
    expected = sum(1.0 + 0.01 * (c - 100) for c in range(prompt, prompt + gen))
    assert abs(integrate_steps(contexts, step, prompt, gen) - expected) / expected < 1e-3
