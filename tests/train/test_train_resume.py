"""Kill-and-resume: SIGKILL a CPU run after a checkpoint, `--resume auto`, and get the uninterrupted curve."""

import json
import signal
import subprocess
import time

from train_helpers import REPO, TINY, env, losses, run_train, train_cmd

STEPS = 16


def test_killed_run_resumes_with_identical_losses(tmp_path):
    args = [*TINY, "--tokens", str(256 * STEPS), "--ckpt-every", "4", "--eval-every", "1000"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_train([*args, "--run-dir", str(whole)])
    reference = losses(whole)
    assert sorted(reference) == list(range(1, STEPS + 1))

    proc = subprocess.Popen(train_cmd([*args, "--run-dir", str(broken)]), env=env(), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = broken / "checkpoints" / "step-00000004"
    deadline = time.monotonic() + 90
    while not first.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # no handler runs: whatever was mid-write stays as it is
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = sorted(int(p.name[5:]) for p in (broken / "checkpoints").glob("step-*"))
    assert done and done[-1] < STEPS

    out = run_train([*args, "--run-dir", str(broken), "--resume", "auto"])
    assert f"at step {done[-1]}" in out.stdout
    resumed = losses(broken)
    assert sorted(resumed) == list(range(1, STEPS + 1))  # records after the checkpoint were replaced
    assert resumed == reference  # bitwise-equal floats: same weights, optimizer moments, data and LR
    lines = (broken / "metrics.jsonl").read_text().splitlines()
    assert len([r for r in map(json.loads, lines) if "loss" in r]) == STEPS
