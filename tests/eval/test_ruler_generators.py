"""RULER's 13 generators with a trained byte-level BPE: reproducible by seed, prompts fitted to the length
(maximal haystack, within 1 % where the haystack unit is small), needles exactly where the metadata says,
RULER's exact template lines, and oracle / garbage scores."""

import re
import string
from collections import Counter

import pytest

pytestmark = pytest.mark.eval  # needs the eval extra: CI installs it and runs pytest -m eval

from sambay.eval.ruler import COLUMNS, MAX_NEW_TOKENS, TASKS, generate_samples, get_task, score  # noqa: E402

NIAH = TASKS[:8]
ESSAY = {"niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multivalue", "niah_multiquery"}
# Tasks whose haystack unit is a word: a fitted prompt is within 1 % of the length even at 1024 tokens.
FINE_UNITS = ESSAY | {"ruler_cwe", "ruler_fwe"}
NOISE_LINE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NEEDLE = re.compile(r"One of the special magic (numbers|uuids) for (.+?) is: (.+?)\.")
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _require(task):
    """Skip unless the packages the task reads its data from are installed."""
    if task in ESSAY or task.startswith("ruler_qa"):
        pytest.importorskip("long_context_eval")
    if task in ESSAY:
        pytest.importorskip("nltk")
    if task in NIAH or task == "ruler_cwe":
        pytest.importorskip("wonderwords")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    """A 6,000-token byte-level BPE (digits split one by one) trained on RULER-like text."""
    from sambay.eval.ruler.haystacks import NOISE_LINE as noise
    from sambay.tokenizer import load_tokenizer, train_tokenizer

    texts = [noise] * 50 + [" ".join(string.ascii_uppercase)] * 5
    try:
        from sambay.eval.ruler.haystacks import essay

        texts += [essay().text[i:i + 2000] for i in range(0, 300_000, 2000)]
    except ImportError:
        pass
    try:
        from sambay.eval.ruler.words import common_words

        texts += [" ".join(common_words())] * 3
    except ImportError:
        pass
    return load_tokenizer(train_tokenizer(texts, 6000, tmp_path_factory.mktemp("bpe")))


def _context_lines(prompt):
    """The lines between a needle prompt's first line and its question."""
    return prompt.split("\n")[1:-1]


def test_the_task_list_columns_and_budgets():
    assert TASKS == ["niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2",
                     "niah_multikey_3", "niah_multivalue", "niah_multiquery", "ruler_vt", "ruler_cwe", "ruler_fwe",
                     "ruler_qa_squad", "ruler_qa_hotpot"]
    assert list(COLUMNS.values()) == ["S-1", "S-2", "S-3", "MK-1", "MK-2", "MK-3", "MV", "MQ", "VT", "CWE", "FWE",
                                      "QA-1", "QA-2"]
    assert MAX_NEW_TOKENS == {**dict.fromkeys(NIAH, 128), "ruler_vt": 30, "ruler_cwe": 120, "ruler_fwe": 50,
                              "ruler_qa_squad": 32, "ruler_qa_hotpot": 32}
    assert get_task("MK-2").name == "niah_multikey_2" and get_task("qa-1").name == "ruler_qa_squad"
    with pytest.raises(ValueError, match="niah_single_1.*ruler_qa_hotpot"):
        generate_samples("niah_single_9", 1024, 1, object())


@pytest.mark.parametrize("task", TASKS)
def test_samples_are_reproducible_by_seed(task, tok):
    _require(task)
    a = generate_samples(task, 2048, 2, tok, seed=0)
    assert a == generate_samples(task, 2048, 2, tok, seed=0)
    assert generate_samples(task, 2048, 3, tok, seed=0)[:2] == a
    assert a[0].prompt != a[1].prompt
    b = generate_samples(task, 2048, 2, tok, seed=1)
    assert [s.prompt for s in b] != [s.prompt for s in a] and b[0].answers != a[0].answers
    assert [(s.task, s.length, s.index, s.max_new_tokens) for s in a] == [(task, 2048, i, MAX_NEW_TOKENS[task])
                                                                          for i in range(2)]


