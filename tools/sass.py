"""Compile the selective-scan kernels for sm_90 on a machine without a GPU and count their SASS per loop.

    PYTHONPATH=/tmp/triton36 python tools/sass.py [--shape d8|b8] [--kernel fwd|bwd|all] [--dump DIR]
        [--inference] [--set NAME=INT ...]

(`pip install --target /tmp/triton36 triton==3.6.0` first: the device machine's Triton, which brings its
own ptxas and cuobjdump.) The real launch code runs on CPU tensors of the chosen shape; a stand-in driver
reports an sm_90 target with 132 SMs, and every launch becomes a `warmup` (compile, no launch), so each
kernel is specialised exactly as it would be on the GPU (block sizes, segments, 16-byte divisibility of
pointers and strides). For every compiled kernel it prints its registers and, per loop (a backward
branch in the SASS), the instruction count, the opcode mix and the shortest distance from a global load to
its first use (a copy of a prefetched value waiting on its load shows up there): the cheapest way to see what
a change does to a loop before spending device time on it.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.runtime import driver
from triton.runtime.jit import JITFunction

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SHAPES = {"d8": (4, 4096, 1984, 16), "b8": (8, 4096, 4096, 16)}  # (batch, T, d_inner, d_state)
SMS = 132


class _Sm90Driver:
    """Just enough of a Triton driver for `JITFunction.run(warmup=True)` to compile for sm_90."""

    def get_current_device(self):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", 90, 32)

    def get_current_stream(self, device=None):
        return 0

    def get_active_torch_device(self):
        return torch.device("cpu")

    def is_active(self):
        return True


def compile_launches(run) -> list:
    """Call `run()` with every Triton launch turned into a compile-only warmup; returns the compiled kernels
    in launch order."""
    compiled = []
    original = JITFunction.__getitem__

    def warmup_only(self, grid):
        def launch(*args, **kwargs):
            ck = self.run(*args, grid=grid, warmup=True, **kwargs)
            compiled.append(ck)
            return ck
        return launch

    driver.set_active(_Sm90Driver())
    JITFunction.__getitem__ = warmup_only
    try:
        run()
    finally:
        JITFunction.__getitem__ = original  # the stand-in driver stays: this process only compiles
    return compiled


def cuobjdump(ck, flag: str) -> str:
    """`cuobjdump FLAG` of the kernel's cubin (-sass: the machine code; -res-usage: registers, stack)."""
    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "k.cubin"
        f.write_bytes(ck.asm["cubin"])
        return subprocess.run([str(tool), flag, str(f)], check=True, capture_output=True, text=True).stdout


_INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


_REG = re.compile(r"(?<![\w.])R(\d+)(\.64)?")


def _regs(operands: str) -> set[int]:
    """Vector registers an operand list names (R4.64 is R4 and R5); UR / SR / P registers are not matched."""
    out = set()
    for m in _REG.finditer(operands):
        out.add(int(m.group(1)))
        if m.group(2):
            out.add(int(m.group(1)) + 1)
    return out


def load_to_use(body: list[tuple[int, str, str]]) -> tuple[int, int, str] | None:
    """The shortest distance, in instructions, from a global load in a loop body to the first instruction
    that reads its result, following the back edge: (distance, load address, reading opcode). A short one
    means a stall each trip; the classic case is a register copy the compiler adds at the end of the loop
    for a value prefetched into a loop-carried register, which waits for the load right after issuing it."""
    best = None
    for k, (addr, op, rest) in enumerate(body):
        if not op.startswith("LDG"):
            continue
        dst, *_ = rest.split(",")
        width = 4 if ".128" in op else 2 if ".64" in op else 1
        base = _regs(dst)
        loaded = {r + i for r in base for i in range(width)}
        for j in range(1, len(body) + 1):
            _, op2, rest2 = body[(k + j) % len(body)]
            reads = _regs(rest2) if op2.startswith("ST") else _regs(rest2.split(",", 1)[1] if "," in rest2 else "")
            if loaded & reads:
                if best is None or j < best[0]:
                    best = (j, addr, op2)
                break
    return best


