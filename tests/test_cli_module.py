"""`python -m sambay.cli.main` behaves like the `sambay` command (one class of CLIError, not two)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sambay.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_python_dash_m_sambay_cli_main_reports_a_cli_error_in_one_line(capsys):
    argv = ["describe", "no-such-preset"]
    assert main(argv) == 2
    expected = capsys.readouterr().err
    run = subprocess.run([sys.executable, "-m", "sambay.cli.main", *argv], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert run.returncode == 2, run.stderr
    assert run.stderr == expected
    assert run.stderr.startswith("sambay describe: error: unknown preset 'no-such-preset'")
    assert run.stderr.count("\n") == 1
