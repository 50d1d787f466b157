"""Import of ArchScale (lit-gpt based) training checkpoints: `iter-XXXXXX-ckpt.pth`.

The file holds ``{"model": state_dict, "optimizer": ..., "hparams": {...}, "iter_num": ..., ...}`` (a bare
state dict is accepted too). It is read with ``torch.load(weights_only=True, mmap=True)``: only tensors
and plain containers are unpickled, and tensor data stays memory-mapped until it is converted.

ArchScale parameter names (release ``1fbcceb``, `lit_gpt/model.py`, `mamba_simple.py`,
`gated_memory_unit.py`, `diff_attn.py`) -> sambay:

    transformer.wte.weight                      embed.weight
    transformer.ln_f.{weight,bias}              final_norm.*
    lm_head.weight                              lm_head.weight (untied) / must equal wte (tied; aliased in the file)
    transformer.h.{i}.norm_1.* / norm_2.*       layers.{i}.norm1.* / norm2.*
    transformer.h.{i}.mlp.w1.weight             layers.{i}.mlp.fc1.weight  ([gate | value], same order)
    transformer.h.{i}.mlp.w3.weight             layers.{i}.mlp.fc2.weight
    (legacy) mlp.swiglu.w1 / w2 / w3            fc1 = [w1 ; w2], fc2 = w3
    (the per-mixer renames below are declared by each mixer class, `checkpoint_names["archscale"]`)
    self-attention layers (swa, full, full_kv):
      attn.attn.{weight,bias}                   mixer.qkv.*   fused *grouped-interleaved* -> [q | k | v]
      attn.proj.{weight,bias}                   mixer.out_proj.*
      attn.da.{lambda_q1,lambda_k1,lambda_q2,lambda_k2,subln.weight}   mixer.diff.*
    cross-attention layers: attn.attn.* (query only) -> mixer.q_proj.*; proj and da as above
    Mamba layers: attn.{in_proj,conv1d,x_proj,dt_proj,out_proj}.*, attn.A_log, attn.D -> mixer.* (same names)
    GMU layers: attn.gmu.{in_proj,out_proj,norm}.weight -> mixer.{in_proj,out_proj,norm}.weight

Grouped-interleaved fused qkv: the output rows of ``attn.attn`` are viewed as (G, H/G + 2, hs): for each
KV group g, its H/G query heads (query head g·H/G + j), then its key head, then its value head. sambay's
`qkv` (like the Hugging Face Phi-4-flash `Wqkv`) is the plain concatenation [q heads | k heads | v heads].

The architecture comes from a sambay preset and depth (ArchScale configs are named presets too); settings
that ArchScale took from the run name are read back from the checkpoint's ``hparams`` where present
(μP++ vs SP, tied embeddings, ``swa_len``) and tying is also detected from the tensors. Explicit
overrides win.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from sambay.config import ConfigError, ModelConfig
from sambay.interop.errors import CheckpointError
from sambay.interop.layer_names import rename_mixer_param
from sambay.interop.state_dict_check import check_state_dict

__all__ = [
    "read_archscale_checkpoint",
    "infer_overrides",
    "archscale_config",
    "archscale_to_sambay",
    "sambay_to_archscale",
    "qkv_grouped_to_concat",
    "qkv_concat_to_grouped",
    "sambay_to_archscale_name",
    "convert_archscale",
]

_WRAPPER_PREFIXES = ("_forward_module.", "_orig_mod.", "module.")


# ------------------------------------------------------------------------------------------ reading
def read_archscale_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, hparams) of an ArchScale checkpoint file; hparams is {} when absent.

    Only ``torch.load(..., weights_only=True)`` is used. Wrapper prefixes added by Lightning Fabric or
    torch.compile (``_forward_module.``, ``_orig_mod.``, ``module.``) are stripped.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"ArchScale checkpoint not found: {path}")
    if path.is_dir():
        candidates = sorted(path.glob("iter-*-ckpt.pth"))
        hint = f"; it contains {', '.join(p.name for p in candidates[-3:])}" if candidates else ""
        raise CheckpointError(f"{path} is a folder; pass the checkpoint file itself (iter-XXXXXX-ckpt.pth){hint}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"{path}: refusing to load it: it holds objects other than tensors and plain containers, and "
            f"sambay only unpickles with weights_only=True ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first}") from None
    hparams: dict[str, Any] = {}
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        state = obj["model"]
        if isinstance(obj.get("hparams"), Mapping):
            hparams = dict(obj["hparams"])
    elif isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else None
        raise CheckpointError(f"{path}: expected an ArchScale checkpoint ({{'model': state_dict, ...}}) or a bare "
                              f"state dict, found {'a dict with keys ' + str(keys[:10]) if keys is not None else type(obj).__name__}")
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: the model state dict has non-tensor entries: {bad[:10]}")
    return _strip_prefixes(dict(state)), hparams


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


# ------------------------------------------------------------------------------------------ config
def infer_overrides(hparams: Mapping[str, Any], depth: int | None = None) -> dict[str, Any]:
    """ModelConfig changes implied by an ArchScale run's hparams (run-name switches and --swa_len)."""
    out: dict[str, Any] = {}
    run = hparams.get("train_config") or hparams.get("train_name")
    run = run if isinstance(run, str) else ""
    if hparams.get("original_mup") is True or "_ori_mup" in run:
        raise CheckpointError("this ArchScale run used the original μP ('_ori_mup'); sambay implements SP and "
                              "μP++ only")
    mup = hparams.get("mup")
    if isinstance(mup, bool):
        out["parametrization"] = "mup++" if mup else "sp"
    elif run:
        out["parametrization"] = "mup++" if "mup" in run else "sp"
    if "_tie" in run:
        out["tie_embeddings"] = True
    if "_rbase_" in run:
        out["rope_base"] = 640000.0
    swa = hparams.get("swa_len")
    if type(swa) is int and swa > 0:
        out["window"] = swa
    d0 = hparams.get("d0")
    if type(d0) is int and d0 > 0:
        out["mup_base_depth"] = d0
    run_depth = hparams.get("depth")
    if depth is not None and type(run_depth) is int and run_depth != depth:
        raise CheckpointError(f"the checkpoint was trained with depth {run_depth} but depth {depth} was requested")
    return out


