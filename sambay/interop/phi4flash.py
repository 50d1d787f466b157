"""The Hugging Face `phi4flash` format (Phi-4-mini-flash-reasoning): config keys and tensor names.

Reading: `config_from_hf` turns a `config.json` with ``model_type == "phi4flash"`` into a `ModelConfig`;
`hf_to_sambay_name` maps checkpoint tensor names to `CausalLM` parameter names. Writing: `config_to_hf`
and `sambay_to_hf_name` do the reverse for a phi4flash-compatible model (`check_compatible` says why a
model is not). The loading itself (meta-device build, shard-by-shard assignment) is in
`sambay.interop.pretrained`.

Name mapping (HF -> sambay), every mixer sits under ``model.layers.{i}.attn`` in the HF checkpoint:

    model.embed_tokens.weight                         embed.weight
    model.final_layernorm.{weight,bias}               final_norm.{weight,bias}
    lm_head.weight                                    lm_head.weight (untied) / absent or == embedding (tied)
    model.layers.{i}.input_layernorm.*                layers.{i}.norm1.*
    model.layers.{i}.post_attention_layernorm.*       layers.{i}.norm2.*
    model.layers.{i}.mlp.fc1/fc2.weight               layers.{i}.mlp.fc1/fc2.weight
    model.layers.{i}.attn.inner_cross_attn.X          layers.{i}.mixer.diff.X   (λ vectors, subln)
    model.layers.{i}.attn.Wqkv.*                      layers.{i}.mixer.q_proj.* (cross layers; query only)
                                                      layers.{i}.mixer.qkv.*    (self-attention; [q | k | v])
    model.layers.{i}.attn.X                           layers.{i}.mixer.X        (Mamba, GMU, out_proj)

The official config.json omits every ``mamba_*`` key and ``mb_per_layer``; the documented class defaults
apply (d_state 16, d_conv 4, expand 2, dt_rank ceil(hidden/16), mb_per_layer 2). Like the official remote
code, ``mamba_conv_bias`` / ``mamba_proj_bias`` are not read (the layout is always conv bias on,
projection biases off).
"""

from __future__ import annotations

import math
import re
from typing import Any

from sambay import plan as plans
from sambay.config import INT_LIMITS, MAX_LAYERS, ConfigError, ModelConfig
from sambay.interop.errors import CheckpointError
from sambay.interop.layer_names import rename_mixer_param

__all__ = [
    "MODEL_TYPE",
    "config_from_hf",
    "config_to_hf",
    "check_compatible",
    "incompatibilities",
    "hf_to_sambay_name",
    "sambay_to_hf_name",
]

MODEL_TYPE = "phi4flash"
ARCHITECTURE = "Phi4FlashForCausalLM"
AUTO_MAP = {
    "AutoConfig": "configuration_phi4flash.Phi4FlashConfig",
    "AutoModelForCausalLM": "modeling_phi4flash.Phi4FlashForCausalLM",
}
_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
             "sliding_window")


def _positive_int(raw: dict, key: str, source: str, field: str | None = None) -> int:
    """``raw[key]`` as a positive integer, at most the bound of the `ModelConfig` field it becomes (so an
    out-of-range value is named by its config.json key, not by the sambay field)."""
    value = raw[key]
    limit = INT_LIMITS.get(field) if field else None
    if type(value) is not int or value <= 0 or (limit is not None and value > limit):
        bound = f" <= {limit:,}" if limit is not None else ""
        raise CheckpointError(f"{source}: {key!r} must be a positive integer{bound}, found {value!r}")
    return value


def _token_id(raw: dict, key: str, vocab: int, source: str) -> int | None:
    """A special token id of config.json (None when absent or null); the first entry of a list."""
    value = raw.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    if value is not None and (type(value) is not int or not 0 <= value < vocab):
        raise CheckpointError(f"{source}: {key} {value!r} is not a token id of the vocabulary [0, {vocab})")
    return value


