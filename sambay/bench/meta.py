"""Where and how a benchmark result was measured, and the one way results are written as JSON.

Every benchmark (`sambay bench generate | engine | prefix-cache | serve | train | kernels | attention`) puts `metadata()` under the key
"meta" of its JSON file: the git commit, the device, the date, the library versions and the exact command.
`write_json` turns NaN and infinities into null, so every file is strict JSON.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import platform
import shlex
import subprocess
import sys
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding sambay/, when run from one


def git_sha(root: Path = _ROOT) -> str:
    """`git rev-parse HEAD` of the checkout this code runs from, or "unknown" (no git, not a checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else "unknown"


def device_name(device=None) -> str:
    """The GPU's name ("NVIDIA H200"), or "cpu"."""
    import torch

    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return device.type


def versions() -> dict[str, str | None]:
    """torch, triton (None when not installed), python and sambay versions."""
    import torch

    import sambay

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    return {"torch": torch.__version__, "triton": triton_version, "python": platform.python_version(),
            "sambay": sambay.__version__}


def command_line(cli_argv: list[str] | None = None) -> str:
    """The command as typed: `sambay ARGS` for the `sambay` CLI (its arguments after the program name, as
    `sambay.cli.main` parsed them), else `python SCRIPT ARGS` from sys.argv."""
    if cli_argv is not None:
        return "sambay " + shlex.join(cli_argv)
    return "python " + shlex.join(sys.argv)


def metadata(device=None, cli_argv: list[str] | None = None) -> dict:
    """The "meta" block of every result file."""
    return {
        "git_sha": git_sha(),
        "device": device_name(device),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "command": command_line(cli_argv),
        "argv": list(sys.argv),
    }


def header_lines(meta: dict) -> list[str]:
    """The metadata as the first lines of a printed report."""
    v = meta["versions"]
    return [f"device: {meta['device']}", f"date: {meta['date']}", f"git: {meta['git_sha']}",
            f"versions: torch {v['torch']}, triton {v['triton']}, python {v['python']}, sambay {v['sambay']}",
            f"command: {meta['command']}"]


def jsonable(obj):
    """`obj` with dataclasses as dicts, tuples and sets as lists, paths as strings and non-finite floats as None."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = dataclasses.asdict(obj)
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(payload) -> str:
    return json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n"


def write_json(path: Path | str, payload) -> None:
    """Write `payload` as strict JSON (NaN and infinities as null), creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(payload))
