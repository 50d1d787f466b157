"""Train and load byte-level BPE tokenizers (HF ``tokenizers``).

Trained tokenizers split digits one by one before byte-level BPE (EVALUATION.md §10.1: merged digit
runs such as ``12|34|567`` hurt number copying in NIAH, Phonebook and MQAR), and carry one special
token, ``<|endoftext|>``, which the data pipeline appends after every document as EOS (no BOS).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .sources import DataError, expand_inputs, iter_documents

EOS_TOKEN = "<|endoftext|>"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"


def build_trainable_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE with individual-digit splitting (no prefix space, no BOS)."""
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

    ``vocab_size`` includes the 256 byte symbols and the EOS token. Returns the tokenizer.json path.
    """
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
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    return out / TOKENIZER_FILE


def train_tokenizer_from_files(patterns: Sequence[str], vocab_size: int, output_dir: str | os.PathLike,
                               *, text_field: str = "text", **kw) -> Path:
    """``train_tokenizer`` over the documents of input files/globs (txt / jsonl / parquet)."""
    files = expand_inputs(patterns)

    def docs() -> Iterator[str]:
        for f in files:
            yield from iter_documents(f, text_field)

    return train_tokenizer(docs(), vocab_size, output_dir, **kw)


@dataclass(frozen=True)
class LoadedTokenizer:
    tokenizer: Tokenizer
    path: Path  # the tokenizer.json file
    eos_id: int
    eos_token: str
    vocab_size: int  # including added/special tokens
    sha256: str  # of tokenizer.json bytes: identifies the vocabulary in manifests


def resolve_tokenizer_file(path: str | os.PathLike) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / TOKENIZER_FILE
    if not p.is_file():
        raise DataError(f"tokenizer not found: {p} (pass a tokenizer.json or the directory holding it)")
    return p


def load_tokenizer(path: str | os.PathLike) -> LoadedTokenizer:
    """Load a tokenizer.json (or a directory with one) and resolve its EOS id.

    The EOS token is ``eos_token`` from a sibling tokenizer_config.json when present, else
    ``<|endoftext|>``; it must be in the vocabulary.
    """
    file = resolve_tokenizer_file(path)
    raw = file.read_bytes()
    try:
        tok = Tokenizer.from_str(raw.decode("utf-8"))
    except Exception as e:  # tokenizers raises a bare Exception on malformed files
        raise DataError(f"{file}: not a valid tokenizers JSON file: {e}") from e
    eos = EOS_TOKEN
    cfg = file.with_name(CONFIG_FILE)
    if cfg.is_file():
        value = json.loads(cfg.read_text()).get("eos_token", eos)
        eos = value["content"] if isinstance(value, dict) else value  # HF AddedToken dict form
    eos_id = tok.token_to_id(eos)
    if eos_id is None:
        raise DataError(f"{file}: EOS token {eos!r} is not in the vocabulary")
    # ids of a foreign tokenizer may have gaps above get_vocab_size(); the shard dtype must hold the max
    vocab = max(tok.get_vocab_size(with_added_tokens=True),
                max(tok.get_vocab(with_added_tokens=True).values()) + 1)
    return LoadedTokenizer(tok, file, int(eos_id), eos, vocab, hashlib.sha256(raw).hexdigest())