def _window(raw: Any, n_layer: int, source: str) -> int | None:
    """`sliding_window` as a scalar (pre-#7 config.json) or a per-layer list (post-#7 config class)."""
    if raw is None:
        return None
    if isinstance(raw, list):
        if len(raw) != n_layer:
            raise CheckpointError(f"{source}: 'sliding_window' is a list of {len(raw)} entries but "
                                  f"num_hidden_layers is {n_layer}")
        values = sorted({v for v in raw if v is not None}, key=repr)
        if not values:
            return None
        if len(values) > 1:
            raise CheckpointError(f"{source}: 'sliding_window' lists different windows {values}; sambay uses "
                                  "one window for every sliding-window layer")
        raw = values[0]
    if type(raw) is not int or raw <= 0:
        raise CheckpointError(f"{source}: 'sliding_window' must be a positive integer (or a per-layer list of "
                              f"them and nulls), found {raw!r}")
    return raw


def config_from_hf(raw: dict, source: str = "config.json", generation_config: dict | None = None) -> ModelConfig:
    """`ModelConfig` of a Hugging Face phi4flash `config.json` (already parsed).

    Raises `CheckpointError` naming the key for a wrong model_type, a missing required key, a value of the
    wrong type, or a setting sambay cannot represent (e.g. ``mb_per_layer != 2``).
    `generation_config` (parsed `generation_config.json`, optional) supplies `eos_token_id` (the first of a
    list); without one, config.json's own `eos_token_id` is used. `bos_token_id` and `pad_token_id` come from
    config.json (kept so that a phi4flash -> sambay -> phi4flash conversion writes them back). An id outside
    the vocabulary is an error. Sizes above the bounds of `ModelConfig` are errors naming the config.json key.
    """
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source}: a config must be a JSON object")
    model_type = raw.get("model_type")
    if model_type != MODEL_TYPE:
        raise CheckpointError(f"{source}: model_type is {model_type!r}, expected {MODEL_TYPE!r}")
    missing = [k for k in _REQUIRED if k not in raw]
    if missing:
        raise CheckpointError(f"{source}: phi4flash config is missing required key(s) {missing}")
    d_model = _positive_int(raw, "hidden_size", source, "d_model")
    n_layer = _positive_int(raw, "num_hidden_layers", source)
    if n_layer > MAX_LAYERS:
        raise CheckpointError(f"{source}: num_hidden_layers = {n_layer:,}; at most {MAX_LAYERS} are supported")
    n_head = _positive_int(raw, "num_attention_heads", source, "n_head")
    n_kv = raw.get("num_key_value_heads")
    n_kv = n_head if n_kv is None else _positive_int(raw, "num_key_value_heads", source, "n_kv_head")
    if d_model % n_head:
        raise CheckpointError(f"{source}: hidden_size ({d_model}) is not a multiple of num_attention_heads "
                              f"({n_head}); phi4flash derives head_dim = hidden_size / num_attention_heads")
    mb_per_layer = raw.get("mb_per_layer", 2)
    if mb_per_layer != 2:
        raise CheckpointError(f"{source}: mb_per_layer = {mb_per_layer!r} is not supported; sambay reads "
                              "phi4flash checkpoints with a Mamba layer every 2 layers (mb_per_layer = 2) only")
    act = raw.get("hidden_act", "silu")
    if act != "silu":
        raise CheckpointError(f"{source}: hidden_act {act!r} is not supported (phi4flash uses 'silu')")
    dt_rank = raw.get("mamba_dt_rank", "auto")
    if dt_rank == "auto" or dt_rank is None:
        dt_rank = math.ceil(d_model / 16)
    elif type(dt_rank) is not int or not 0 < dt_rank <= INT_LIMITS["dt_rank"]:
        raise CheckpointError(f"{source}: 'mamba_dt_rank' must be \"auto\" or a positive integer "
                              f"<= {INT_LIMITS['dt_rank']:,}, found {dt_rank!r}")
    extra = {}
    for key, field in (("mamba_d_state", "d_state"), ("mamba_d_conv", "d_conv"), ("mamba_expand", "mamba_expand")):
        if key in raw:
            extra[field] = _positive_int(raw, key, source, field)
    eps = raw.get("layer_norm_eps", 1e-5)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps <= 0:
        raise CheckpointError(f"{source}: 'layer_norm_eps' must be a positive number, found {eps!r}")
    tie = raw.get("tie_word_embeddings", True)
    if not isinstance(tie, bool):
        raise CheckpointError(f"{source}: 'tie_word_embeddings' must be true or false, found {tie!r}")
    max_len = (_positive_int(raw, "max_position_embeddings", source, "max_seq_len")
               if "max_position_embeddings" in raw else 4096)
    init_std = raw.get("initializer_range", 0.02)
    vocab = _positive_int(raw, "vocab_size", source, "vocab_size")
    eos, eos_source = raw.get("eos_token_id"), source
    if generation_config and generation_config.get("eos_token_id") is not None:
        eos, eos_source = generation_config["eos_token_id"], "generation_config.json"
    if isinstance(eos, list):
        eos = eos[0] if eos else None
    if eos is not None and (type(eos) is not int or not 0 <= eos < vocab):
        raise CheckpointError(f"{eos_source}: eos_token_id {eos!r} is not a token id of the vocabulary [0, {vocab})")
    try:
        plan = plans.yoco_plan(n_layer, 2, gmu=True)
    except plans.PlanError as e:
        raise CheckpointError(f"{source}: num_hidden_layers = {n_layer}: {e}") from None
    try:
        return ModelConfig(
            arch="phi4-mini-flash", layer_plan=plan, d_model=d_model, n_head=n_head, n_kv_head=n_kv,
            head_dim=d_model // n_head, d_ff=_positive_int(raw, "intermediate_size", source, "d_ff"),
            vocab_size=vocab,
            window=_window(raw["sliding_window"], n_layer, source), positional="none", diff_attn=True,
            norm="layernorm", norm_eps=float(eps), attn_bias=True, attn_out_bias=True, tie_embeddings=tie,
            dt_rank=dt_rank, parametrization="sp", max_seq_len=max_len,
            init_std=float(init_std) if isinstance(init_std, (int, float)) else 0.02, eos_token_id=eos,
            bos_token_id=_token_id(raw, "bos_token_id", vocab, source),
            pad_token_id=_token_id(raw, "pad_token_id", vocab, source), **extra,
        )
    except ConfigError as e:
        raise CheckpointError(f"{source}: not a valid sambay model: {e}") from None


