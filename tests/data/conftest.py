"""Shared fixtures: a tiny generated corpus and a tokenizer trained on it (once per session)."""

from __future__ import annotations

import json
import random

import pytest

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
         "which but have an they you were her she there café naïve über 東京").split()


def make_doc(rng: random.Random, n_words: int) -> str:
    out = []
    for _ in range(n_words):
        w = rng.choice(WORDS)
        if rng.random() < 0.15:
            w += str(rng.randint(0, 10**6))  # numbers glued to words: digits must still split
        out.append(w)
    return " ".join(out) + rng.choice([".", "!\n", "\n\n", " 42."])


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Two .txt docs and one .jsonl with 12 docs; returns (dir, {path: [docs]})."""
    rng = random.Random(1234)
    root = tmp_path_factory.mktemp("corpus")
    docs = {}
    for i in range(2):
        text = make_doc(rng, 300)
        (root / f"a{i}.txt").write_text(text, encoding="utf-8")
        docs[root / f"a{i}.txt"] = [text]
    lines = [make_doc(rng, rng.randint(5, 80)) for _ in range(12)]
    (root / "b.jsonl").write_text("".join(json.dumps({"text": t, "id": k}) + "\n"
                                          for k, t in enumerate(lines)), encoding="utf-8")
    docs[root / "b.jsonl"] = lines
    return root, docs


@pytest.fixture(scope="session")
def tokenizer_dir(corpus, tmp_path_factory):
    from sambay.tokenizer import train_tokenizer_from_files

    root, _ = corpus
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer_from_files([str(root / "*")], 400, out)
    return out
