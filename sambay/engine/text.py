"""Text around the token ids: a tokenizer adapter, a byte-level fallback and stop strings (incremental
detokenisation is `sambay.tokenizer.IncrementalDecoder`)."""

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

    Accepts a `sambay.tokenizer.Tokenizer` (encode -> list[int], decode, eos_token_ids), a
    `tokenizers.Tokenizer` (encode -> Encoding with .ids) and `ByteTokenizer`.
    """

    def __init__(self, tokenizer):
        self._tok = tokenizer
        eos = getattr(tokenizer, "eos_token_ids", None)
        if eos is None:
            one = getattr(tokenizer, "eos_token_id", None)
            eos = () if one is None else (one,)
        self.eos_token_ids = tuple(int(e) for e in (eos if isinstance(eos, (list, tuple, set, frozenset)) else (eos,)))

    def encode(self, text: str) -> list[int]:
        out = self._tok.encode(text)
        return list(getattr(out, "ids", out))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        try:  # as vLLM and HF do by default: special tokens are not part of the generated text
            return self._tok.decode(list(ids), skip_special_tokens=skip_special_tokens)
        except TypeError:
            return self._tok.decode(list(ids))


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