def loops(sass: str) -> list[tuple[int, int, collections.Counter, tuple | None]]:
    """(start, end, opcode counts, `load_to_use`) of every loop, innermost first: a branch to an earlier
    address."""
    instrs = [(int(m.group(1), 16), m.group(3), m.group(4)) for m in _INSTR.finditer(sass)]
    found = []
    for addr, op, rest in instrs:
        if op.startswith("BRA"):
            target = re.search(r"0x([0-9a-f]+)", rest)
            if target and int(target.group(1), 16) <= addr:
                lo = int(target.group(1), 16)
                body = [i for i in instrs if lo <= i[0] <= addr]
                found.append((lo, addr, collections.Counter(o.split(".")[0] for _, o, _ in body), load_to_use(body)))
    return sorted(found, key=lambda x: x[1] - x[0])


def report(name: str, ck) -> str:
    sass = cuobjdump(ck, "-sass")
    usage = re.search(r"REG:(\d+) STACK:(\d+)", cuobjdump(ck, "-res-usage"))
    lines = [f"{name}: {usage.group(1)} registers, {usage.group(2)} bytes of stack, {ck.metadata.num_warps} "
             f"warps, {sum(1 for _ in _INSTR.finditer(sass))} instructions"]
    for lo, hi, body, use in loops(sass):
        top = ", ".join(f"{op} {n}" for op, n in body.most_common(14))
        lines.append(f"  loop {lo:#06x}-{hi:#06x}: {sum(body.values())} instructions: {top}")
        if use:
            lines.append(f"    shortest load-to-use: {use[0]} instructions (LDG at {use[1]:#06x}, read by {use[2]})")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="d8")
    ap.add_argument("--kernel", choices=("fwd", "bwd", "all"), default="all")
    ap.add_argument("--no-z", action="store_true", help="the memory layer's scan (no z gate)")
    ap.add_argument("--inference", action="store_true", help="the forward without saved states (no autograd)")
    ap.add_argument("--dump", type=Path, help="also write each kernel's SASS to this directory")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=INT",
                    help="override an integer module constant of the scan kernels, e.g. FWD_ONEPASS_BC_RING=4 "
                         "(repeatable)")
    args = ap.parse_args()

    from sambay.ops.selective_scan import triton as scan

    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep or not name.isupper() or not isinstance(getattr(scan, name, None), int):
            ap.error(f"--set {item!r}: expected NAME=INT for an integer constant of sambay.ops.selective_scan.triton")
        try:
            setattr(scan, name, int(value))
        except ValueError:
            ap.error(f"--set {item!r}: {value!r} is not an integer")
    scan._sm_count = lambda device: SMS
    Bn, T, D, N = SHAPES[args.shape]
    bf = torch.bfloat16
    u, delta, dy = (torch.zeros(Bn, T, D, dtype=bf) for _ in range(3))
    z = None if args.no_z else torch.zeros(Bn, T, D, dtype=bf)
    xproj = torch.zeros(Bn, T, 96, dtype=bf)  # the model's padded x_proj output: [dt 64 | B 16 | C 16]
    B, C = xproj[..., 64:80], xproj[..., 80:96]
    A = torch.zeros(D, N)
    Dp, dtb = torch.zeros(D), torch.zeros(D)
    states = torch.zeros(Bn, scan.num_chunks(T), N, D)
    print(f"triton {triton.__version__}, sm_90, {SMS} SMs; shape B={Bn} T={T} D={D} N={N}, z={z is not None}")
    runs = {
        "fwd": lambda: scan.scan_fwd(u, delta, A, B, C, Dp, z, dtb, save_states=not args.inference),
        "bwd": lambda: scan.scan_bwd(dy, None, u, delta, A, B, C, Dp, z, dtb, None, states),
    }
    for which in (("fwd", "bwd") if args.kernel == "all" else (args.kernel,)):
        for i, ck in enumerate(compile_launches(runs[which])):
            name = f"{which}[{i}] {ck.name}"
            print(report(name, ck))
            if args.dump:
                args.dump.mkdir(parents=True, exist_ok=True)
                (args.dump / f"{which}{i}-{ck.name}.sass").write_text(cuobjdump(ck, "-sass"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
