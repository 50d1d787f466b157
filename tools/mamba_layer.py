"""One Mamba-1 layer's forward + backward at a training shape: the model's x_proj / dt_proj layout (rows padded
to 16-byte multiples) against the plain one (dt_rank + 2N columns), in the same process.

    python tools/mamba_layer.py [--preset sambay --depth 8 --batch 4 --seq-len 4096] [--compile]

Prints, per variant, the median time of forward + backward (bf16 autocast, fp32 weights, as in training) and
of the projections alone, and checks that both variants give the same output and gradients. The matrix
products' FLOPs are counted so the time is also shown against the bf16 matmul rate measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F
from triton.testing import do_bench

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from sambay.config import ModelConfig  # noqa: E402
from sambay.model.context import ForwardContext  # noqa: E402
from sambay.model.mixers.mamba import Mamba  # noqa: E402


def plain_ssm_inputs(self, x):
    """The unpadded layout: x_proj's (B, T, dt_rank + 2N) output split in place."""
    dt_low, B, C = self.x_proj(x).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
    return F.linear(dt_low, self.dt_proj.weight), B, C, -torch.exp(self.A_log.float())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="sambay")
    ap.add_argument("--depth", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--compile", action="store_true")
    args = ap.parse_args()
    torch.manual_seed(0)
    dev = torch.device("cuda")
    cfg = ModelConfig.from_preset(args.preset, depth=args.depth)
    layer = Mamba(cfg, 0).to(dev)
    ctx = ForwardContext.for_tokens(torch.zeros(args.batch, args.seq_len, dtype=torch.long, device=dev))
    u = torch.randn(args.batch, args.seq_len, cfg.d_model, device=dev, requires_grad=True)
    dy = torch.randn_like(u)
    m = 8192
    a, b = torch.randn(m, m, device=dev, dtype=torch.bfloat16), torch.randn(m, m, device=dev, dtype=torch.bfloat16)
    peak = 2 * m**3 / do_bench(lambda: a @ b, warmup=20, rep=200) / 1e9  # TFLOP/s
    print(f"device {torch.cuda.get_device_name(dev)}; bf16 8192^3 matmul {peak:.0f} TFLOP/s; "
          f"{args.preset} d{args.depth}: d_model {cfg.d_model}, d_inner {cfg.d_inner}, dt_rank {cfg.dt_rank}, "
          f"B x T = {args.batch} x {args.seq_len}, compile={args.compile}")
    tokens = args.batch * args.seq_len
    E, R, N, d = cfg.d_inner, cfg.dt_rank, cfg.d_state, cfg.d_model
    layer_flops = 6 * tokens * (d * 2 * E + E * (R + 2 * N) + R * E + E * d)  # fwd + bwd of the 4 products
    proj_flops = 6 * tokens * (E * (R + 2 * N) + R * E)
    padded_ssm_inputs = Mamba.ssm_inputs
    results = {}
    for name, fn in (("plain", plain_ssm_inputs), ("padded", padded_ssm_inputs)):
        Mamba.ssm_inputs = fn
        fwd = torch.compile(layer.forward) if args.compile else layer.forward
        proj = torch.compile(layer.ssm_inputs) if args.compile else layer.ssm_inputs
        x = torch.randn(args.batch, args.seq_len, E, device=dev, requires_grad=True)

        def step():
            u.grad = None
            layer.zero_grad(set_to_none=True)
            with torch.autocast("cuda", torch.bfloat16):
                out = fwd(u, ctx)
            out.float().backward(dy)

        def proj_step():
            with torch.autocast("cuda", torch.bfloat16):
                dt, B, C, _ = proj(x)
            torch.autograd.backward([dt, B, C], [torch.ones_like(dt), torch.ones_like(B), torch.ones_like(C)])

        step()
        results[name] = (u.grad.clone(), layer.x_proj.weight.grad.clone(), layer.dt_proj.weight.grad.clone())
        t_layer = do_bench(step, warmup=10, rep=200)
        t_proj = do_bench(proj_step, warmup=10, rep=200)
        print(f"{name:>7}: layer fwd+bwd {t_layer:.3f} ms ({layer_flops / t_layer / 1e9 / peak:.1%} of the matmul "
              f"rate for its GEMM FLOPs alone); x_proj + dt_proj fwd+bwd {t_proj:.3f} ms "
              f"({proj_flops / t_proj / 1e9:.1f} TFLOP/s)")
    Mamba.ssm_inputs = padded_ssm_inputs
    for what, p, q in zip(("du", "dW x_proj", "dW dt_proj"), results["plain"], results["padded"]):
        err = ((p - q).abs().max() / p.abs().max().clamp_min(1e-30)).item()
        print(f"  {what}: max |plain - padded| / max |plain| = {err:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
