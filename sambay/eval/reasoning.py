"""Reasoning evaluation: pass@1 averaged over k samples, and pass@k, on the user's own math problems.

Problems come as JSONL, one `{"question": ..., "answer": ...}` per line (`problem` is accepted for
`question`; the answer may be a number or LaTeX). Each question is asked through the model's chat template
as `Please reason step by step, and put your final answer within \\boxed{}. {question}` (the prompt of the
Phi-4-mini-flash-reasoning evaluation), sampled k times at the model card's settings (temperature 0.6,
top-p 0.95, up to 32K new tokens), and each answer is checked with math-verify against the gold answer
(numeric, symbolic and set equality). Long generation is the point, so tokens per problem and wall time
are reported beside the scores.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from sambay.engine import SamplingParams

PROMPT = "Please reason step by step, and put your final answer within \\boxed{{}}. {question}"
MAX_FILE_BYTES = 64 << 20


@dataclass
class Problem:
    question: str
    answer: str


@dataclass
class ReasoningReport:
    problems: int
    samples: int
    pass_at_1: float  # mean over problems of the share of correct samples
    pass_at_k: dict[int, float]  # unbiased pass@k for k = 1, 2, 4, ... up to the samples
    mean_new_tokens: float  # per sample
    wall_s: float
    per_problem: list[dict] = field(default_factory=list)


def load_problems(path: str | Path) -> list[Problem]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_FILE_BYTES >> 20} MiB; this is meant for problem sets")
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{number}: not JSON ({e.msg})") from None
        question = row.get("question", row.get("problem")) if isinstance(row, dict) else None
        answer = row.get("answer") if isinstance(row, dict) else None
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{path}:{number}: needs a non-empty string field 'question' (or 'problem')")
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or str(answer).strip() == "":
            raise ValueError(f"{path}:{number}: needs an 'answer' (a string or a number)")
        problems.append(Problem(question, str(answer)))
    if not problems:
        raise ValueError(f"{path}: no problems")
    return problems


def is_correct(prediction: str, gold: str) -> bool:
    """Whether the prediction's final answer equals the gold answer (math-verify)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(), ExprExtractionConfig()]
    gold_text = gold if ("$" in gold or "\\boxed" in gold) else f"${gold}$"
    gold_parsed = parse(gold_text, extraction_config=configs)
    pred_parsed = parse(prediction, extraction_config=configs)
    return bool(gold_parsed) and bool(pred_parsed) and bool(verify(gold_parsed, pred_parsed))


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimator 1 - C(n - c, k) / C(n, k) of drawing at least one correct of k samples."""
    if n - correct < k:
        return 1.0
    return 1.0 - math.comb(n - correct, k) / math.comb(n, k)


def evaluate_reasoning(backend, problems: list[Problem], *, samples: int = 8, max_new_tokens: int = 32768,
                       temperature: float = 0.6, top_p: float = 0.95, seed: int = 0) -> ReasoningReport:
    """`backend`: a LocalBackend or RemoteBackend (its chat template renders each question)."""
    prompts = [backend.chat_ids([{"role": "user", "content": PROMPT.format(question=p.question)}]) for p in problems]
    params = SamplingParams(n=samples, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
    start = time.perf_counter()
    completions = backend.generate(prompts, params)
    wall = time.perf_counter() - start
    rows, new_tokens = [], []
    for problem, group in zip(problems, completions):
        correct = [is_correct(c.text, problem.answer) for c in group]
        new_tokens += [c.num_tokens for c in group]
        rows.append({"question": problem.question, "answer": problem.answer, "correct": correct,
                     "new_tokens": [c.num_tokens for c in group], "finish_reasons": [c.finish_reason for c in group]})
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= samples]
    return ReasoningReport(
        problems=len(problems), samples=samples,
        pass_at_1=sum(sum(r["correct"]) / samples for r in rows) / len(rows),
        pass_at_k={k: sum(pass_at_k(samples, sum(r["correct"]), k) for r in rows) / len(rows) for k in ks},
        mean_new_tokens=sum(new_tokens) / len(new_tokens) if new_tokens else float("nan"), wall_s=wall,
        per_problem=rows)
