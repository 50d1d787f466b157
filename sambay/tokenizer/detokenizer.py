"""Streaming detokenisation: token ids in, text pieces out, never half a character."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

__all__ = ["IncrementalDecoder"]


class _Decodes(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDecoder:
    """Turn a stream of token ids into text pieces without ever emitting half a character.

    Byte-level BPE splits multi-byte UTF-8 characters (emoji, CJK) across tokens, so decoding token by
    token would print U+FFFD replacement characters. We keep two offsets into the id list: text up to
    ``read_offset`` has been emitted; ``prefix_offset`` is where the decode window starts (a few tokens of
    context, so tokenizers that change a token's text depending on its neighbours — e.g. a leading space —
    decode consistently). A piece is emitted only once the window's text grows and does not end in U+FFFD
    (the offsets method vLLM uses). Concatenating every ``push()`` result and ``flush()`` gives
    ``tokenizer.decode(all_ids)``.

    ``tokenizer`` is anything with ``decode(ids, skip_special_tokens=...)``: a
    :class:`sambay.tokenizer.Tokenizer`, or the engine's ``TextCodec``. ``context_ids`` (e.g. the prompt)
    seeds the window so the first generated token decodes as it would in context; its text is not emitted.
    """

    def __init__(self, tokenizer: _Decodes, *, skip_special_tokens: bool = False,
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
