"""`Tokenizer`: a ``tokenizers.Tokenizer`` plus the special-token settings and chat templates of its folder."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sambay.interop.errors import TokenizerError
from sambay.tokenizer.chat import ChatTemplates
from sambay.tokenizer.files import EOS_TOKEN, TOKENIZER_FILE

__all__ = ["Tokenizer", "SPECIAL_KEYS"]

SPECIAL_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


def _clean_up_tokenization(text: str) -> str:
    # Hugging Face's clean_up_tokenization, applied only when the config asks for it.
    for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                 (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(a, b)
    return text


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the chat template and special-token settings of a checkpoint.

    Build it with :func:`sambay.tokenizer.load_tokenizer`. Attributes: ``backend`` (the
    ``tokenizers.Tokenizer``; also reachable as ``tokenizer``), ``bos_token`` / ``eos_token`` /
    ``pad_token`` / ``unk_token`` (strings or None), ``generation_config`` (dict, empty if the file is
    absent), ``chat_templates`` (name -> source), ``add_bos_token`` / ``add_eos_token``,
    ``model_max_length``, ``path`` (the folder), ``file`` (its ``tokenizer.json``) and ``sha256`` (of
    that file's bytes: it identifies the vocabulary in data manifests).
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
        file: Path | None = None,
        sha256: str | None = None,
    ) -> None:
        self.backend = backend
        self.path = path
        self.file = file
        self.sha256 = sha256
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
        self._chat = ChatTemplates(self.chat_templates, chat_template_source, path)
        for key in SPECIAL_KEYS:
            token = getattr(self, key)
            if token is not None and backend.token_to_id(token) is None:
                raise TokenizerError(
                    f"{key} {token!r} (from the tokenizer config in {path}) is not in the vocabulary of "
                    f"{TOKENIZER_FILE}; the tokenizer files do not belong together"
                )
        # Ids of a foreign tokenizer may have gaps above its token count; what matters downstream (shard
        # dtypes, embedding sizes) is the largest id.
        ids = backend.get_vocab(with_added_tokens=True).values()
        self._id_span = max(ids, default=-1) + 1

    # ---- ids ---------------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        """The ``tokenizers.Tokenizer`` (the same object as ``backend``)."""
        return self.backend

    @property
    def vocab_size(self) -> int:
        """Number of token ids the tokenizer can produce (largest id + 1), added tokens included.

        May be smaller than the model's embedding rows (Phi-4-mini-flash pads its embedding to 200064).
        """
        return max(self.backend.get_vocab_size(with_added_tokens=True), self._id_span)

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
    def eos_id(self) -> int:
        """The id that ends every document of training data (``sambay data prepare`` appends it): the eos
        token's, or ``<|endoftext|>``'s when the files name no eos token. :class:`TokenizerError` if that
        token is not in the vocabulary."""
        token = self.eos_token if self.eos_token is not None else EOS_TOKEN
        token_id = self.backend.token_to_id(token)
        if token_id is None:
            raise TokenizerError(f"{self.file or self.path}: EOS token {token!r} is not in the vocabulary")
        return int(token_id)

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

    @property
    def chat_template(self) -> str | None:
        """Source of the default chat template, or None."""
        return self._chat.default

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
        variables: dict[str, Any] = {key: getattr(self, key) for key in SPECIAL_KEYS}
        variables["additional_special_tokens"] = self.additional_special_tokens
        variables.update(kwargs)
        return self._chat.render(messages, variables, add_generation_prompt=add_generation_prompt, tools=tools,
                                 documents=documents, chat_template=chat_template)

    def encode_chat(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True,
                    **kwargs: Any) -> list[int]:
        """Token ids of the rendered chat. Like HF, no extra special tokens are added: the template
        already wrote every special token it wants."""
        text = self.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, **kwargs)
        return self.encode(text, add_special_tokens=False)

    def __repr__(self) -> str:
        return (f"Tokenizer(path={str(self.path)!r}, vocab_size={self.vocab_size}, "
                f"eos_token_ids={self.eos_token_ids}, chat_template={'yes' if self.chat_templates else 'no'})")
