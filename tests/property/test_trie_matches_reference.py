"""The trie finds exactly what a naive matcher finds, on generated input."""

from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from tests.strategies import deep_subjects, patterns, subjects
from trio_pubsub import subject_matches
from trio_pubsub._subject import parse_pattern, parse_subject
from trio_pubsub._trie import SubjectTrie
from trio_pubsub.testing import reference_match as kit_reference_match

from ..helpers import LabelledRoutes


def recursive_match(pattern: str, subject: str) -> bool:
    """NATS matching, written independently of the library: recursion on lists."""

    def walk(pat: list[str], sub: list[str]) -> bool:
        if not pat:
            return not sub
        head, *rest = pat
        if head == ">" and not rest:
            return len(sub) >= 1
        if not sub:
            return False
        return (head in ("*", sub[0])) and walk(rest, sub[1:])

    return walk(pattern.split("."), subject.split("."))


def reference_match(pattern: str, subject: str) -> bool:
    """The kit's reference matcher, checked here against a second one."""
    expected = kit_reference_match(pattern, subject)
    assert expected == recursive_match(pattern, subject), (pattern, subject)
    return expected


def check_trie_against_reference(pats: list[str], subs: list[str]) -> None:
    trie: SubjectTrie[int] = SubjectTrie()
    for index, pattern in enumerate(pats):
        trie.insert(parse_pattern(pattern), index)
    for subject in subs:
        expected = sorted(i for i, p in enumerate(pats) if reference_match(p, subject))
        found = trie.match(parse_subject(subject))
        assert sorted(found) == expected
        assert len(found) == len(set(found))


@given(st.lists(patterns(), max_size=30), st.lists(subjects, min_size=1, max_size=20))
def test_trie_match_equals_reference(pats: list[str], subs: list[str]) -> None:
    """For every subject, the trie returns the indexes of the matching patterns."""
    check_trie_against_reference(pats, subs)


@given(
    st.lists(patterns(deep=True), max_size=20),
    st.lists(deep_subjects, min_size=1, max_size=10),
)
def test_trie_match_equals_reference_on_deep_subjects(
    pats: list[str], subs: list[str]
) -> None:
    """Deep patterns and subjects (18 to 64 tokens) match as the reference says."""
    check_trie_against_reference(pats, subs)


@given(patterns(), subjects)
def test_subject_matches_equals_reference(pattern: str, subject: str) -> None:
    """The public helper agrees with the reference matcher."""
    assert subject_matches(pattern, subject) == reference_match(pattern, subject)


@given(patterns(), st.lists(subjects, max_size=30))
def test_the_cache_scan_finds_what_the_reference_matches(
    pattern: str, cached: list[str]
) -> None:
    """The scan that finds the cached subjects a new pattern affects."""
    routes = LabelledRoutes(64)
    for subject in cached:
        routes.lookup(subject)
    expected = [s for s in routes.cache if reference_match(pattern, s)]
    assert routes.table._affected(parse_pattern(pattern)) == expected


@given(st.lists(patterns(), min_size=1, max_size=30), st.data())
def test_remove_restores_and_prunes(pats: list[str], data: st.DataObject) -> None:
    """Removing in any order keeps matches right and ends with a bare root."""
    trie: SubjectTrie[int] = SubjectTrie()
    for index, pattern in enumerate(pats):
        trie.insert(parse_pattern(pattern), index)
    remaining = dict(enumerate(pats))
    order = data.draw(st.permutations(list(remaining)))
    probe = data.draw(subjects)
    for index in order:
        trie.remove(parse_pattern(remaining.pop(index)), index)
        expected = sorted(i for i, p in remaining.items() if reference_match(p, probe))
        assert sorted(trie.match(parse_subject(probe))) == expected
        assert len(trie) == len(remaining)
    assert trie.node_count() == 1


@given(patterns())
def test_pattern_round_trip(pattern: str) -> None:
    """Parsing a pattern and joining its tokens gives it back."""
    assert ".".join(parse_pattern(pattern)) == pattern


@pytest.mark.parametrize("cache_size", [0, 3, 1024], ids=["off", "tiny", "on"])
@given(data=st.data())
def test_cached_lookups_follow_every_change(
    cache_size: int, data: st.DataObject
) -> None:
    """Interleaved inserts, removes and cached lookups agree with the reference."""
    trie = LabelledRoutes(cache_size)
    live: dict[str, str] = {}
    for step in range(data.draw(st.integers(1, 80), label="steps")):
        value = str(step)
        op = data.draw(st.sampled_from(["insert", "remove", "lookup", "lookup"]))
        if op == "insert":
            pattern = data.draw(patterns(), label="pattern")
            trie.insert(parse_pattern(pattern), value)
            live[value] = pattern
        elif op == "remove" and live:
            victim = data.draw(st.sampled_from(sorted(live)), label="victim")
            trie.remove(parse_pattern(live.pop(victim)), victim)
        else:
            subject = data.draw(subjects, label="subject")
            found = trie.lookup(subject)
            expected = sorted(v for v, p in live.items() if reference_match(p, subject))
            assert sorted(found) == expected
        assert len(trie.cache) <= cache_size
        assert len(trie) == len(live)
