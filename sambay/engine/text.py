"""Text around the token ids: a tokenizer adapter, a byte-level fallback, incremental detokenisation and
stop strings."""

from __future__ import annotations

from collections.abc import Sequence


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255 (for random-weight presets without a tokenizer, vocab >= 256).

    Ids >= 256 have no byte meaning and decode as `<|id|>`; invalid UTF-8 decodes as U+FFFD.
    """

    eos_token_ids: tuple[int, ...] = ()

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        parts, run = [], bytearray()
        for i in ids:
            if 0 <= i < 256:
                run.append(i)
                continue
            parts.append(run.decode("utf-8", errors="replace"))
            run = bytearray()
            parts.append(f"<|{i}|>")
        parts.append(run.decode("utf-8", errors="replace"))
        return "".join(parts)


class TextCodec:
    """The three things the generator needs from any tokenizer: encode, decode, EOS ids.

    Accepts `sambay.interop.tokenizer` objects (encode -> list[int], decode, eos_token_ids), a
    `tokenizers.Tokenizer` (encode -> Encoding with .ids) and the data pipeline's `LoadedTokenizer`
    (.tokenizer and .eos_id).
    """

    def __init__(self, tokenizer):
        inner = getattr(tokenizer, "tokenizer", None)
        self._tok = inner if inner is not None and hasattr(inner, "encode") and not hasattr(tokenizer, "encode") else tokenizer
        eos = getattr(tokenizer, "eos_token_ids", None)
        if eos is None:
            one = getattr(tokenizer, "eos_token_id", getattr(tokenizer, "eos_id", None))
            eos = () if one is None else (one,)
        self.eos_token_ids = tuple(int(e) for e in (eos if isinstance(eos, (list, tuple, set, frozenset)) else (eos,)))

    def encode(self, text: str) -> list[int]:
        out = self._tok.encode(text)
        return list(getattr(out, "ids", out))

    def decode(self, ids: Sequence[int]) -> str:
        try:  # as vLLM and HF do by default: special tokens are not part of the generated text
            return self._tok.decode(list(ids), skip_special_tokens=True)
        except TypeError:
            return self._tok.decode(list(ids))


class IncrementalText:
    """Token ids in, text deltas out, never splitting a multi-byte character (vLLM's offsets method:
    re-decode a few tokens of context and emit only once the text no longer ends in U+FFFD)."""

    def __init__(self, codec):
        self.codec = codec
        self.ids: list[int] = []
        self.prefix_offset = self.read_offset = 0

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        prefix = self.codec.decode(self.ids[self.prefix_offset:self.read_offset])
        full = self.codec.decode(self.ids[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
            return full[len(prefix):]
        return ""

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character decodes as U+FFFD)."""
        prefix = self.codec.decode(self.ids[self.prefix_offset:self.read_offset])
        full = self.codec.decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return full[len(prefix):]


def find_stop(text: str, stops: Sequence[str], new_from: int) -> tuple[int, str] | None:
    """Earliest stop string in `text` that ends after index `new_from` -> (start index, the string)."""
    best = None
    for s in stops:
        i = text.find(s, max(0, new_from - len(s) + 1))
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return best


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest suffix of `text` that could still grow into a stop string (not streamed yet)."""
    n = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), n, -1):
            if text.endswith(s[:k]):
                n = k
                break
    return n
