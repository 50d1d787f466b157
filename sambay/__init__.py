"""sambay: the SambaY decoder-hybrid-decoder language-model family, end to end."""

from sambay.config import ConfigError, ModelConfig
from sambay.engine import Engine, GenerationResult, Generator, RequestOutput, SamplingParams
from sambay.interop.errors import CheckpointError
from sambay.interop.pretrained import from_pretrained
from sambay.model import CausalLM, CausalLMOutput

# Cheap to import: `tokenizers` and jinja2 are imported on the first load_tokenizer call.
from sambay.tokenizer import load_tokenizer

__all__ = ["CausalLM", "CausalLMOutput", "CheckpointError", "ConfigError", "Engine", "GenerationResult",
           "Generator", "ModelConfig", "RequestOutput", "SamplingParams", "from_pretrained", "load_tokenizer"]
__version__ = "0.1.0"
