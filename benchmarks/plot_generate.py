"""Plot a `sambay bench generate --json` result: decode throughput and per-step latency vs generation length.

    python benchmarks/plot_generate.py benchmarks/results/generate-h100.json [--out plot.png]
"""

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sambay.bench.generate import integrate_steps  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = json.loads(args.json.read_text())
    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    for m in data["models"]:
        steps_s = [t / 1e3 for t in m["step_ms"]]
        gens = [g for g in (500, 1000, 2000, 4000, 8000, 16000, 32000) if g <= m["gen_len"]]
        throughput = [m["batch"] * g / integrate_steps(m["contexts"], steps_s, m["prompt_len"], g) for g in gens]
        label = f"{m['name']} (batch {m['batch']})"
        ax_tp.plot(gens, throughput, marker="o", label=label)
        ax_lat.plot([c - m["prompt_len"] for c in m["contexts"]], m["step_ms"], marker="o", label=label)
    ax_tp.set(xscale="log", xlabel="generated tokens", ylabel="decode tokens/s (all sequences)",
              title="throughput (batch: the most that fit 2K + 32K)")
    ax_lat.set(xlabel="generated tokens so far", ylabel="ms per decode step", title="per-step latency")
    for ax in (ax_tp, ax_lat):
        ax.grid(alpha=0.3)
        ax.legend()
    meta = data["meta"]
    fig.suptitle(f"{meta['device']}, prompt {data['models'][0]['prompt_len']}, {meta['date']}", fontsize=9)
    fig.tight_layout()
    out = args.out or args.json.with_suffix(".png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
