"""RULER's variable tracking (VT): follow a chain of assignments hidden in noise.

One chain of 4 hops over 5 variables (5 random upper-case letters each): ``VAR AAAAA = 12345`` (a 5-digit
value, 10000-99998), then ``VAR BBBBB = VAR AAAAA `` and so on (RULER's statements; the copies keep its
trailing space). The statements go in order before randomly chosen lines of the noise haystack (RULER's
noise line, one per line), and all pieces are joined with single spaces. The prompt::

    Memorize and track the chain(s) of variable assignment hidden in the following text.

    {context}
    Question: Find all variables that are assigned the value {value} in the text above. Answer: According to the chain(s) of variable assignment in the text above, 5 variables are assgined the value {value}, they are:

("assgined" is RULER's spelling). Like RULER, the prompt starts with one solved example of the same task
(3-letter variables), its noise sized so that the example and its answer take at most 500 - 30 tokens,
followed by a blank line. The answers are the 5 variable names; the generation budget is 30 tokens.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable

from sambay.eval.ruler.base import Candidate, Rendered, seeded
from sambay.eval.ruler.fit import DoesNotFit, fit_largest
from sambay.eval.ruler.haystacks import NOISE_LINE

__all__ = ["MAX_NEW_TOKENS", "VariableTrackingSampler", "answer_prefix", "chain_statements", "question"]

MAX_NEW_TOKENS = 30
NUM_HOPS = 4
NAME_LETTERS = 5
EXAMPLE_NAME_LETTERS = 3
EXAMPLE_LENGTH = 500  # RULER sizes its solved example for a 500-token context (minus the 30-token answer)
INTRO = "Memorize and track the chain(s) of variable assignment hidden in the following text."


def question(value: int) -> str:
    return f"Question: Find all variables that are assigned the value {value} in the text above."


def answer_prefix(value: int, num_vars: int) -> str:
    return (f"Answer: According to the chain(s) of variable assignment in the text above, {num_vars} variables "
            f"are assgined the value {value}, they are:")


def chain_statements(names: list[str], value: int) -> list[str]:
    """``VAR A = value``, then ``VAR B = VAR A `` ... (with RULER's trailing space)."""
    return [f"VAR {names[0]} = {value}"] + [f"VAR {b} = VAR {a} " for a, b in zip(names, names[1:])]


def _names(rng: random.Random, letters: int, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        name = "".join(rng.choices(string.ascii_uppercase, k=letters))
        if name not in out:
            out.append(name)
    return out


def _task_text(rng: random.Random, lines: int, letters: int) -> tuple[str, list[str], int, list[int]]:
    """(intro + context + question, variable names, value, statement offsets) for ``lines`` noise lines."""
    names = _names(rng, letters, NUM_HOPS + 1)
    value = rng.randrange(10000, 99999)  # RULER: numpy's randint(10000, 99999), upper bound excluded
    statements = chain_statements(names, value)
    at = sorted(rng.sample(range(lines), len(statements)))
    pieces: list[str] = []
    offsets = []
    size = len(INTRO) + 2 - 1  # context starts after "INTRO\n\n"; -1 for the separator before the first piece
    prev = 0
    for statement, a in zip(statements, at):
        for _ in range(a - prev):
            pieces.append(NOISE_LINE + "\n")
            size += len(NOISE_LINE) + 2
        prev = a
        offsets.append(size + 1)
        pieces.append(statement)
        size += len(statement) + 1
    pieces.extend([NOISE_LINE + "\n"] * (lines - prev))
    # RULER then replaces ". \n" by ".\n", which never occurs with these pieces.
    text = f"{INTRO}\n\n{' '.join(pieces)}\n{question(value)}"
    return text, names, value, offsets


class VariableTrackingSampler:
    """Candidates of ``ruler_vt`` at one length and seed."""

    skips_misfits = False

    def __init__(self, name: str, length: int, seed: int, count_tokens: Callable[[str], int]):
        self.name, self.length, self.seed = name, length, seed
        self._count = count_tokens
        self._example_lines: int | None = None

    def first_guess(self, budget: int) -> int:
        return max(NUM_HOPS + 1, (budget - EXAMPLE_LENGTH) // 25)

    def _example(self, rng: random.Random, lines: int) -> tuple[str, list[str]]:
        text, names, value, _ = _task_text(rng, lines, EXAMPLE_NAME_LETTERS)
        return f"{text} {answer_prefix(value, len(names))} {' '.join(names)}", names

    def example_lines(self) -> int:
        """Noise lines of the solved example, sized once per run in the given tokenizer."""
        if self._example_lines is None:
            def measure(lines: int) -> int:
                return self._count(self._example(seeded("ruler", self.name, "example-size"), lines)[0])
            try:
                fit = fit_largest(measure, EXAMPLE_LENGTH - MAX_NEW_TOKENS, NUM_HOPS + 1, EXAMPLE_LENGTH, 20)
                self._example_lines = fit.size
            except DoesNotFit:
                self._example_lines = NUM_HOPS + 1
        return self._example_lines

    def candidate(self, index: int) -> Candidate:
        ident = ("ruler", self.name, self.seed, self.length, index)
        example, example_names = self._example(seeded(*ident, "example"), self.example_lines())

        def render(lines: int) -> Rendered:
            text, names, value, offsets = _task_text(seeded(*ident, "chain"), lines, NAME_LETTERS)
            prefix = answer_prefix(value, len(names))
            prompt = f"{example}\n\n{text} {prefix}"
            base = len(example) + 2
            statements = [{"text": s, "offset": base + o} for s, o in zip(chain_statements(names, value), offsets)]
            metadata = {"value": value, "statements": statements, "example_answers": example_names,
                        "answer_prefix": prefix}
            return Rendered(prompt, tuple(names), metadata)

        return Candidate(render, NUM_HOPS + 1, max(NUM_HOPS + 1, self.length))
