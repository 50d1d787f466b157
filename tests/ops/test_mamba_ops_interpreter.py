"""Runs the Triton-kernel-vs-reference cases (`_interp_cases.py`) under the Triton interpreter on CPU.

They run in a subprocess with TRITON_INTERPRET=1 and SAMBAY_KERNELS=triton: the interpreter must be
switched on before triton compiles anything, and an out-of-bounds access there segfaults the process
(the interpreter runs loads as raw host-memory reads), which must not take the whole test session down.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def test_triton_kernels_match_references_in_interpreter_subprocess():
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", SAMBAY_KERNELS="triton", PYTHONPATH=f"{ROOT}{os.pathsep}{HERE}")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(HERE / "_interp_cases.py"), "-q", "-p", "no:cacheprovider",
         "-o", "addopts="],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"interpreter cases failed (rc={proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
