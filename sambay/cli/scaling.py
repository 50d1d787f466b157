"""``sambay scaling fit``: fit L(X) = A·X^(-b) + C per architecture (`sambay.analysis.scaling`)."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("scaling", help="scaling-law fits")
    sub = p.add_subparsers(dest="scaling_command", required=True)
    f = sub.add_parser(
        "fit", help="fit L(X) = A*X^-b + C per architecture",
        description="Fit L(X) = A*X^(-b) + C per architecture. --axis compute: X = 6*N*T FLOPs, N from the "
                    "Transformer++ formula at each run's depth and T its recorded tokens (else the paper's budget "
                    "for that depth); --axis tokens: X = billions of tokens. Try it with the paper's own losses: "
                    "sambay scaling fit --published --plot fit.png")
    f.add_argument("runs", nargs="*", metavar="RUNS",
                   help="JSON/JSONL files of {arch, depth, val_loss[, tokens]} records, or run "
                        "directories (metrics.jsonl + config.json)")
    f.add_argument("--axis", choices=("compute", "tokens"), default="compute", help="X of the fit L = A·X^(-b) + C")
    f.add_argument("--plot", metavar="OUT.png", help="write a plot (needs matplotlib)")
    f.add_argument("--published", action="store_true",
                   help="also fit the published SlimPajama losses of the SambaY paper (depths 8-24)")
    f.add_argument("--json", action="store_true", help="print the fits as JSON")
    f.set_defaults(func=run_fit)


def run_fit(args: argparse.Namespace) -> int:
    from sambay.analysis.scaling import PUBLISHED_FITS, fit_runs, load_runs, plot_fits, published_runs
    from sambay.cli.main import CLIError

    try:
        runs = load_runs(args.runs)
        if args.published:
            if args.axis != "compute":
                raise ValueError("--published losses are a compute-axis series (use --axis compute)")
            runs += published_runs()
        if not runs:
            raise ValueError("no runs given (pass RUNS files/directories or --published)")
        fits = fit_runs(runs, args.axis)
    except (ValueError, OSError, json.JSONDecodeError) as e:
        raise CLIError(str(e)) from None
    if args.json:
        print(json.dumps({a: vars(f) for a, f in fits.items()}, indent=1))
    else:
        width = max(len(a) for a in fits)
        print(f"L(X) = A * X^(-b) + C,  X = {'FLOPs' if args.axis == 'compute' else 'tokens (billions)'}")
        for arch, fit in fits.items():
            ref = PUBLISHED_FITS.get(arch)
            note = f"   [published A={ref[0]}, b={ref[1]}, C={ref[2]}]" if ref and args.published else ""
            print(f"{arch:<{width}}  n={fit.n}  {fit.format()}{note}")
    if args.plot:
        try:
            written = plot_fits(runs, fits, args.plot)
        except ImportError:
            raise CLIError("--plot needs matplotlib, which is not installed (pip install matplotlib, or "
                           "pip install 'sambay[plot]'); the fits above are unaffected") from None
        for path in written:
            print(f"wrote {path}")
    return 0
