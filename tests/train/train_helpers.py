"""Shared pieces of the training tests: a tiny run's CLI flags and subprocess launchers (gloo on loopback)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A tiny SambaY (8 layers: M S M S M* F^ | G X, width 32, vocab 64) on the synthetic chain; 256-token
# global batches. LR: eta0 at b = b0 (no √-batch shrink for the toy batch), × √(16/8) for μP++ depth.
TINY = ["--tiny", "--depth", "8", "--d-model", "32", "--model-override", "vocab_size=64", "--data", "synthetic",
        "--seq-len", "32", "--batch-tokens", "256", "--eta0", "2e-2", "--base-batch-tokens", "256",
        "--warmup-tokens", "512", "--eval-batches", "1", "--log-every", "1", "--no-progress", "--threads", "1",
        "--no-tensorboard"]


def env() -> dict:
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    e["GLOO_SOCKET_IFNAME"] = "lo"  # gloo on loopback only
    e["PYTHONPATH"] = str(REPO) + os.pathsep + e.get("PYTHONPATH", "")
    e.pop("WORLD_SIZE", None)
    e.pop("RANK", None)
    e.pop("LOCAL_RANK", None)
    return e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cmd(args: list[str], nproc: int = 1) -> list[str]:
    if nproc == 1:
        return [sys.executable, "-m", "sambay", "train", *args]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--nnodes=1",
            "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "sambay", "train", *args]


def run_train(args: list[str], nproc: int = 1, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `sambay train` (under torchrun when nproc > 1) in its own session: on a timeout the whole process
    group is killed, so no rank outlives the test and slows the rest of the suite."""
    with subprocess.Popen(train_cmd(args, nproc), env=env(), cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            raise AssertionError(f"sambay train timed out after {timeout} s:\n{out[-3000:]}\n{err[-5000:]}") from None
    proc = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    if proc.returncode != 0:
        raise AssertionError(f"sambay train failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def train_records(run_dir: Path) -> list[dict]:
    """Per-step training records (those with a "loss") from metrics.jsonl."""
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "loss" in r]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in train_records(run_dir)}
