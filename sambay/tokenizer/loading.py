"""`load_tokenizer`: a checkpoint folder's tokenizer files (or one ``tokenizer.json``) -> `Tokenizer`,
without ``transformers``.

What is read, and why:

* ``tokenizer.json`` — the fast-tokenizer file, loaded with the ``tokenizers`` library. It already holds
  the added/special tokens, so encoding ``"<|user|>"`` gives one id.
* ``tokenizer_config.json`` — ``chat_template`` (a string, or a list of named templates), bos/eos/pad/unk
  tokens, ``added_tokens_decoder`` (cross-checked against ``tokenizer.json``), ``add_bos_token`` /
  ``add_eos_token``, ``clean_up_tokenization_spaces``. A ``chat_template.jinja`` file (newer HF layout)
  takes precedence over the config's template.
* ``special_tokens_map.json`` — bos/eos/pad/unk; like Hugging Face, its values win over the config's.
* ``added_tokens.json`` — ``{token: id}``; cross-checked against ``tokenizer.json`` (a mismatch means the
  files come from different tokenizers, which would silently corrupt every prompt).
* ``generation_config.json`` — ``eos_token_id`` (int or list: Phi-4-mini-flash stops on both ``<|end|>``
  and ``<|endoftext|>``), ``bos_token_id``, ``pad_token_id``.

Given a path to a ``tokenizer.json``, the side files are looked up next to it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from sambay.interop.errors import CheckpointError, TokenizerError
from sambay.interop.json_files import read_json_file
from sambay.tokenizer.core import SPECIAL_KEYS, Tokenizer
from sambay.tokenizer.files import (
    ADDED_TOKENS_FILE,
    CHAT_TEMPLATE_FILE,
    GENERATION_CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_FILE,
)

__all__ = ["load_tokenizer"]


def _token_content(value: Any, where: str) -> str | None:
    """Special tokens are stored either as a string or as a serialized AddedToken ``{"content": ...}``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerError(f"{where}: expected a token string or {{\"content\": ...}}, found {value!r}")


