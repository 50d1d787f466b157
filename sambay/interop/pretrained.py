"""`from_pretrained` / `save_pretrained`: checkpoint folders in the phi4flash or the sambay format.

Loading never needs two copies of the weights: the model is built on the meta device (no storage), every
checkpoint's names and shapes are checked against it from the safetensors headers alone, then tensors are
read shard by shard (memory-mapped, one at a time) and assigned into the model as they arrive.

dtype policy: every floating-point tensor is cast to the model dtype (`dtype`, or by default the stored
dtype of the embedding) — except Mamba's ``A_log`` and ``D``, which keep the dtype they were stored in (the
kernels up-cast them; an fp32 training checkpoint keeps them fp32). Integer tensors are left alone.

Pickle files (.bin/.pt/.pth) are never read here; `sambay.interop.archscale` reads ArchScale training
checkpoints explicitly, with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sambay.config import ModelConfig
from sambay.interop import phi4flash as p4f
from sambay.interop import sambay_format
from sambay.interop.errors import CheckpointError
from sambay.interop.json_files import read_json_file
from sambay.interop.messages import short_list
from sambay.interop.safetensors_header import TensorInfo
from sambay.interop.sharded_save import save_safetensors_sharded
from sambay.interop.state_dict_check import check_state_dict
from sambay.interop.tensor_loading import ProgressPrinter, iter_tensors
from sambay.interop.weight_files import CONFIG_NAME, list_weight_files, read_checkpoint_header, read_config_json
from sambay.model import CausalLM

__all__ = [
    "FORMATS",
    "from_pretrained",
    "save_pretrained",
    "detect_format",
    "read_folder_config",
    "empty_model",
    "load_state_into",
    "resolve_dtype",
    "KEEP_STORED_DTYPE",
]

FORMATS = ("sambay", "phi4flash")
# Parameters that keep the dtype they were stored in (never cast to the model dtype).
KEEP_STORED_DTYPE = (".A_log", ".D")
# Loads bigger than this report progress on stderr unless `progress=False`.
PROGRESS_THRESHOLD_BYTES = 1_000_000_000

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """torch dtype of `dtype` (a torch.dtype, a name such as "bf16"/"bfloat16", or None/"auto")."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.lower().removeprefix("torch.")]
    raise ValueError(f"unknown dtype {dtype!r}; use one of float32, bfloat16, float16 or 'auto'")


# ------------------------------------------------------------------------------------------ formats
@dataclass
class _Layout:
    """How one checkpoint folder's tensor names relate to `CausalLM` parameter names."""

    format: str
    config: ModelConfig
    to_ours: Callable[[str], str | None]  # checkpoint name -> our name (None: not part of the format)
    to_ckpt: Callable[[str], str]  # our name -> checkpoint name
    tied_head_name: str | None = None  # an optional checkpoint tensor that must equal the embedding


def detect_format(raw: dict, source: str = "config.json") -> str:
    """'phi4flash' or 'sambay' from a parsed config.json; CheckpointError for anything else."""
    if "model_type" in raw:
        model_type = raw["model_type"]
        if model_type == p4f.MODEL_TYPE:
            return "phi4flash"
        raise CheckpointError(f"{source}: unsupported model_type {model_type!r}; sambay loads "
                              f"{p4f.MODEL_TYPE!r} (Phi-4-mini-flash) checkpoints and its own format")
    if sambay_format.is_sambay_config(raw):
        return "sambay"
    raise CheckpointError(f"{source}: not a checkpoint config sambay understands: it has neither 'model_type' "
                          "(Hugging Face) nor 'layer_plan' (sambay's own format)")


def _read_optional_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    data = read_json_file(path, what="generation config")
    return data if isinstance(data, dict) else None


def read_folder_config(folder: str | os.PathLike[str]) -> tuple[str, ModelConfig]:
    """(format, ModelConfig) of a checkpoint folder, from its config.json only."""
    folder = Path(folder)
    raw = read_config_json(folder)
    source = str(folder / CONFIG_NAME)
    fmt = detect_format(raw, source)
    if fmt == "phi4flash":
        gen = _read_optional_json(folder / "generation_config.json")
        return fmt, p4f.config_from_hf(raw, source, generation_config=gen)
    return fmt, sambay_format.config_from_dict(raw, source)


def _layout(fmt: str, config: ModelConfig) -> _Layout:
    if fmt == "sambay":
        return _Layout(fmt, config, to_ours=lambda n: n, to_ckpt=lambda n: n)
    plan = config.layer_plan
    return _Layout(fmt, config, to_ours=lambda n: p4f.hf_to_sambay_name(n, plan),
                   to_ckpt=lambda n: p4f.sambay_to_hf_name(n, plan),
                   tied_head_name="lm_head.weight" if config.tie_embeddings else None)


# ------------------------------------------------------------------------------------------ building
def empty_model(config: ModelConfig) -> CausalLM:
    """A `CausalLM` whose parameters live on the meta device (no memory); fill it with `load_state_into`."""
    with torch.device("meta"):
        return CausalLM(config, init=False)


