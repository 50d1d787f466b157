import random

import pytest

from sambay.serve.reasoning import ReasoningSplitter, split_reasoning

CASES = [  # (parser, answer, reasoning, content)
    ("deepseek_r1", "<think>plan</think>\n\nfour", "plan", "\n\nfour"),
    ("deepseek_r1", "plan</think>four", "plan", "four"),  # the opening tag is missing: still reasoning
    ("deepseek_r1", "  <think>a < b</think>x", "a < b", "x"),
    ("deepseek_r1", "thinking that never ends", "thinking that never ends", None),
    ("deepseek_r1", "<think></think>only the answer", None, "only the answer"),
    ("deepseek_r1", "a </thi", "a </thi", None),  # a partial tag at the very end is text
    ("qwen3", "<think>plan</think>four", "plan", "four"),
    ("qwen3", "no thinking here", None, "no thinking here"),
    ("qwen3", "<thunk>x", None, "<thunk>x"),
]


@pytest.mark.parametrize("parser, answer, reasoning, content", CASES)
def test_split_whole_answers(parser, answer, reasoning, content):
    assert split_reasoning(parser, answer) == (reasoning, content)


@pytest.mark.parametrize("parser, answer, reasoning, content", CASES)
def test_streaming_in_random_pieces_gives_the_same_split(parser, answer, reasoning, content):
    rng = random.Random(0)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(answer)), k=min(len(answer) - 1, rng.randint(0, 6))))
        pieces = [answer[i:j] for i, j in zip([0, *cuts], [*cuts, len(answer)])]
        splitter = ReasoningSplitter(parser)
        got_r = got_c = ""
        for piece in pieces:
            r, c = splitter.push(piece)
            assert "</think>" not in c or "</think>" in (content or "")  # a closing tag never leaks as content
            got_r, got_c = got_r + r, got_c + c
        r, c = splitter.finish()
        assert (got_r + r, got_c + c) == (reasoning or "", content or "")


def test_unknown_parser_is_an_error():
    with pytest.raises(ValueError, match="deepseek_r1"):
        ReasoningSplitter("nope")
