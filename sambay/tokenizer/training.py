"""Training byte-level BPE tokenizers (HF ``tokenizers``) for sambay's own data pipeline.

Trained tokenizers split digits one by one before byte-level BPE, because merged digit runs such as
``12|34|567`` hurt number copying (needle-in-a-haystack, phonebook and MQAR retrieval evaluations). They
carry one special token, ``<|endoftext|>``, which the data pipeline appends after every document as EOS
(no BOS). Every byte is in the initial alphabet, so any UTF-8 text encodes without ``<unk>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sambay.data.sources import expand_inputs, iter_documents
from sambay.tokenizer.files import EOS_TOKEN, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE

__all__ = ["build_trainable_tokenizer", "train_tokenizer", "train_tokenizer_from_files"]


def build_trainable_tokenizer() -> Any:
    """An untrained byte-level BPE ``tokenizers.Tokenizer`` with individual-digit splitting (no prefix
    space, no BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tok = Tokenizer(models.BPE())
    # Digits first so that no digit ever shares a pre-token with anything else; ByteLevel then maps
    # bytes to printable symbols and applies the GPT-2 split regex.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int, output_dir: str | os.PathLike,
                    *, min_frequency: int = 2, show_progress: bool = False) -> Path:
    """Train on an iterable of documents and write ``tokenizer.json`` + ``tokenizer_config.json``.

    ``vocab_size`` includes the 256 byte symbols and the EOS token. Returns the tokenizer.json path;
    load it with :func:`sambay.tokenizer.load_tokenizer`.
    """
    from tokenizers import pre_tokenizers, trainers

    if vocab_size < 256 + 1:
        raise ValueError(f"vocab_size must be at least 257 (256 bytes + EOS), got {vocab_size}")
    tok = build_trainable_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],  # id 0
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte encodable: no <unk>
        show_progress=show_progress,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / TOKENIZER_FILE))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": EOS_TOKEN,
        "bos_token": None,
        "add_bos_token": False,
        "add_eos_token": False,  # the data pipeline appends EOS itself
        "model_max_length": 1_000_000_000,
        "vocab_size": tok.get_vocab_size(with_added_tokens=True),
    }
    (out / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out / TOKENIZER_FILE


def train_tokenizer_from_files(patterns: Sequence[str], vocab_size: int, output_dir: str | os.PathLike,
                               *, text_field: str = "text", **kw) -> Path:
    """``train_tokenizer`` over the documents of input files/globs (txt / jsonl / parquet)."""
    files = expand_inputs(patterns)

    def docs() -> Iterator[str]:
        for f in files:
            yield from iter_documents(f, text_field)

    return train_tokenizer(docs(), vocab_size, output_dir, **kw)
