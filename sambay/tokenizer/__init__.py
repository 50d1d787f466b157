"""Tokenizers: one `Tokenizer` type for checkpoint folders and for sambay's own data pipeline.

* :func:`load_tokenizer` (``loading.py``): a Hugging Face tokenizer folder (``tokenizer.json`` plus the
  config, special-token, added-token and generation files) or a path to a ``tokenizer.json`` ->
  :class:`Tokenizer` (``core.py``). No ``transformers`` needed.
* Chat templates (``chat.py``): the checkpoint's Jinja templates, rendered in a sandbox.
* :class:`IncrementalDecoder` (``detokenizer.py``): streaming detokenisation for generation.
* :func:`train_tokenizer` / :func:`train_tokenizer_from_files` (``training.py``): byte-level BPE with
  digits split one by one and ``<|endoftext|>`` as the end-of-document token.

Importing this package is cheap: ``tokenizers`` and ``jinja2`` are imported when first needed.
"""

from sambay.interop.errors import ChatTemplateError, TokenizerError
from sambay.tokenizer.core import Tokenizer
from sambay.tokenizer.detokenizer import IncrementalDecoder
from sambay.tokenizer.files import EOS_TOKEN, TOKENIZER_FILE
from sambay.tokenizer.loading import load_tokenizer
from sambay.tokenizer.training import build_trainable_tokenizer, train_tokenizer, train_tokenizer_from_files

__all__ = ["ChatTemplateError", "EOS_TOKEN", "IncrementalDecoder", "TOKENIZER_FILE", "Tokenizer", "TokenizerError",
           "build_trainable_tokenizer", "load_tokenizer", "train_tokenizer", "train_tokenizer_from_files"]