@pytest.mark.parametrize("length", [1024, 4096])
@pytest.mark.parametrize("task", TASKS)
def test_prompts_fill_the_length_with_the_largest_haystack_that_fits(task, length, tok):
    _require(task)
    spec = get_task(task)
    budget = length - spec.max_new_tokens
    samples = generate_samples(task, length, 2, tok, seed=3)
    for s in samples:
        n = len(tok.encode(s.prompt))
        assert n == s.metadata["prompt_tokens"] and n + s.max_new_tokens <= length
        assert s.metadata["haystack_unit"] == spec.unit
        if task in FINE_UNITS:
            assert n + s.max_new_tokens >= 0.99 * length
    # Maximal: one more haystack unit would not fit (checked by rendering the first sample again).
    sampler = spec.make_sampler(length, 3, lambda text: len(tok.encode(text)))
    size = samples[0].metadata["haystack_size"]
    candidate = sampler.candidate(0)
    while size < candidate.min_size or candidate.render(size).prompt != samples[0].prompt:  # QA skips misfits
        assert sampler.skips_misfits
        candidate = sampler.candidate(0)
    assert size == candidate.max_size or len(tok.encode(candidate.render(size + 1).prompt)) > budget


@pytest.mark.parametrize("task", NIAH)
def test_needles_are_where_the_metadata_says(task, tok):
    _require(task)
    shape = {"niah_multikey_1": (4, 1, 1), "niah_multivalue": (1, 4, 1), "niah_multiquery": (4, 1, 4)}
    keys, values, queried = shape.get(task, (1, 1, 1))
    type_value = "uuids" if task in ("niah_single_3", "niah_multikey_3") else "numbers"
    for s in generate_samples(task, 2048, 3, tok, seed=5):
        needles = s.metadata["needles"]
        assert len(needles) == keys * values and len({n["key"] for n in needles}) == keys
        for n in needles:
            text = n["text"]
            assert s.prompt[n["offset"]:n["offset"] + len(text)] == text
            assert text == f"One of the special magic {type_value} for {n['key']} is: {n['value']}."
            if type_value == "uuids":
                assert UUID.fullmatch(n["value"])
            else:
                assert re.fullmatch(r"[1-9][0-9]{6}", n["value"])
            before, after = s.prompt[n["offset"] - 1], s.prompt[n["offset"] + len(text)]
            assert before in " \n" and after in " \n"  # between sentences or lines
            if task in ESSAY:
                assert n["depth"] in range(0, 101)
            else:
                assert _context_lines(s.prompt)[n["line"]] == text
        queries = s.metadata["queries"]
        assert len(queries) == queried
        assert sorted(s.answers) == sorted(n["value"] for n in needles if n["key"] in queries)
        context = "\n".join(_context_lines(s.prompt))
        for a in s.answers:
            assert context.count(a) == 1
        if task == "niah_single_1":
            assert set(_context_lines(s.prompt)) == {NOISE_LINE, needles[0]["text"]}
        if task in ("niah_multikey_2", "niah_multikey_3"):
            lines = _context_lines(s.prompt)
            matches = [NEEDLE.fullmatch(line) for line in lines]
            assert all(matches) and len(lines) == s.metadata["haystack_size"] + 1
            assert [m.group(2) for m in matches].count(queries[0]) == 1
            if task == "niah_multikey_3":
                assert all(UUID.fullmatch(m.group(2)) and UUID.fullmatch(m.group(3)) for m in matches)
        if task in ESSAY:
            assert len(_context_lines(s.prompt)) == 1  # the essay has no newlines
            assert s.metadata["haystack"] == "essay"