def archscale_config(preset: str, depth: int | None, state: Mapping[str, torch.Tensor],
                     hparams: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
                     ) -> ModelConfig:
    """The sambay config of an ArchScale checkpoint: preset + depth, hparams hints, tying seen in the
    tensors, then explicit `overrides` (which win)."""
    changes = infer_overrides(hparams or {}, depth)
    head, wte = state.get("lm_head.weight"), state.get("transformer.wte.weight")
    if wte is not None:
        changes["tie_embeddings"] = head is None or _same_tensor(head, wte)
    changes.update(overrides or {})
    if "d_model" in changes and "dt_rank" not in changes:
        changes["dt_rank"] = None  # re-derive ceil(d_model / 16) instead of keeping the preset's value
    try:
        return ModelConfig.from_preset(preset, depth=depth, **changes)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"cannot build the {preset!r} config for this checkpoint: {e}") from None


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.data_ptr() == b.data_ptr():
        return True
    return bool(torch.equal(a, b))


# ------------------------------------------------------------------------------------------ qkv layout
def qkv_grouped_to_concat(w: torch.Tensor, n_head: int, n_kv: int, head_dim: int) -> torch.Tensor:
    """Rows (G, H/G + 2, hs) grouped-interleaved -> [q (H·hs) | k (G·hs) | v (G·hs)]. Works for a weight
    (rows, d) or a bias (rows,)."""
    per = n_head // n_kv
    g = w.reshape(n_kv, per + 2, head_dim, *w.shape[1:])
    q = g[:, :per].reshape(n_head * head_dim, *w.shape[1:])
    k = g[:, per].reshape(n_kv * head_dim, *w.shape[1:])
    v = g[:, per + 1].reshape(n_kv * head_dim, *w.shape[1:])
    return torch.cat([q, k, v], dim=0)


def qkv_concat_to_grouped(w: torch.Tensor, n_head: int, n_kv: int, head_dim: int) -> torch.Tensor:
    """Inverse of `qkv_grouped_to_concat`."""
    per = n_head // n_kv
    rest = w.shape[1:]
    q, k, v = w.split([n_head * head_dim, n_kv * head_dim, n_kv * head_dim], dim=0)
    q = q.reshape(n_kv, per, head_dim, *rest)
    k = k.reshape(n_kv, 1, head_dim, *rest)
    v = v.reshape(n_kv, 1, head_dim, *rest)
    return torch.cat([q, k, v], dim=1).reshape(-1, *rest)


# ------------------------------------------------------------------------------------------ names
_GLOBAL = {"embed.weight": "transformer.wte.weight", "final_norm.weight": "transformer.ln_f.weight",
           "final_norm.bias": "transformer.ln_f.bias", "lm_head.weight": "lm_head.weight"}
_OUR_LAYER = re.compile(r"layers\.(\d+)\.(.+)")


def sambay_to_archscale_name(name: str, layer_plan: list[str]) -> str:
    """ArchScale name of a sambay parameter name."""
    if name in _GLOBAL:
        return _GLOBAL[name]
    m = _OUR_LAYER.fullmatch(name)
    if not m:
        raise CheckpointError(f"parameter {name!r} has no ArchScale name")
    i, rest = int(m.group(1)), m.group(2)
    prefix = f"transformer.h.{i}."
    simple = {"norm1.": "norm_1.", "norm2.": "norm_2.", "mlp.fc1.": "mlp.w1.", "mlp.fc2.": "mlp.w3."}
    for ours, theirs in simple.items():
        if rest.startswith(ours):
            return prefix + theirs + rest[len(ours):]
    theirs = rename_mixer_param(layer_plan[i], rest.removeprefix("mixer."), "archscale", to_format=True)
    if not rest.startswith("mixer.") or theirs is None:
        raise CheckpointError(f"parameter {name!r} has no ArchScale name")
    return prefix + theirs


