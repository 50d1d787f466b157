"""Reasoning parsers: split a chat answer into `reasoning_content` (inside `<think>…</think>`) and `content`.

`deepseek_r1`: everything before `</think>` is reasoning, whether or not the answer opened with `<think>`
(Phi-4-mini-flash-reasoning and the R1 distills often start thinking without the tag); an answer that never
closes the tag is reasoning only. `qwen3`: reasoning only when the answer opens with `<think>`.

Tags are matched on text, not token ids, so they work whether the tokenizer has them as single tokens or
not. The streaming splitter holds back a few characters that could still become a tag, so a tag split
across tokens is never shown as content.
"""

from __future__ import annotations

OPEN, CLOSE = "<think>", "</think>"
REASONING_PARSERS = ("deepseek_r1", "qwen3")


class ReasoningSplitter:
    """One answer's incremental split: `push(delta) -> (reasoning delta, content delta)`, then `finish()`."""

    def __init__(self, parser: str):
        if parser not in REASONING_PARSERS:
            raise ValueError(f"unknown reasoning parser {parser!r}; choose from {', '.join(REASONING_PARSERS)}")
        self.opening_optional = parser == "deepseek_r1"
        self.state = "start"  # -> "reasoning" -> "content"
        self.pending = ""

    def push(self, delta: str) -> tuple[str, str]:
        self.pending += delta
        reasoning = content = ""
        while True:
            if self.state == "start":
                head = self.pending.lstrip()
                if head.startswith(OPEN):
                    self.pending, self.state = head[len(OPEN):], "reasoning"
                elif OPEN.startswith(head):  # empty, or a tag that may still be coming
                    return reasoning, content
                else:
                    self.state = "reasoning" if self.opening_optional else "content"
            elif self.state == "reasoning":
                end = self.pending.find(CLOSE)
                if end >= 0:
                    reasoning += self.pending[:end]
                    self.pending, self.state = self.pending[end + len(CLOSE):], "content"
                    continue
                keep = _tag_prefix_len(self.pending, CLOSE)
                cut = len(self.pending) - keep
                reasoning, self.pending = reasoning + self.pending[:cut], self.pending[cut:]
                return reasoning, content
            else:
                content, self.pending = content + self.pending, ""
                return reasoning, content

    def finish(self) -> tuple[str, str]:
        """The held-back rest, at the end of the answer."""
        rest, self.pending = self.pending, ""
        if self.state == "start":
            self.state = "reasoning" if self.opening_optional and rest.strip() else "content"
        return (rest, "") if self.state == "reasoning" else ("", rest)


def split_reasoning(parser: str, text: str) -> tuple[str | None, str | None]:
    """A whole answer -> (reasoning_content or None, content or None)."""
    splitter = ReasoningSplitter(parser)
    r1, c1 = splitter.push(text)
    r2, c2 = splitter.finish()
    reasoning, content = r1 + r2, c1 + c2
    return (reasoning if splitter.state != "content" or reasoning else None), (content or None)


def _tag_prefix_len(text: str, tag: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `tag`."""
    for k in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:k]):
            return k
    return 0
