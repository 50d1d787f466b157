"""A/B revisions of the causal-conv1d Triton kernels in one process (same GPU, same inputs).

    git show REV:sambay/ops/causal_conv1d/triton.py > /tmp/base_conv.py
    python tools/conv_ab.py --rev base=/tmp/base_conv.py [--out FILE]

Times the forward and backward (SiLU, bias) of each file and of the working tree's kernels ("candidate") at
B=8, T=4096, D=4096 and at the SambaY d8 training shape (B=4, D=1984, x the first half of in_proj's
output, as in the model), interleaved, and checks every revision's outputs against the first one's.
"""

from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scan_ab import ab_parser, ab_report, load_revs  # noqa: E402

from sambay.bench.kernels import BF, DEV, ms, rel_err  # noqa: E402
from sambay.ops.causal_conv1d import triton as candidate  # noqa: E402


def compare(rep, revs, Bn, T, D, in_proj_half=False):
    g = torch.Generator(device=DEV).manual_seed(0)
    if in_proj_half:
        x = torch.randn(Bn, T, 2 * D, device=DEV, dtype=BF, generator=g)[..., :D]
    else:
        x = torch.randn(Bn, T, D, device=DEV, dtype=BF, generator=g)
    w = torch.randn(D, 4, device=DEV, dtype=BF, generator=g)
    b = torch.randn(D, device=DEV, dtype=BF, generator=g)
    dout = torch.randn(Bn, T, D, device=DEV, dtype=BF, generator=g)
    rep.say(f"## B={Bn} T={T} D={D} W=4 bf16 + SiLU" + ("; x = half of in_proj's output" if in_proj_half else ""))
    outs = {n: (m.conv_fwd(x, w, b, "silu", None, None), m.conv_bwd(dout, x, w, b, "silu", None, None, None, False))
            for n, m in revs.items()}
    first = next(iter(outs))
    for name, (y, grads) in list(outs.items())[1:]:
        y0, g0 = outs[first]
        rep.say(f"   {name} vs {first}, max rel err: y {rel_err(y, y0):.1e}; dx, dw, db "
                + ", ".join(f"{rel_err(a, r):.1e}" for a, r in zip(grads[:3], g0[:3])))
    times = {n: ([], []) for n in revs}
    for _ in range(2):
        for name, mod in revs.items():
            times[name][0].append(ms(lambda: mod.conv_fwd(x, w, b, "silu", None, None)))
            times[name][1].append(ms(lambda: mod.conv_bwd(dout, x, w, b, "silu", None, None, None, False)))
    nb = Bn * T * D * 2
    for name, (tf, tb) in times.items():
        f, bw = min(tf), min(tb)
        rep.say(f"   {name:10s}: fwd {f:.3f} ms ({2 * nb / f / 1e6 / rep.copy_gb_s:.1%} of copy bw), bwd {bw:.3f} ms "
                f"({3 * nb / bw / 1e6 / rep.copy_gb_s:.1%}, minimal bytes: x, dout in, dx out)")


def main():
    ap = ab_parser(__doc__, "causal_conv1d/triton.py")
    args = ap.parse_args()
    revs = load_revs(ap, args.rev, candidate)
    rep = ab_report("conv", args.rev, args.out)
    compare(rep, revs, 8, 4096, 4096)
    compare(rep, revs, 4, 4096, 1984, in_proj_half=True)


if __name__ == "__main__":
    main()
