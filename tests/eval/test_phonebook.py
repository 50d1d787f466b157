"""Phonebook: the prompt layout (book, blank line, two shots, blank line, "name:"), the numbers, distinct
census names, seeding, and the first-line exact-match score."""

import re

import pytest

pytestmark = pytest.mark.eval  # needs the eval extra: CI installs it and runs pytest -m eval
pytest.importorskip("names")  # the eval extra; CI installs it for the `-m eval` step

from sambay.eval.phonebook import (  # noqa: E402
    ENTRIES,
    MAX_NEW_TOKENS,
    _name_table,
    build_prompt,
    entries_for_tokens,
    generate_samples,
    score,
)

ENTRY = re.compile(r"^([A-Z][a-z]+ [A-Z][a-z]+): ([6-9][0-9]{9})$")


def test_the_prompt_layout_is_exact():
    book = [("Mary Smith", "6123456789"), ("John Brown", "8765432109"), ("Ann Lee", "9988776655")]
    assert build_prompt(book, (1, 2), 0) == ("Mary Smith: 6123456789\nJohn Brown: 8765432109\nAnn Lee: 9988776655"
                                             "\n\nJohn Brown: 8765432109\nAnn Lee: 9988776655\n\nMary Smith:")


@pytest.mark.parametrize("n_entries", [3, 20, 480])
def test_generated_prompts_have_the_book_the_two_shots_and_the_query(n_entries):
    for s in generate_samples(n_entries, 4, seed=1):
        assert s.task == "phonebook" and s.length == n_entries and s.max_new_tokens == MAX_NEW_TOKENS == 20
        book_text, shots_text, query = s.prompt.split("\n\n")
        lines = book_text.split("\n")
        assert len(lines) == n_entries
        book = [ENTRY.match(line).groups() for line in lines]  # "First Last: [6-9]ddddddddd" on every line
        names = [name for name, _ in book]
        assert len(set(names)) == n_entries  # distinct: one answer per query
        first, second = s.metadata["shots"]
        assert shots_text == f"{lines[first]}\n{lines[second]}"
        q = s.metadata["position"]
        assert len({first, second, q}) == 3
        assert query == f"{s.metadata['name']}:" and s.prompt.endswith(f"\n\n{names[q]}:")
        assert s.answers == (book[q][1],) and lines[q] == f"{s.metadata['name']}: {s.answers[0]}"
        assert s.metadata["n_entries"] == n_entries


def test_samples_are_reproducible_by_seed_and_extend_with_n():
    a, b = generate_samples(50, 3, seed=7), generate_samples(50, 3, seed=7)
    assert a == b
    assert generate_samples(50, 5, seed=7)[:3] == a
    assert [s.index for s in a] == [0, 1, 2] and len({s.prompt for s in a}) == 3
    assert generate_samples(50, 3, seed=8)[0].prompt != a[0].prompt


def test_names_come_from_the_census_lists_and_phones_start_with_6_to_9():
    firsts = set(_name_table("male")[0]) | set(_name_table("female")[0])
    lasts = set(_name_table("last")[0])
    s = generate_samples(ENTRIES["32K"], 1, seed=0)[0]
    book = [ENTRY.match(line).groups() for line in s.prompt.split("\n\n")[0].split("\n")]
    assert len(book) == 1850 and len({n for n, _ in book}) == 1850
    assert all(n.split()[0] in firsts and n.split()[1] in lasts for n, _ in book)
    leading = {p[0] for _, p in book}
    assert leading == {"6", "7", "8", "9"} and all(len(p) == 10 and p.isdigit() for _, p in book)
    assert sum(n.endswith(" Smith") for n, _ in book) > 5  # census frequency: Smith is the commonest surname


def test_the_score_is_an_exact_match_of_the_first_line():
    s = generate_samples(20, 1, seed=3)[0]
    number = s.answers[0]
    assert score(f" {number}\nJohn Doe: 6000000000", s.answers) == 1.0  # the oracle
    assert score(number, s.answers) == 1.0
    assert score("I do not know", s.answers) == 0.0
    assert score("", s.answers) == 0.0
    assert score(f"{number}5", s.answers) == 0.0
    assert score(f"{number[:-1]}", s.answers) == 0.0
    assert score(f"call {number}", s.answers) == 0.0


def test_bad_arguments_and_sizing_by_tokens():
    with pytest.raises(ValueError, match="n_entries must be an integer >= 3"):
        generate_samples(2, 1)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        generate_samples(10, 1, seed=-1)

    class Chars:
        def encode(self, text, add_special_tokens=False):
            return list(text)

    n = entries_for_tokens(10_000, Chars())
    assert 300 < n < 600  # about 23-26 characters per entry
