"""`sambay bench serve` against a real `sambay serve`: every request completes and is counted."""

import json

from sambay.cli.main import main


def test_the_load_generator_drives_a_real_server(server, tmp_path, capsys):
    out = tmp_path / "serve.json"
    assert main(["bench", "serve", "--base-url", server.base, "--num-prompts", "12", "--input-len", "16",
                 "--output-len", "6", "--ignore-eos", "--request-rate", "50", "--max-concurrency", "4",
                 "--seed", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    assert (metrics["completed"], metrics["failed"]) == (12, 0)
    assert metrics["total_output_tokens"] == 12 * 6 and metrics["total_input_tokens"] == 12 * 16
    assert report["server"]["model"] == "tiny-chat" and report["meta"]["device"] == "remote"
    assert len(report["requests"]["ttfts_ms"]) == 12 and all(t > 0 for t in report["requests"]["ttfts_ms"])
    assert "TTFT" in capsys.readouterr().out
