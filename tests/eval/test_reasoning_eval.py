import json

import pytest
from serve.serve_helpers import write_chat_model

pytestmark = pytest.mark.eval  # needs the eval extra: CI installs it and runs pytest -m eval
pytest.importorskip("math_verify")  # the eval extra; CI installs it for the `-m eval` step

from sambay import from_pretrained, load_tokenizer  # noqa: E402
from sambay.eval.backend import LocalBackend  # noqa: E402
from sambay.eval.reasoning import PROMPT, evaluate_reasoning, is_correct, load_problems, pass_at_k  # noqa: E402


@pytest.mark.parametrize("prediction, gold, right", [
    (r"... so the answer is \boxed{\frac{14}{3}}.", "14/3", True),
    (r"\boxed{\dfrac{14}{3}}", r"$\frac{14}{3}$", True),
    (r"\boxed{4.6667}", r"\frac{14}{3}", False),
    ("The final answer is 42", "42", True),
    (r"\boxed{\{1, 2\}}", r"\{2, 1\}", True),
    ("I do not know", "42", False),
    ("", "7", False),
])
def test_answers_are_checked_by_value(prediction, gold, right):
    assert is_correct(prediction, gold) is right


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(8, 0, 1) == 0 and pass_at_k(8, 8, 1) == 1
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert pass_at_k(8, 2, 7) == 1.0  # fewer wrong samples than k


@pytest.mark.parametrize("lines, words", [
    (['{"question": "1+1?", "answer": 2}', "not json"], ":2: not JSON"),
    (['{"question": "1+1?"}'], ":1: needs an 'answer'"),
    (['{"answer": 3}'], ":1: needs a non-empty string field 'question'"),
    ([""], "no problems"),
])
def test_bad_problem_files_name_the_line(tmp_path, lines, words):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=words):
        load_problems(path)


def test_a_small_run_end_to_end_reports_scores_tokens_and_time(tmp_path):
    folder = write_chat_model(tmp_path / "m")
    problems = tmp_path / "p.jsonl"
    problems.write_text("\n".join(json.dumps(r) for r in [{"problem": "What is 6 x 7?", "answer": "42"},
                                                          {"question": "What is 2 + 2?", "answer": 4}]))
    tok = load_tokenizer(folder)
    backend = LocalBackend(from_pretrained(folder), tok, max_num_seqs=8)
    report = evaluate_reasoning(backend, load_problems(problems), samples=3, max_new_tokens=6, seed=1)
    assert report.problems == 2 and report.samples == 3 and set(report.pass_at_k) == {1, 2}
    assert 0 < report.mean_new_tokens <= 6 and report.wall_s > 0
    assert report.pass_at_1 == pytest.approx(report.pass_at_k[1])
    rendered = tok.apply_chat_template([{"role": "user", "content": PROMPT.format(question="What is 6 x 7?")}])
    assert rendered.startswith("<|user|>Please reason step by step, and put your final answer within \\boxed{}. What")
    again = evaluate_reasoning(backend, load_problems(problems), samples=3, max_new_tokens=6, seed=1)
    assert [r["new_tokens"] for r in again.per_problem] == [r["new_tokens"] for r in report.per_problem]