def incompatibilities(config: ModelConfig) -> list[str]:
    """Why `config` cannot be written in the phi4flash format (empty list: it can)."""
    problems = []
    L = config.n_layer
    try:
        expected = plans.yoco_plan(L, 2, gmu=True)
    except plans.PlanError:
        expected = None
    if config.layer_plan != expected:
        problems.append(f"layer_plan must be the SambaY plan yoco_plan({L}, 2, gmu=True) "
                        f"({plans.render(expected) if expected else 'impossible at this depth'}), "
                        f"got {plans.render(config.layer_plan)}")
    checks = [
        (config.diff_attn, "diff_attn must be true (phi4flash uses Differential Attention everywhere)"),
        (config.norm == "layernorm", f"norm must be 'layernorm' (got {config.norm!r})"),
        (config.attn_bias and config.attn_out_bias, "attn_bias and attn_out_bias must both be true"),
        (config.positional == "none", f"positional must be 'none' (got {config.positional!r})"),
        (config.parametrization == "sp", f"parametrization must be 'sp' (got {config.parametrization!r}): "
         "phi4flash has no μP++ multipliers"),
        (config.head_dim * config.n_head == config.d_model,
         f"head_dim × n_head must equal d_model (phi4flash derives head_dim), got {config.head_dim} × "
         f"{config.n_head} != {config.d_model}"),
        (not config.gmu_norm, "gmu_norm must be false (phi4flash GMUs have no norm)"),
        (config.window is not None, "window must be set"),
        (config.dt_rank == math.ceil(config.d_model / 16),
         f"dt_rank must be ceil(d_model / 16) = {math.ceil(config.d_model / 16)} (the official remote code "
         f"ignores mamba_dt_rank), got {config.dt_rank}"),
    ]
    problems += [msg for ok, msg in checks if not ok]
    return problems


