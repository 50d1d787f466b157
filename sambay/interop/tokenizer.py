"""Tokenizer, chat template and generation settings of a Hugging Face checkpoint folder — without
``transformers``.

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

Chat templates are rendered with ``jinja2.sandbox.ImmutableSandboxedEnvironment`` configured like
Hugging Face (``trim_blocks``, ``lstrip_blocks``, loop controls, a non-HTML-escaping ``tojson``,
``raise_exception``, ``strftime_now``, a pass-through ``{% generation %}`` block), because templates come
from downloaded files and must not be able to touch Python objects. There is deliberately no built-in
fallback template: guessing a chat format silently degrades a model, so a missing template is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from sambay.interop.errors import ChatTemplateError, CheckpointError, TokenizerError
from sambay.interop.io import read_json_file

__all__ = ["Tokenizer", "load_tokenizer", "IncrementalDecoder", "TOKENIZER_FILE"]

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
GENERATION_CONFIG_FILE = "generation_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"

_SPECIAL_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


# --------------------------------------------------------------------------------------------------
# Jinja environment
# --------------------------------------------------------------------------------------------------


class _TemplateRaised(ChatTemplateError):
    """Raised by ``raise_exception`` inside a template; re-raised with context by apply_chat_template."""


def _raise_exception(message: Any) -> None:
    raise _TemplateRaised(str(message))


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: Any = None, sort_keys: bool = False) -> str:
    # jinja2's built-in tojson HTML-escapes <, >, & and ' — wrong for prompts. Same signature as HF's.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _make_environment() -> Any:
    from jinja2 import nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """``{% generation %}...{% endgeneration %}`` renders its body unchanged.

        HF uses this block to compute assistant-token masks for training; some templates contain it, so
        it must parse. We do not compute masks.
        """

        tags = {"generation"}

        def parse(self, parser: Any) -> list[nodes.Node]:
            next(parser.stream)
            return parser.parse_statements(("name:endgeneration",), drop_needle=True)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationBlock, "jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


# --------------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------------


def _token_content(value: Any, where: str) -> str | None:
    """Special tokens are stored either as a string or as a serialized AddedToken ``{"content": ...}``."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise TokenizerError(f"{where}: expected a token string or {{\"content\": ...}}, found {value!r}")


def _clean_up_tokenization(text: str) -> str:
    # Hugging Face's clean_up_tokenization, applied only when the config asks for it.
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the chat template and special-token settings of a checkpoint.

    Build it with :func:`load_tokenizer`. Attributes: ``backend`` (the ``tokenizers.Tokenizer``),
    ``bos_token`` / ``eos_token`` / ``pad_token`` / ``unk_token`` (strings or None),
    ``generation_config`` (dict, empty if the file is absent), ``chat_templates`` (name -> source),
    ``add_bos_token`` / ``add_eos_token``, ``model_max_length``, ``path``.
    """

    def __init__(
        self,
        backend: Any,
        *,
        path: Path | None = None,
        special_tokens: Mapping[str, str | None] | None = None,
        additional_special_tokens: Sequence[str] = (),
        chat_templates: Mapping[str, str] | None = None,
        chat_template_source: str = "<string>",
        generation_config: Mapping[str, Any] | None = None,
        add_bos_token: bool | None = None,
        add_eos_token: bool | None = None,
        clean_up_tokenization_spaces: bool = False,
        model_max_length: int | None = None,
    ) -> None:
        self.backend = backend
        self.path = path
        special_tokens = dict(special_tokens or {})
        self.bos_token: str | None = special_tokens.get("bos_token")
        self.eos_token: str | None = special_tokens.get("eos_token")
        self.pad_token: str | None = special_tokens.get("pad_token")
        self.unk_token: str | None = special_tokens.get("unk_token")
        self.additional_special_tokens = list(additional_special_tokens)
        self.generation_config = dict(generation_config or {})
        self.add_bos_token = add_bos_token
        self.add_eos_token = add_eos_token
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.model_max_length = model_max_length
        self.chat_templates = dict(chat_templates or {})
        self._chat_template_source = chat_template_source
        self._env = _make_environment()
        self._compiled: dict[str, Any] = {}
        for name, source in self.chat_templates.items():
            self._compiled[name] = self._compile(source, f"{chat_template_source} (template {name!r})"
                                                 if len(self.chat_templates) > 1 else chat_template_source)
        for key in _SPECIAL_KEYS:
            token = getattr(self, key)
            if token is not None and backend.token_to_id(token) is None:
                raise TokenizerError(
                    f"{key} {token!r} (from the tokenizer config in {path}) is not in the vocabulary of "
                    f"{TOKENIZER_FILE}; the tokenizer files do not belong together"
                )

    # ---- ids ---------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can produce, added tokens included.

        May be smaller than the model's embedding rows (Phi-4-mini-flash pads its embedding to 200064).
        """
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.backend.id_to_token(int(token_id))

    def _special_id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    @property
    def eos_token_id(self) -> int | None:
        """Id of the tokenizer's eos token (see :attr:`eos_token_ids` for stopping)."""
        return self._special_id(self.eos_token)

    @property
    def bos_token_id(self) -> int | None:
        """``bos_token_id`` from generation_config.json if present, else the tokenizer's bos token."""
        value = self.generation_config.get("bos_token_id")
        return value if value is not None else self._special_id(self.bos_token)

    @property
    def pad_token_id(self) -> int | None:
        """``pad_token_id`` from generation_config.json if present, else the tokenizer's pad token."""
        value = self.generation_config.get("pad_token_id")
        return value if value is not None else self._special_id(self.pad_token)

    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end generation: generation_config.json's ``eos_token_id`` (int or list) if present,
        else the tokenizer's eos token; empty if neither exists."""
        value = self.generation_config.get("eos_token_id")
        if value is None:
            eos = self.eos_token_id
            return [] if eos is None else [eos]
        return [value] if isinstance(value, int) else list(value)

    @property
    def special_token_ids(self) -> set[int]:
        """Ids of all tokens the backend marks as special (what ``skip_special_tokens`` removes)."""
        return {i for i, tok in self.backend.get_added_tokens_decoder().items() if tok.special}

    # ---- encode / decode ---------------------------------------------------------------------------

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``. Special tokens written in the text (``"<|user|>"``) become single ids.

        ``add_special_tokens=True`` applies the tokenizer's post-processor (e.g. a BOS); if
        ``tokenizer.json`` has none but the config says ``add_bos_token`` / ``add_eos_token``, those are
        added here (that is how HF's Llama-style tokenizers behave).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() expects a str, got {type(text).__name__}")
        ids = self.backend.encode(text, add_special_tokens=add_special_tokens).ids
        if add_special_tokens and self.backend.num_special_tokens_to_add(False) == 0:
            bos, eos = self._special_id(self.bos_token), self._special_id(self.eos_token)
            if self.add_bos_token and bos is not None:
                ids = [bos, *ids]
            if self.add_eos_token and eos is not None:
                ids = [*ids, eos]
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of ``ids`` (any iterable of ints, e.g. a list or a 1-D tensor)."""
        text = self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        if self.clean_up_tokenization_spaces:
            text = _clean_up_tokenization(text)
        return text

    # ---- chat --------------------------------------------------------------------------------------

    def _compile(self, source: str, where: str) -> Any:
        from jinja2 import TemplateSyntaxError

        try:
            return self._env.from_string(source)
        except TemplateSyntaxError as e:
            raise TokenizerError(
                f"chat template in {where} has a syntax error at template line {e.lineno}: {e.message}"
            ) from None

    @property
    def chat_template(self) -> str | None:
        """Source of the default chat template, or None."""
        if not self.chat_templates:
            return None
        return self.chat_templates.get("default", next(iter(self.chat_templates.values())))

    def _select_template(self, chat_template: str | None, tools: Any) -> tuple[Any, str]:
        if chat_template is not None:
            if chat_template in self._compiled:  # a name of one of the checkpoint's templates
                return self._compiled[chat_template], f"template {chat_template!r}"
            return self._compile(chat_template, "the chat_template argument"), "the chat_template argument"
        if not self._compiled:
            raise ChatTemplateError(
                f"the tokenizer in {self.path} has no chat template (no 'chat_template' in "
                f"{TOKENIZER_CONFIG_FILE} and no {CHAT_TEMPLATE_FILE}); pass chat_template=... to "
                "apply_chat_template() or to load_tokenizer(). sambay does not guess chat formats."
            )
        if len(self._compiled) == 1:
            return next(iter(self._compiled.values())), self._chat_template_source
        if tools is not None and "tool_use" in self._compiled:
            return self._compiled["tool_use"], f"template 'tool_use' in {self._chat_template_source}"
        if "default" in self._compiled:
            return self._compiled["default"], f"template 'default' in {self._chat_template_source}"
        raise ChatTemplateError(
            f"{self._chat_template_source} has several named chat templates "
            f"({', '.join(self._compiled)}) and none is called 'default'; pass chat_template=<name>"
        )

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = True,
        *,
        tools: Any = None,
        documents: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> str:
        """Render ``messages`` (``[{"role": ..., "content": ...}, ...]``) with the checkpoint's template.

        The template sees ``messages``, ``add_generation_prompt``, ``tools``, ``documents``, the special
        tokens (``bos_token``, ``eos_token``, ``pad_token``, ``unk_token``,
        ``additional_special_tokens``) and any extra ``kwargs`` (they override the rest). ``chat_template``
        is the name of one of the checkpoint's named templates or a template source string.
        A template's ``raise_exception(...)`` and run-time errors become :class:`ChatTemplateError`.
        """
        from jinja2 import TemplateError

        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not all(
            isinstance(m, Mapping) for m in messages
        ):
            raise ChatTemplateError(
                "messages must be a list of dicts like {'role': 'user', 'content': 'Hello'}, "
                f"got {type(messages).__name__}"
            )
        template, where = self._select_template(chat_template, tools)
        context: dict[str, Any] = {
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "tools": tools,
            "documents": documents,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "unk_token": self.unk_token,
            "additional_special_tokens": self.additional_special_tokens,
        }
        context.update(kwargs)
        try:
            return template.render(**context)
        except _TemplateRaised as e:
            raise ChatTemplateError(f"the chat template rejected the messages: {e}") from None
        except (TemplateError, TypeError, AttributeError, KeyError, IndexError, ValueError) as e:
            raise ChatTemplateError(
                f"error while rendering the chat template ({where}): {type(e).__name__}: {e}"
            ) from e

    def encode_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                    **kwargs: Any) -> list[int]:
        """Token ids of the rendered chat. Like HF, no extra special tokens are added: the template
        already wrote every special token it wants."""
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **kwargs)
        return self.encode(text, add_special_tokens=False)

    def __repr__(self) -> str:
        return (f"Tokenizer(path={str(self.path)!r}, vocab_size={self.vocab_size}, "
                f"eos_token_ids={self.eos_token_ids}, chat_template={'yes' if self.chat_templates else 'no'})")


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


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


def _load_backend(file: Path) -> Any:
    from tokenizers import Tokenizer as _Backend

    try:
        return _Backend.from_file(str(file))
    except Exception as e:  # tokenizers raises plain Exception for everything
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

    backend = _load_backend(tok_file)
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
    for key in _SPECIAL_KEYS:
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
    )


# --------------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------------


class IncrementalDecoder:
    """Turn a stream of token ids into text pieces without ever emitting half a character.

    Byte-level BPE splits multi-byte UTF-8 characters (emoji, CJK) across tokens, so decoding token by
    token would print U+FFFD replacement characters. We keep two offsets into the id list: text up to
    ``read_offset`` has been emitted; ``prefix_offset`` is where the decode window starts (a few tokens of
    context, so tokenizers that change a token's text depending on its neighbours — e.g. a leading space —
    decode consistently). A piece is emitted only once the window's text grows and does not end in U+FFFD.
    Concatenating every ``push()`` result and ``flush()`` gives ``tokenizer.decode(all_ids)``.

    ``context_ids`` (e.g. the prompt) seeds the window so the first generated token decodes as it would
    in context; its text is not emitted.
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = False,
                 context_ids: Sequence[int] = ()) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        self._ids: list[int] = [int(i) for i in list(context_ids)[-5:]]
        self._prefix_offset = 0
        self._read_offset = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def _advance(self) -> None:
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        if self._prefix_offset > 64:  # ids before the window are never needed again
            del self._ids[:self._prefix_offset]
            self._read_offset -= self._prefix_offset
            self._prefix_offset = 0

    def push(self, token_id: int) -> str:
        """Add one id; return the newly complete text (possibly ``""``)."""
        self._ids.append(int(token_id))
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            # Slice rather than str.removeprefix: byte-level decoders only ever extend the prefix.
            piece = new_text[len(prefix_text):]
            self._advance()
            return piece
        return ""

    def push_many(self, token_ids: Iterable[int]) -> str:
        return "".join(self.push(t) for t in token_ids)

    def flush(self) -> str:
        """Return whatever is still held back (at the end of a stream that stopped mid-character this
        contains U+FFFD, which is the honest rendering of an incomplete character)."""
        prefix_text = self._decode(self._ids[self._prefix_offset:self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset:])
        piece = new_text[len(prefix_text):]
        if len(self._ids) > self._read_offset:
            self._advance()
        return piece
