"""sambay: the SambaY decoder-hybrid-decoder language-model family, end to end."""

from sambay.config import ConfigError, ModelConfig
from sambay.model import CausalLM, CausalLMOutput

__all__ = ["CausalLM", "CausalLMOutput", "ConfigError", "ModelConfig"]
__version__ = "0.1.0"