def check_compatible(config: ModelConfig) -> None:
    problems = incompatibilities(config)
    if problems:
        raise CheckpointError("this model cannot be saved in the phi4flash format:\n  " + "\n  ".join(problems)
                              + "\nsave it with format='sambay' instead")


def config_to_hf(config: ModelConfig, torch_dtype: str = "float32") -> dict:
    """The phi4flash `config.json` of a compatible config (keys the official remote code reads)."""
    check_compatible(config)
    return {
        "architectures": [ARCHITECTURE],
        "auto_map": dict(AUTO_MAP),
        "model_type": MODEL_TYPE,
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_kv_head,
        "max_position_embeddings": config.max_seq_len,
        "sliding_window": config.window,
        "hidden_act": "silu",
        "layer_norm_eps": config.norm_eps,
        "tie_word_embeddings": config.tie_embeddings,
        "initializer_range": config.init_std,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "mb_per_layer": 2,
        "mamba_d_state": config.d_state,
        "mamba_d_conv": config.d_conv,
        "mamba_expand": config.mamba_expand,
        "mamba_dt_rank": config.dt_rank,
        "mamba_conv_bias": True,
        "mamba_proj_bias": False,
        "attention_dropout": 0.0,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "rope_theta": 10000.0,
        "use_cache": True,
        "torch_dtype": torch_dtype,
        "transformers_version": "4.46.1",
    }


# ------------------------------------------------------------------------------------------ tensor names
_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_OUR_LAYER = re.compile(r"layers\.(\d+)\.(.+)")
_GLOBAL_TO_OURS = {
    "model.embed_tokens.weight": "embed.weight",
    "model.final_layernorm.weight": "final_norm.weight",
    "model.final_layernorm.bias": "final_norm.bias",
    "lm_head.weight": "lm_head.weight",
}
_GLOBAL_TO_HF = {v: k for k, v in _GLOBAL_TO_OURS.items()}
_BLOCK_TO_OURS = (("input_layernorm.", "norm1."), ("post_attention_layernorm.", "norm2."), ("mlp.", "mlp."))


def hf_to_sambay_name(name: str, layer_plan: list[str]) -> str | None:
    """sambay parameter name of a phi4flash tensor name, or None if the name is not part of the format."""
    if name in _GLOBAL_TO_OURS:
        return _GLOBAL_TO_OURS[name]
    m = _LAYER.fullmatch(name)
    if not m or int(m.group(1)) >= len(layer_plan):
        return None
    i, rest = int(m.group(1)), m.group(2)
    for hf, ours in _BLOCK_TO_OURS:
        if rest.startswith(hf):
            return f"layers.{i}.{ours}{rest[len(hf):]}"
    ours = rename_mixer_param(layer_plan[i], rest, "phi4flash", to_format=False)
    return None if ours is None else f"layers.{i}.mixer.{ours}"


def sambay_to_hf_name(name: str, layer_plan: list[str]) -> str:
    """phi4flash tensor name of a sambay parameter name (inverse of `hf_to_sambay_name`)."""
    if name in _GLOBAL_TO_HF:
        return _GLOBAL_TO_HF[name]
    m = _OUR_LAYER.fullmatch(name)
    if not m or int(m.group(1)) >= len(layer_plan):
        raise CheckpointError(f"parameter {name!r} has no phi4flash name")
    i, rest = m.group(1), m.group(2)
    for hf, ours in _BLOCK_TO_OURS:
        if rest.startswith(ours):
            return f"model.layers.{i}.{hf}{rest[len(ours):]}"
    theirs = rename_mixer_param(layer_plan[int(i)], rest.removeprefix("mixer."), "phi4flash", to_format=True)
    if not rest.startswith("mixer.") or theirs is None:
        raise CheckpointError(f"parameter {name!r} has no phi4flash name")
    return f"model.layers.{i}.{theirs}"