def _set_parameter(model: nn.Module, name: str, tensor: torch.Tensor) -> None:
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name) if module_name else model
    old = module._parameters.get(leaf)
    if old is None:
        raise CheckpointError(f"internal error: the model has no parameter {name!r}")
    module._parameters[leaf] = nn.Parameter(tensor, requires_grad=old.requires_grad)


def _cast(name: str, tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    if dtype is None or not tensor.is_floating_point() or tensor.dtype == dtype or name.endswith(KEEP_STORED_DTYPE):
        return tensor
    return tensor.to(dtype)


def load_state_into(model: CausalLM, tensors: Iterable[tuple[str, torch.Tensor]], *,
                    dtype: torch.dtype | None = None, allow_non_finite: bool = False) -> list[str]:
    """Assign (our name, tensor) pairs into `model` one at a time (casting per the dtype policy).

    Returns the names assigned. Every parameter must be assigned exactly once; anything left on the meta
    device afterwards is an error naming the parameters. A tensor holding NaN or infinities is refused by
    name (a model with one decodes garbage without a word), unless `allow_non_finite` (for debugging).
    """
    expected = dict(model.named_parameters())
    done: list[str] = []
    for name, tensor in tensors:
        if name not in expected:
            raise CheckpointError(f"internal error: unexpected parameter {name!r}")
        want = tuple(expected[name].shape)
        if tuple(tensor.shape) != want:
            raise CheckpointError(f"tensor {name}: expected shape {want}, found {tuple(tensor.shape)}")
        if not tensor.is_floating_point():
            raise CheckpointError(f"tensor {name} has dtype {tensor.dtype}; model weights must be floating-point")
        tensor = _cast(name, tensor, dtype)
        if not allow_non_finite and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"tensor {name} holds {bad:,} NaN or infinite value(s); the checkpoint is "
                                  "corrupt (from_pretrained(..., allow_non_finite=True) loads it anyway)")
        _set_parameter(model, name, tensor)
        done.append(name)
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise CheckpointError(f"{len(left)} parameter(s) were not loaded: {', '.join(left[:20])}")
    return done


def _progress_callback(progress: Any, total: int, label: str) -> Callable[[int, int], None] | None:
    if progress is None:
        progress = total >= PROGRESS_THRESHOLD_BYTES
    if progress is True:
        return ProgressPrinter(label)
    if progress is False:
        return None
    if callable(progress):
        return progress
    raise ValueError(f"progress must be None, a bool or a callable(done_bytes, total_bytes), got {progress!r}")


def from_pretrained(path: str | os.PathLike[str], dtype: torch.dtype | str | None = None,
                    device: torch.device | str | None = None, *, progress: Any = None,
                    allow_non_finite: bool = False, allow_external_links: bool = False) -> CausalLM:
    """Load a checkpoint folder: Hugging Face phi4flash (Phi-4-mini-flash) or sambay's own format.

    Args:
        path: folder with config.json and model.safetensors (or shards + model.safetensors.index.json).
        dtype: model dtype (torch dtype or "float32"/"bfloat16"/"float16"; None/"auto": the stored dtype
            of the embedding). A_log and D keep their stored dtype.
        device: where the tensors are materialised (default CPU); read straight from the files to it.
        progress: None (report on stderr for loads over 1 GB), True/False, or callable(done, total) bytes.
        allow_non_finite: load tensors holding NaN or infinities (refused by name otherwise; on a GPU the
            check runs on the device, after the copy).
        allow_external_links: load weight files that are symbolic links to files outside the folder (refused
            otherwise, except within a Hugging Face cache entry; see `list_weight_files`).

    The returned model is in eval mode. Raises `CheckpointError` (one readable message) for a missing or
    malformed config, an unsupported model_type, missing/unexpected tensors (listed by name), shape
    mismatches (name and both shapes), integer or bool weights (name and dtype), truncated/corrupt
    safetensors files, or pickle-only folders.
    """
    folder = Path(path)
    if not folder.exists():
        raise CheckpointError(f"checkpoint folder not found: {folder}")
    if not folder.is_dir():
        hint = (" (an ArchScale training checkpoint? convert it first: sambay convert --from archscale "
                f"{folder} --preset NAME --depth L --out DIR)" if folder.suffix in (".pth", ".pt", ".ckpt") else "")
        raise CheckpointError(f"expected a checkpoint folder, got a file: {folder}{hint}")
    dtype = resolve_dtype(dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")
    fmt, config = read_folder_config(folder)
    layout = _layout(fmt, config)
    files = list_weight_files(folder, allow_external_links=allow_external_links)
    header = read_checkpoint_header(folder, allow_external_links=allow_external_links)

    model = empty_model(config)
    ours = {n: tuple(p.shape) for n, p in model.named_parameters()}
    expected = {layout.to_ckpt(n): s for n, s in ours.items()}
    head = layout.tied_head_name
    if head is not None and head in header:
        expected[head] = ours["embed.weight"]
    check_state_dict(expected, header, context=f"{folder} ({fmt} format)")
    _check_floating(header, folder)
    unmapped = [n for n in header if n != head and layout.to_ours(n) not in ours]
    if unmapped:  # cannot happen when the names check passed; kept as a guard against mapping bugs
        raise CheckpointError(f"{folder}: cannot map tensor(s) {unmapped[:10]} to the model")

    embed_name = layout.to_ckpt("embed.weight")
    if dtype is None:
        dtype = _stored_torch_dtype(header[embed_name].dtype, embed_name)
    names = [n for n in header if n != head]
    total = sum(header[n].nbytes for n in names)
    callback = _progress_callback(progress, total, f"loading {folder.name}")

    def mapped() -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in iter_tensors(files, names=names, device=device, progress=callback):
            yield layout.to_ours(name), tensor

    load_state_into(model, mapped(), dtype=dtype, allow_non_finite=allow_non_finite)
    if head is not None and head in header:
        _check_tied_head(files, head, model.embed.weight, device, folder)
    model.eval()
    return model


def _check_floating(header: dict[str, TensorInfo], folder: Path) -> None:
    """Every weight is floating point: an integer or bool tensor (a quantized or corrupt checkpoint) is named
    with its stored dtype, from the headers alone, before any data is read."""
    bad = [f"tensor {n} is stored as {info.dtype}" for n, info in header.items()
           if not (info.dtype == "BF16" or info.dtype.startswith("F"))]
    if bad:
        raise CheckpointError(f"{folder}: {short_list(bad, 5)}; model weights must be floating-point "
                              "(F32, BF16, F16, F64 or F8); a quantized checkpoint must be dequantized first")


_ST_TO_TORCH = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}