def _legacy_mlp(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fold the legacy `mlp.swiglu.{w1,w2,w3}` layout into w1 = [w1; w2], w3 (the current layout)."""
    out = dict(state)
    for key in [k for k in state if k.endswith(".mlp.swiglu.w1.weight")]:
        base = key[: -len("swiglu.w1.weight")]
        w2, w3 = state.get(base + "swiglu.w2.weight"), state.get(base + "swiglu.w3.weight")
        if w2 is None or w3 is None:
            continue
        out[base + "w1.weight"] = torch.cat([state[key], w2], dim=0)
        out[base + "w3.weight"] = w3
        for suffix in ("w1.weight", "w2.weight", "w3.weight"):
            out.pop(base + "swiglu." + suffix)
    return out


def archscale_to_sambay(state: Mapping[str, torch.Tensor], config: ModelConfig, source: str = "checkpoint",
                        dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """sambay state dict (our names) of an ArchScale state dict, checked against `config` first.

    Missing / unexpected tensors and shape mismatches are reported in ArchScale names in one error.
    Floating tensors are cast to `dtype` when given (A_log and D keep their stored dtype).
    """
    from sambay.interop.pretrained import KEEP_STORED_DTYPE, empty_model

    state = _legacy_mlp(_strip_prefixes(dict(state)))
    model = empty_model(config)
    ours = {n: tuple(p.shape) for n, p in model.named_parameters()}
    to_arch = {n: sambay_to_archscale_name(n, config.layer_plan) for n in ours}
    expected = {to_arch[n]: s for n, s in ours.items()}
    found = dict(state)
    if config.tie_embeddings and "lm_head.weight" in found:
        wte = found.get("transformer.wte.weight")
        if wte is not None and not _same_tensor(found["lm_head.weight"], wte):
            raise CheckpointError(f"{source}: lm_head.weight differs from transformer.wte.weight but the config "
                                  "ties them; convert with tie_embeddings=false")
        found.pop("lm_head.weight")
    check_state_dict(expected, {k: tuple(v.shape) for k, v in found.items()}, context=f"{source} (ArchScale)")
    out = {}
    for n in ours:
        t = found[to_arch[n]]
        if ".mixer.qkv." in n:  # self-attention's fused projection
            t = qkv_grouped_to_concat(t, config.n_head, config.n_kv_head, config.head_dim)
        if dtype is not None and t.is_floating_point() and not n.endswith(KEEP_STORED_DTYPE):
            t = t.to(dtype)
        out[n] = t
    return out


def sambay_to_archscale(model_or_state: Any, config: ModelConfig | None = None) -> dict[str, torch.Tensor]:
    """ArchScale-named state dict of a sambay model (the inverse mapping; used to test the importer and to
    hand weights back to ArchScale). A tied head is written as an alias of wte, as ArchScale saves it."""
    if isinstance(model_or_state, torch.nn.Module):
        config = model_or_state.config
        state = {n: p.detach() for n, p in model_or_state.named_parameters()}
    else:
        state = dict(model_or_state)
    if config is None:
        raise ValueError("pass a CausalLM or a state dict together with its config")
    out = {}
    for n, t in state.items():
        if ".mixer.qkv." in n:  # self-attention's fused projection
            t = qkv_concat_to_grouped(t, config.n_head, config.n_kv_head, config.head_dim)
        out[sambay_to_archscale_name(n, config.layer_plan)] = t
    if config.tie_embeddings:
        out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def convert_archscale(checkpoint: str | os.PathLike[str], preset: str, depth: int | None,
                      out: str | os.PathLike[str], *, format: str = "sambay",
                      overrides: Mapping[str, Any] | None = None, dtype: torch.dtype | str | None = None,
                      max_shard_size: int | str = "5GB") -> tuple[Path, ModelConfig]:
    """Read an ArchScale checkpoint, map it onto the `preset` model and save it as a folder."""
    from sambay.interop.pretrained import empty_model, load_state_into, resolve_dtype, save_pretrained

    state, hparams = read_archscale_checkpoint(checkpoint)
    config = archscale_config(preset, depth, state, hparams, overrides)
    converted = archscale_to_sambay(state, config, source=str(checkpoint), dtype=resolve_dtype(dtype))
    del state
    model = empty_model(config)
    load_state_into(model, ((n, t.contiguous()) for n, t in converted.items()))
    del converted
    return save_pretrained(model, out, format=format, max_shard_size=max_shard_size), config
