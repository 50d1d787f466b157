"""Default sampling from a model folder's `generation_config.json`, as vLLM applies it: a request field the
client leaves out takes the model's value (e.g. Phi-4-mini-flash-reasoning's temperature and top_p)."""

from __future__ import annotations

import math
from pathlib import Path

from sambay.interop.errors import CheckpointError
from sambay.interop.json_files import read_json_object

# generation_config.json key -> request field
FIELDS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
          "repetition_penalty": "repetition_penalty", "max_new_tokens": "max_tokens"}


def generation_defaults(source: str | None, model_dir: Path | None) -> dict[str, float | int]:
    """`source`: "auto" (the model folder's file, if any), "none" (library defaults), or a folder or file.
    -> {request field: value} for the sampling keys it sets (do_sample false means greedy)."""
    if source in (None, "none"):
        return {}
    if source == "auto":
        if model_dir is None or not (model_dir / "generation_config.json").is_file():
            return {}
        path = model_dir / "generation_config.json"
    else:
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / "generation_config.json"
    raw = read_json_object(path, "generation config")
    out: dict[str, float | int] = {}
    for key, field in FIELDS.items():
        value = raw.get(key)
        if value is None:
            continue
        integer = field in ("top_k", "max_tokens")
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not math.isfinite(value):
            raise CheckpointError(f"{path}: {key} must be {'an integer' if integer else 'a number'}, got {value!r}")
        out[field] = value
    if raw.get("do_sample") is False:
        out["temperature"] = 0.0
    return out
