"""A/B revisions of the selective-scan Triton kernels in one process (same GPU, same inputs, same clocks).

    git show REV:sambay/ops/selective_scan/triton.py > /tmp/base_scan.py
    python tools/scan_ab.py --rev base=/tmp/base_scan.py [--rev other=PATH ...] [--out FILE] [--once]

Times the forward (inference and with saved states) and the backward of each given file and of the working
tree's `sambay/ops/selective_scan/triton.py` ("candidate") at the benchmark shape (B=8, T=4096, D=4096) and
the SambaY d8 training shape (B=4, D=1984, B and C sliced out of x_proj's output as in the model), interleaving them so clock drift hits all alike, and checks every
revision's outputs against the first one's. Each time is the lower of two interleaved rounds of
`triton.testing.do_bench` medians. `--once` runs each kernel once without timing, for a profiler (ncu).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sambay.bench.kernels import ms, rel_err, scan_bytes, scan_inputs  # noqa: E402
from sambay.bench.meta import metadata  # noqa: E402
from sambay.bench.report import Report, measure_ceilings  # noqa: E402
from sambay.ops.selective_scan import triton as candidate  # noqa: E402


def load_rev(name: str, path: str):
    spec = importlib.util.spec_from_file_location(f"scan_kernels_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_revs(ap, specs, candidate):
    """{name: module} for the --rev NAME=PATH specs, then the working tree's module as "candidate"."""
    revs = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not os.path.isfile(path):
            ap.error(f"--rev {spec!r}: expected NAME=PATH of an existing file")
        revs[name] = load_rev(name, path)
    revs["candidate"] = candidate
    return revs


def compare(rep, revs, Bn, T, D, N, once=False, bc_slices=False):
    u, delta, A, Bm, Cm, Dv, z, dtb = scan_inputs(Bn, T, D, N, bc_slices=bc_slices)
    fwd_bytes, bwd_bytes = scan_bytes(Bn, T, D, N)
    rep.say(f"## B={Bn} T={T} D={D} N={N} bf16 (z, D, delta_bias, softplus)"
            + ("; B, C as x_proj column slices, as in the model" if bc_slices else ""))
    res = {}
    for name, mod in revs.items():
        y = mod.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True)[0]
        _, _, hs = mod.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, True)
        dy = torch.randn_like(y, generator=torch.Generator(device=y.device).manual_seed(1))
        grads = mod.scan_bwd(dy, None, u, delta, A, Bm, Cm, Dv, z, dtb, None, hs, True)
        res[name] = dict(mod=mod, y=y, hs=hs, dy=dy, grads=grads)
    if once:
        torch.cuda.synchronize()
        return
    first = next(iter(res))
    for name, r in list(res.items())[1:]:
        errs = [rel_err(r["y"], res[first]["y"])]
        errs += [rel_err(c, b) for c, b in zip(r["grads"][:5], res[first]["grads"][:5])]
        rep.say(f"   {name} vs {first}, max rel err: y {errs[0]:.1e}; du, ddelta, dA, dB, dC "
                + ", ".join(f"{e:.1e}" for e in errs[1:]))
    times = {name: {"fwd": [], "fwd_train": [], "bwd": []} for name in res}
    for _ in range(2):  # interleaved rounds
        for name, r in res.items():
            mod, hs, dy = r["mod"], r["hs"], r["dy"]
            times[name]["fwd"].append(ms(lambda: mod.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True)))
            times[name]["fwd_train"].append(
                ms(lambda: mod.scan_fwd(u, delta, A, Bm, Cm, Dv, z, dtb, None, None, True, True)))
            times[name]["bwd"].append(
                ms(lambda: mod.scan_bwd(dy, None, u, delta, A, Bm, Cm, Dv, z, dtb, None, hs, True)))
    for name, t in times.items():
        f, ft, b = min(t["fwd"]), min(t["fwd_train"]), min(t["bwd"])
        regs = ", ".join(f"{k} {v.n_regs} regs/{v.n_spills} spills" for k, v in res[name]["mod"].LAUNCHED.items())
        rep.say(f"   {name:10s}: fwd {f:.3f} ms ({fwd_bytes / f / 1e6 / rep.copy_gb_s:.1%} of copy bw), fwd saving states "
                f"{ft:.3f} ms, bwd {b:.3f} ms ({bwd_bytes / b / 1e6 / rep.copy_gb_s:.1%}); fwd(saving)+bwd = {(ft + b) / f:.2f}x inference fwd  [{regs}]")


def ab_parser(doc: str, kernel_file: str) -> argparse.ArgumentParser:
    """The arguments every A/B tool takes: --rev NAME=PATH (repeatable) and --out FILE."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rev", action="append", default=[], metavar="NAME=PATH",
                    help=f"a revision's {kernel_file} (repeatable); the working tree's is 'candidate'")
    ap.add_argument("--out", default=None, help="also write the report to this file")
    return ap


def ab_report(kind: str, specs: list[str], out: str | None, ceilings: bool = True) -> Report:
    """The report of an A/B run, its header printed and (unless `ceilings` is False) the copy bandwidth measured."""
    rep = Report(f"{kind}-ab", metadata("cuda"), text_path=out)
    rep.say(f"# {kind} A/B: {', '.join(specs)} vs the working tree (candidate)")
    rep.header()
    if ceilings:
        rep.set_ceilings(*measure_ceilings())
    rep.say(f"   copy bandwidth {rep.copy_gb_s:.0f} GB/s")
    return rep


def main():
    ap = ab_parser(__doc__, "selective_scan/triton.py")
    ap.add_argument("--once", action="store_true", help="run each kernel once, untimed (for ncu)")
    args = ap.parse_args()
    revs = load_revs(ap, args.rev, candidate)
    rep = ab_report("scan", args.rev, args.out, ceilings=not args.once)
    compare(rep, revs, 8, 4096, 4096, 16, args.once)
    compare(rep, revs, 4, 4096, 1984, 16, args.once, bc_slices=True)


if __name__ == "__main__":
    main()
