"""Plot training runs' loss curves from their `metrics.jsonl` files: training loss (per logged step) and
validation loss at 1x and 2x the training length, against training tokens.

    python benchmarks/plot_loss.py NAME=METRICS.jsonl [NAME=METRICS.jsonl ...] --out loss.png
"""

import argparse
import json
from pathlib import Path


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """{'loss' | 'val_loss' | 'val_loss_2x': [(tokens, value), ...]}; a step's record may repeat (the
    final step is logged with and without its evaluation): the last one wins."""
    curves: dict[str, dict[int, float]] = {"loss": {}, "val_loss": {}, "val_loss_2x": {}}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        for key, points in curves.items():
            if key in rec and rec[key] is not None:
                points[rec["tokens"]] = rec[key]
    return {k: sorted(v.items()) for k, v in curves.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="NAME=METRICS")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for spec in args.runs:
        name, _, path = spec.partition("=")
        if not path:
            p.error(f"expected NAME=METRICS.jsonl, got {spec!r}")
        curves = read_curves(Path(path))
        (line,) = ax_train.plot(*zip(*[(t / 1e6, v) for t, v in curves["loss"]]), label=name)
        for key, style in (("val_loss", "-o"), ("val_loss_2x", "--x")):
            if curves[key]:
                xs, ys = zip(*[(t / 1e6, v) for t, v in curves[key]])
                ax_val.plot(xs, ys, style, color=line.get_color(),
                            label=f"{name} ({'2x' if key.endswith('2x') else '1x'} length)")
    for ax, title in ((ax_train, "training loss"), (ax_val, "validation loss")):
        ax.set_xlabel("training tokens (M)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