def test_needle_prompts_use_rulers_singular_and_plural_templates(tok):
    pytest.importorskip("wonderwords")
    s = generate_samples("niah_single_1", 1024, 1, tok, seed=0)[0]
    key = s.metadata["queries"][0]
    lines = s.prompt.split("\n")
    assert lines[0] == ("A special magic number is hidden within the following text. Make sure to memorize it. "
                        "I will quiz you about the number afterwards.")
    assert lines[-1] == (f"What is the special magic number for {key} mentioned in the provided text? "
                         f"The special magic number for {key} mentioned in the provided text is")
    assert re.fullmatch(r"[a-z][a-z -]*-[a-z][a-z -]*", key)  # adjective-noun
    pytest.importorskip("long_context_eval")
    pytest.importorskip("nltk")
    s = generate_samples("niah_multiquery", 1024, 1, tok, seed=0)[0]
    k1, k2, k3, k4 = s.metadata["queries"]
    lines = s.prompt.split("\n")
    assert lines[0] == ("Some special magic numbers are hidden within the following text. Make sure to memorize it. "
                        "I will quiz you about the numbers afterwards.")
    query = f"{k1}, {k2}, {k3}, and {k4}"
    assert lines[-1] == (f"What are all the special magic numbers for {query} mentioned in the provided text? "
                         f"The special magic numbers for {query} mentioned in the provided text are")
    from sambay.eval.ruler.haystacks import essay

    assert lines[1].startswith(essay().text[:40]) or s.metadata["needles"][0]["depth"] == 0  # the essays' start


def test_variable_tracking_prompt_and_chain(tok):
    s = generate_samples("ruler_vt", 2048, 2, tok, seed=0)[1]
    value = s.metadata["value"]
    assert s.prompt.startswith("Memorize and track the chain(s) of variable assignment hidden in the following "
                               "text.\n\n")
    assert s.prompt.split("\n")[-1] == (
        f"Question: Find all variables that are assigned the value {value} in the text above. Answer: According to "
        f"the chain(s) of variable assignment in the text above, 5 variables are assgined the value {value}, they "
        "are:")
    # A solved example with 3-letter variables, then the task after a blank line.
    example, task_text = s.prompt.split("\n\nMemorize and track", 1)
    assert example.startswith("Memorize and track") and example.endswith(
        " they are: " + " ".join(s.metadata["example_answers"]))
    assert all(re.fullmatch(r"[A-Z]{3}", v) for v in s.metadata["example_answers"])
    assert task_text.count(NOISE_LINE) == s.metadata["haystack_size"]
    # Follow the chain from the value: it reaches the five answers in order.
    assigned = dict(re.findall(r"VAR ([A-Z]{5}) = (VAR [A-Z]{5}|\d{5})", task_text))
    chain, current = [], str(value)
    while True:
        nxt = [v for v, src in assigned.items() if src in (current, f"VAR {current}")]
        if not nxt:
            break
        chain.append(nxt[0])
        current = nxt[0]
    assert tuple(chain) == s.answers and len(set(s.answers)) == 5
    for st in s.metadata["statements"]:
        assert s.prompt[st["offset"]:st["offset"] + len(st["text"])] == st["text"]


def _numbered(text):
    return [w for _, w in re.findall(r"(\d+)\. (.+?)(?= \d+\. |$)", text)]


