"""sambay: the SambaY decoder-hybrid-decoder language-model family, end to end."""

from sambay.config import ConfigError, ModelConfig
from sambay.engine import GenerationResult, Generator, SamplingParams
from sambay.interop.errors import CheckpointError
from sambay.interop.pretrained import from_pretrained
from sambay.model import CausalLM, CausalLMOutput

__all__ = ["CausalLM", "CausalLMOutput", "CheckpointError", "ConfigError", "GenerationResult", "Generator",
           "ModelConfig", "SamplingParams", "from_pretrained", "load_tokenizer"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # `load_tokenizer` is imported on first use: it pulls in `tokenizers` and jinja2.
    if name == "load_tokenizer":
        from sambay.interop.tokenizer import load_tokenizer

        return load_tokenizer
    raise AttributeError(f"module 'sambay' has no attribute {name!r}")
