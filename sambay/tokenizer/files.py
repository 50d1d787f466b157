"""File names of a Hugging Face tokenizer folder, and the end-of-document token of tokenizers sambay trains."""

from __future__ import annotations

__all__ = ["TOKENIZER_FILE", "TOKENIZER_CONFIG_FILE", "SPECIAL_TOKENS_MAP_FILE", "ADDED_TOKENS_FILE",
           "GENERATION_CONFIG_FILE", "CHAT_TEMPLATE_FILE", "EOS_TOKEN"]

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
GENERATION_CONFIG_FILE = "generation_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"

# Appended after every document by the data pipeline (no BOS); the only special token of trained tokenizers.
EOS_TOKEN = "<|endoftext|>"