@pytest.mark.parametrize("length", [2048, 4096])
def test_common_words_extraction(length, tok):
    pytest.importorskip("wonderwords")
    s = generate_samples("ruler_cwe", length, 1, tok, seed=0)[0]
    intro = ("Below is a numbered list of words. In these words, some appear more often than others. Memorize the "
             "ones that appear most often.")
    question = ("Question: What are the 10 most common words in the above list? Answer: The top 10 words that "
                "appear most often in the list are:")
    lines = s.prompt.split("\n")
    assert lines[0] == intro and lines[-1] == question and len(lines) == 6 and lines[3] == intro
    assert lines[2].startswith(question + " 1. ") and _numbered(lines[2][len(question) + 1:]) == list(
        s.metadata["example_answers"])
    counts = Counter(_numbered(lines[4]))
    common, other = (30, 3) if length >= 4096 else (6, 1)
    assert {w: counts[w] for w in s.answers} == dict.fromkeys(s.answers, common)
    assert len(counts) == s.metadata["haystack_size"]
    assert set(counts.values()) == {common, other}
    assert [int(i) for i, _ in re.findall(r"(\d+)\. (.+?)(?= \d+\. |$)", lines[4])] == list(
        range(1, sum(counts.values()) + 1))


def test_frequent_words_extraction(tok):
    s = generate_samples("ruler_fwe", 4096, 1, tok, seed=0)[0]
    first, last = s.prompt.split("\n")
    intro = ("Read the following coded text and track the frequency of each coded word. Find the three most "
             "frequently appeared coded words. ")
    assert first.startswith(intro)
    assert last == ("Question: Do not provide any explanation. Please ignore the dots '....'. What are the three "
                    "most frequently appeared words in the above coded text? Answer: According to the coded text "
                    "above, the three most frequently appeared words are:")
    counts = Counter(first[len(intro):].split(" "))
    ranked = [w for w, _ in counts.most_common()]
    assert ranked[0] == "..." and tuple(ranked[1:4]) == s.answers
    assert counts[ranked[3]] > counts[ranked[4]]
    assert dict(zip(ranked[:5], [counts[w] for w in ranked[:5]])) == s.metadata["top_counts"]
    assert len(counts) <= 4096 // 50 and all(re.fullmatch(r"[a-z]{6}", w) for w in ranked[1:])


@pytest.mark.parametrize("task", ["ruler_qa_squad", "ruler_qa_hotpot"])
def test_question_answering_prompt_and_gold_documents(task, tok):
    _require(task)
    instruction = ("Answer the question based on the given documents. Only give me the answer and do not output "
                   "any other words.")
    for s in generate_samples(task, 4096, 2, tok, seed=0):
        assert s.prompt.startswith(f"{instruction}\n\nThe following are given documents.\n\nDocument 1:\n")
        assert s.prompt.endswith(f"\n\n{instruction}\n\nQuestion: {s.metadata['question']} Answer:")
        docs = re.split(r"\n\nDocument \d+:\n", s.prompt.split("\n\nDocument 1:\n", 1)[1].rsplit("\n\n" + instruction,
                                                                                                1)[0])
        numbers = [int(i) for i in re.findall(r"\n\nDocument (\d+):\n", "\n\n" + s.prompt.split("documents.", 1)[1])]
        assert numbers == list(range(1, len(docs) + 1)) and len(docs) == s.metadata["haystack_size"]
        gold = [docs[i - 1] for i in s.metadata["gold_documents"]]
        if task == "ruler_qa_squad":
            assert len(gold) == 1 and any(a in gold[0] for a in s.answers)
        else:
            assert len(gold) >= 2


@pytest.mark.parametrize("task", TASKS)
def test_scores_oracle_one_and_garbage_zero(task, tok):
    _require(task)
    s = generate_samples(task, 1024, 1, tok, seed=0)[0]
    assert score(task, " ".join(s.answers), s.answers) == 1.0
    assert score(task, "zzz qqq", s.answers) == 0.0
    assert score(COLUMNS[task], s.answers[0].upper(), s.answers) == (
        1.0 if task.startswith("ruler_qa") else 1 / len(s.answers))


def test_lengths_too_short_for_the_task_are_refused(tok):
    with pytest.raises(ValueError, match="ruler_vt"):
        generate_samples("ruler_vt", 300, 1, tok)
    with pytest.raises(ValueError, match="more than 50 tokens"):
        generate_samples("ruler_fwe", 50, 1, tok)