def _read_optional_object(path: Path, what: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = read_json_file(path, what=what)
    except CheckpointError as e:
        raise TokenizerError(str(e)) from None
    if not isinstance(data, dict):
        raise TokenizerError(f"{what} {path} must contain a JSON object, found {type(data).__name__}")
    return data


def _load_backend(file: Path) -> tuple[Any, str]:
    """(``tokenizers.Tokenizer``, SHA-256 of the file's bytes), reading the file once."""
    from tokenizers import Tokenizer as _Backend

    try:
        raw = file.read_bytes()
    except OSError as e:
        raise TokenizerError(f"cannot read tokenizer file {file}: {e.strerror or e}") from None
    try:
        backend = _Backend.from_str(raw.decode("utf-8"))
    except Exception as e:  # tokenizers raises plain Exception for everything (and bad UTF-8 lands here too)
        # Find out whether it is broken JSON (say where) or valid JSON the library does not understand.
        try:
            read_json_file(file, what="tokenizer file")
        except CheckpointError as json_error:
            raise TokenizerError(str(json_error)) from None
        import tokenizers

        raise TokenizerError(
            f"{file} is valid JSON but the `tokenizers` library (version {tokenizers.__version__}) cannot "
            f"load it: {e}"
        ) from None
    return backend, hashlib.sha256(raw).hexdigest()


def _ensure_added_tokens(backend: Any, wanted: dict[int, dict[str, Any]], source: Path) -> None:
    """Make sure tokens listed in tokenizer_config.json / added_tokens.json exist with the stated ids.

    Normally tokenizer.json already has them; if one is absent we add it (as HF does) and check it lands
    on the stated id. Any disagreement means the files come from different tokenizers.
    """
    from tokenizers import AddedToken

    problems = []
    for token_id, info in sorted(wanted.items()):
        content = info["content"]
        actual = backend.token_to_id(content)
        if actual is None:
            token = AddedToken(content, special=bool(info.get("special", False)),
                               lstrip=bool(info.get("lstrip", False)), rstrip=bool(info.get("rstrip", False)),
                               single_word=bool(info.get("single_word", False)),
                               normalized=bool(info.get("normalized", not info.get("special", False))))
            if info.get("special", False):
                backend.add_special_tokens([token])
            else:
                backend.add_tokens([token])
            actual = backend.token_to_id(content)
        if actual != token_id:
            problems.append(f"{content!r}: {info['_from']} says id {token_id}, {TOKENIZER_FILE} gives {actual}")
    if problems:
        raise TokenizerError(
            f"tokenizer files in {source} disagree about added tokens (they do not belong together): "
            + "; ".join(problems[:10]) + (f"; ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        )


def _check_id_field(value: Any, key: str, file: Path, backend: Any, allow_list: bool) -> Any:
    if value is None:
        return None
    values = value if allow_list and isinstance(value, list) else [value]
    if not values or not all(type(v) is int and v >= 0 for v in values):
        kind = "an int or a list of ints" if allow_list else "an int"
        raise TokenizerError(f"{file}: {key} must be {kind}, found {value!r}")
    unknown = [v for v in values if backend.id_to_token(v) is None]
    if unknown:
        raise TokenizerError(f"{file}: {key} {value!r} refers to id(s) {unknown} that the tokenizer does not have")
    return value


def load_tokenizer(path: str | os.PathLike[str], *, chat_template: str | None = None) -> Tokenizer:
    """Load the tokenizer of a checkpoint folder (or from a path to its ``tokenizer.json``).

    Returns a :class:`sambay.tokenizer.Tokenizer`: ``encode(text) -> list[int]``, ``decode(ids)``,
    ``apply_chat_template(messages)``, ``eos_token_ids`` (stop ids for generation), ``eos_id`` (the
    document separator of training data), ``vocab_size``, ``sha256``, and the underlying
    ``tokenizers.Tokenizer`` as ``backend``.

    ``chat_template`` replaces the checkpoint's template (useful when the shipped one is broken or
    missing). Raises :class:`TokenizerError` (a :class:`CheckpointError`) for a missing or corrupt
    ``tokenizer.json``, corrupt JSON in the other files (with the error position), a chat template with a
    syntax error (naming the file and line), and files that contradict each other.
    """
    path = Path(path)
    if path.is_file():
        folder, tok_file = path.parent, path
    elif path.is_dir():
        folder, tok_file = path, path / TOKENIZER_FILE
    else:
        raise TokenizerError(f"tokenizer path not found: {path}")
    if not tok_file.is_file():
        slow = [n for n in ("tokenizer.model", "vocab.json", "merges.txt", "vocab.txt") if (folder / n).exists()]
        hint = (f" It has only slow-tokenizer files ({', '.join(slow)}); convert them once with "
                "`transformers.AutoTokenizer.from_pretrained(folder).save_pretrained(folder)`." if slow else "")
        raise TokenizerError(f"{TOKENIZER_FILE} not found in {folder}.{hint}")

    backend, sha256 = _load_backend(tok_file)
    config_path = folder / TOKENIZER_CONFIG_FILE
    config = _read_optional_object(config_path, "tokenizer config") or {}
    special_map_path = folder / SPECIAL_TOKENS_MAP_FILE
    special_map = _read_optional_object(special_map_path, "special tokens map") or {}
    added_path = folder / ADDED_TOKENS_FILE
    added = _read_optional_object(added_path, "added tokens file") or {}
    gen_path = folder / GENERATION_CONFIG_FILE
    gen = _read_optional_object(gen_path, "generation config") or {}

    # Added tokens: tokenizer_config.json's added_tokens_decoder, then added_tokens.json.
    wanted: dict[int, dict[str, Any]] = {}
    decoder = config.get("added_tokens_decoder") or {}
    if not isinstance(decoder, dict):
        raise TokenizerError(f"{config_path}: added_tokens_decoder must be an object {{id: token}}")
    for key, info in decoder.items():
        content = _token_content(info, f"{config_path}: added_tokens_decoder[{key!r}]")
        try:
            token_id = int(key)
        except ValueError:
            raise TokenizerError(f"{config_path}: added_tokens_decoder key {key!r} is not an integer id") from None
        entry = dict(info) if isinstance(info, dict) else {}
        entry.update(content=content, _from=TOKENIZER_CONFIG_FILE)
        wanted[token_id] = entry
    for content, token_id in added.items():
        if type(token_id) is not int:
            raise TokenizerError(f"{added_path}: id of {content!r} must be an integer, found {token_id!r}")
        if token_id in wanted and wanted[token_id]["content"] != content:
            raise TokenizerError(
                f"{added_path} gives id {token_id} to {content!r} but {config_path} gives it to "
                f"{wanted[token_id]['content']!r}"
            )
        wanted.setdefault(token_id, {"content": content, "special": False, "_from": ADDED_TOKENS_FILE})
    _ensure_added_tokens(backend, wanted, folder)

    # Special tokens: special_tokens_map.json wins over tokenizer_config.json (as in HF).
    special: dict[str, str | None] = {}
    for key in SPECIAL_KEYS:
        if special_map.get(key) is not None:
            special[key] = _token_content(special_map[key], f"{special_map_path}: {key}")
        else:
            special[key] = _token_content(config.get(key), f"{config_path}: {key}")
    extra = special_map.get("additional_special_tokens", config.get("additional_special_tokens")) or []
    if not isinstance(extra, list):
        raise TokenizerError(f"{folder}: additional_special_tokens must be a list")
    extra_tokens = [t for t in (_token_content(x, f"{folder}: additional_special_tokens") for x in extra) if t]

    # Chat templates: explicit argument > chat_template.jinja > tokenizer_config.json.
    templates: dict[str, str] = {}
    jinja_path = folder / CHAT_TEMPLATE_FILE
    if chat_template is not None:
        templates, source = {"default": chat_template}, "the chat_template argument of load_tokenizer()"
    elif jinja_path.is_file():
        try:
            templates, source = {"default": jinja_path.read_text(encoding="utf-8")}, str(jinja_path)
        except (OSError, UnicodeDecodeError) as e:
            raise TokenizerError(f"cannot read chat template {jinja_path}: {e}") from None
    else:
        source = str(config_path)
        raw = config.get("chat_template")
        if isinstance(raw, str):
            templates = {"default": raw}
        elif isinstance(raw, list):
            for item in raw:
                if not (isinstance(item, dict) and isinstance(item.get("name"), str)
                        and isinstance(item.get("template"), str)):
                    raise TokenizerError(
                        f"{config_path}: chat_template list entries must be {{\"name\": ..., \"template\": ...}}"
                    )
                templates[item["name"]] = item["template"]
        elif raw is not None:
            raise TokenizerError(f"{config_path}: chat_template must be a string or a list of named templates")

    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
        _check_id_field(gen.get(key), key, gen_path, backend, allow_list=(key == "eos_token_id"))

    def opt_bool(key: str) -> bool | None:
        value = config.get(key)
        if value is not None and not isinstance(value, bool):
            raise TokenizerError(f"{config_path}: {key} must be true or false, found {value!r}")
        return value

    max_len = config.get("model_max_length")
    return Tokenizer(
        backend,
        path=folder,
        special_tokens=special,
        additional_special_tokens=extra_tokens,
        chat_templates=templates,
        chat_template_source=source,
        generation_config=gen,
        add_bos_token=opt_bool("add_bos_token"),
        add_eos_token=opt_bool("add_eos_token"),
        clean_up_tokenization_spaces=bool(opt_bool("clean_up_tokenization_spaces")),
        model_max_length=max_len if isinstance(max_len, int) else None,
        file=tok_file,
        sha256=sha256,
    )
