"""Checkpoint interoperability: Hugging Face phi4flash folders, sambay's own folder format, ArchScale
training checkpoints, safetensors IO and tokenizers."""

from sambay.interop.errors import CheckpointError
from sambay.interop.pretrained import from_pretrained, save_pretrained

__all__ = ["CheckpointError", "from_pretrained", "save_pretrained", "load_tokenizer"]


def __getattr__(name: str):
    # Imported on use: the tokenizer package pulls in `tokenizers` and jinja2, which model-only users never need.
    if name == "load_tokenizer":
        from sambay.tokenizer import load_tokenizer

        return load_tokenizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
