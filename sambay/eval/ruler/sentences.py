"""Sentence splitting for the essay haystack, with no downloaded data.

RULER splits its essay haystack with nltk's pretrained English Punkt model (``punkt_tab``), which has to
be downloaded. Here nltk's Punkt tokenizer runs untrained (``PunktSentenceTokenizer()``: no abbreviation
list, no learned collocations), which needs no data: it breaks after ``.``, ``?`` or ``!`` (closing quotes
and brackets included) before the next word, so it also breaks after abbreviations such as ``Mr.``. Where
nltk is not installed a regular expression does the same more crudely. Split positions differ slightly
from RULER's; they only decide where needles may be inserted.

Untrained Punkt decides each break from the text around it, so the sentences of a prefix of a text are the
sentences of the whole text, the last one cut at the prefix's end. `PrefixSentences` uses this to split a
long text once, lazily, and serve the sentences of any prefix.
"""

from __future__ import annotations

import bisect
import re
from functools import cache

__all__ = ["PrefixSentences", "sentence_spans", "split_sentences"]

_FALLBACK = re.compile(r"\S.*?(?:[.!?][\"')\]]*(?=\s)|$)", re.DOTALL)


@cache
def _punkt():
    try:
        from nltk.tokenize.punkt import PunktSentenceTokenizer
    except ImportError:
        return None
    return PunktSentenceTokenizer()


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of ``text``."""
    punkt = _punkt()
    if punkt is not None:
        return list(punkt.span_tokenize(text))
    return [m.span() for m in _FALLBACK.finditer(text)]


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``."""
    return [text[a:b] for a, b in sentence_spans(text)]


class PrefixSentences:
    """Sentences of the prefixes ``text[:end]`` of one long text, splitting it in growing chunks on demand."""

    def __init__(self, text: str, chunk: int = 1 << 16):
        self.text = text
        self._chunk = chunk
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._done = 0  # spans are final for sentences starting before this offset

    def _extend(self, end: int) -> None:
        while self._done < min(end, len(self.text)):
            # Split from the first sentence not yet final through a chunk past `end`, ending on a space.
            limit = min(len(self.text), max(end, self._done) + self._chunk)
            if limit < len(self.text):
                space = self.text.rfind(" ", self._done + 1, limit)
                limit = space if space > self._done else limit
            spans = [(a + self._done, b + self._done) for a, b in sentence_spans(self.text[self._done:limit])]
            self._chunk *= 2
            if limit < len(self.text):
                if len(spans) < 2:
                    continue  # one sentence, maybe cut: split a longer chunk
                next_start = spans.pop()[0]  # the last sentence may go on past `limit`
            else:
                next_start = len(self.text)
            self._starts.extend(a for a, _ in spans)
            self._ends.extend(b for _, b in spans)
            self._done = next_start

    def spans(self, end: int) -> list[tuple[int, int]]:
        """Sentence spans of ``text[:end]`` (``end`` should fall on whitespace or the end of the text)."""
        self._extend(end)
        k = bisect.bisect_left(self._starts, end)
        spans = list(zip(self._starts[:k], self._ends[:k]))
        if spans and spans[-1][1] > end:
            spans[-1] = (spans[-1][0], end)
        return spans

    def sentences(self, end: int) -> list[str]:
        """The sentences of ``text[:end]``."""
        return [self.text[a:b] for a, b in self.spans(end)]
