"""sambay's own checkpoint folder format.

    config.json          exactly `ModelConfig.to_dict()` (so `ModelConfig.from_json(folder / "config.json")` works)
    model.safetensors    tensors under the `CausalLM` parameter names (a tied head is not stored),
                         or shards + model.safetensors.index.json; each file's metadata carries
                         {"format": "pt", "sambay_format": "1"}

Any architecture of the family (every preset and layer plan, μP++ or SP) can be stored this way; the
phi4flash format holds only Phi-4-mini-flash-shaped models.
"""

from __future__ import annotations

from sambay.config import ConfigError, ModelConfig
from sambay.interop.errors import CheckpointError

__all__ = ["FORMAT_VERSION", "is_sambay_config", "config_from_dict", "config_to_dict"]

FORMAT_VERSION = "1"


def is_sambay_config(raw: dict) -> bool:
    """True for a sambay config.json (it has a layer plan and no Hugging Face model_type)."""
    return isinstance(raw, dict) and "layer_plan" in raw and "model_type" not in raw


def config_from_dict(raw: dict, source: str = "config.json") -> ModelConfig:
    try:
        return ModelConfig.from_dict(raw)
    except (ConfigError, TypeError) as e:
        raise CheckpointError(f"{source}: invalid sambay model config: {e}") from None


def config_to_dict(config: ModelConfig) -> dict:
    return config.to_dict()