def _stored_torch_dtype(st_dtype: str, name: str) -> torch.dtype:
    if st_dtype not in _ST_TO_TORCH:
        raise CheckpointError(f"tensor {name} is stored as {st_dtype}; expected a floating-point dtype "
                              f"({', '.join(_ST_TO_TORCH)})")
    return _ST_TO_TORCH[st_dtype]


def _check_tied_head(files: list[Path], head: str, embed: torch.Tensor, device: torch.device,
                     folder: Path) -> None:
    """A stored lm_head of a tied model must equal the embedding (read after it, so never two big copies
    beyond this one tensor)."""
    for _, tensor in iter_tensors(files, names=[head], device=device):
        if not torch.equal(tensor.to(embed.dtype), embed.detach()):
            diff = (tensor.float() - embed.detach().float()).abs().max().item()
            raise CheckpointError(
                f"{folder}: {head} differs from the embedding (max abs difference {diff:.3g}) but the config "
                "ties them (tie_word_embeddings = true); set tie_word_embeddings to false in config.json if "
                "the head really is separate")


# ------------------------------------------------------------------------------------------ saving
def _state_for_saving(model: CausalLM, layout: _Layout) -> dict[str, torch.Tensor]:
    state = {}
    for name, p in model.named_parameters():
        if p.is_meta:
            raise CheckpointError(f"cannot save: parameter {name} has no data (meta tensor)")
        state[layout.to_ckpt(name)] = p.detach()
    return state


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def save_pretrained(model: CausalLM, path: str | os.PathLike[str], format: str = "sambay",
                    max_shard_size: int | str = "5GB") -> Path:
    """Write `model` to a folder: config.json + model.safetensors (or shards + index).

    format="sambay": config.json is `ModelConfig.to_json()`, tensor names are the model's own.
    format="phi4flash": the Hugging Face layout of Phi-4-mini-flash (config keys and tensor names the
    official remote code reads; a tied head is not stored). Only phi4flash-compatible models can be
    written so (`sambay.interop.phi4flash.incompatibilities` lists why not). The tensors are written as they
    are (dtype included), so loading the folder back gives a bit-identical model.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {format!r}; use one of {', '.join(FORMATS)}")
    config = model.config
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"cannot save to {folder}: it is a file")
    if format == "phi4flash":
        p4f.check_compatible(config)
    layout = _layout(format, config)
    state = _state_for_saving(model, layout)
    dtype = model.embed.weight.dtype
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"sambay_format": sambay_format.FORMAT_VERSION} if format == "sambay" else None
    save_safetensors_sharded(state, folder, max_shard_size=max_shard_size, metadata=metadata)
    if format == "sambay":
        _write_json(folder / CONFIG_NAME, sambay_format.config_to_dict(config))
    else:
        _write_json(folder / CONFIG_NAME, p4f.config_to_hf(config, str(dtype).removeprefix("torch.")))
        gen = folder / "generation_config.json"
        if config.eos_token_id is not None and not gen.exists():
            _write_json(gen, {"eos_token_id": config.eos_token_id})
    return folder


CausalLM.checkpoint_writer = save_pretrained  # `model.save_pretrained(...)` writes through this module
