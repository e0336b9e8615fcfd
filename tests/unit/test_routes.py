"""Routing through the RouteTable: the trie, and the match cache kept exact.

The trie's storage by token, matching and pruning, and the cache over every
change.

Every test runs with the cache off, tiny (evicting all the time) and on.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from trio_pubsub._subject import parse_pattern, parse_subject

from ..helpers import LabelledRoutes

Make = Callable[..., LabelledRoutes]


@pytest.fixture
def make(cache_size: int) -> Make:
    def factory(*entries: tuple[str, str]) -> LabelledRoutes:
        trie = LabelledRoutes(cache_size)
        for pattern, value in entries:
            trie.insert(parse_pattern(pattern), value)
        return trie

    return factory


def match(trie: LabelledRoutes, subject: str) -> list[str]:
    """Look up through the cache when it has the subject, as the broker does."""
    cached = trie.cache.get(subject)
    if cached is not None:
        fresh = LabelledRoutes.labels(trie.table._entry(parse_subject(subject)))
        assert sorted(cached) == sorted(fresh)
        return list(cached)
    return trie.lookup(subject)


def test_match_literal_star_and_rest(make: Make) -> None:
    """Each kind of token finds the values it should."""
    trie = make(
        ("a.b", "exact"),
        ("a.*", "star"),
        ("a.>", "rest"),
        (">", "all"),
        ("*.b", "star-b"),
        ("a.b.c", "deeper"),
    )
    for _ in range(2):  # the second round is served from the cache, if on
        assert sorted(match(trie, "a.b")) == ["all", "exact", "rest", "star", "star-b"]
        assert sorted(match(trie, "a.b.c")) == ["all", "deeper", "rest"]
        assert match(trie, "a") == ["all"]
        assert match(trie, "z.z.z") == ["all"]
        assert match(trie, "x.b") == ["all", "star-b"]


def test_rest_needs_at_least_one_token(make: Make) -> None:
    """'a.>' does not match 'a' itself."""
    trie = make(("a.>", "rest"))
    assert match(trie, "a") == []
    assert match(trie, "a.b") == ["rest"]


def test_same_pattern_many_values_in_order(make: Make) -> None:
    """Values sharing a pattern come back in the order they were inserted."""
    trie = make(*[("a.*", f"v{i}") for i in range(5)])
    assert match(trie, "a.x") == [f"v{i}" for i in range(5)]
    trie.insert(parse_pattern("a.*"), "v5")
    assert match(trie, "a.x") == [f"v{i}" for i in range(6)]
    assert len(trie) == 6


def test_insert_twice_is_an_error(make: Make) -> None:
    """The same value under the same pattern is refused, and nothing changes."""
    trie = make(("a.>", "v"))
    match(trie, "a.b")
    with pytest.raises(ValueError, match="already stored"):
        trie.insert(parse_pattern("a.>"), "v")
    assert len(trie) == 1
    assert match(trie, "a.b") == ["v"]


@pytest.mark.parametrize("pattern", ["a.b", "a.>", "a.*", "*.b", ">", "*", "x.y.z"])
def test_remove_prunes_to_root(make: Make, pattern: str) -> None:
    """Removing the only value leaves the trie with its root alone."""
    trie = make((pattern, "v"))
    assert trie.node_count() > 1 or pattern == ">"
    trie.remove(parse_pattern(pattern), "v")
    assert len(trie) == 0
    assert trie.node_count() == 1
    assert list(trie.values()) == []


def test_remove_keeps_shared_nodes(make: Make) -> None:
    """Pruning stops at a node still used by another pattern."""
    trie = make(("a.b.c", "deep"), ("a.b", "mid"), ("a.*.c", "star"))
    assert sorted(match(trie, "a.b.c")) == ["deep", "star"]
    trie.remove(parse_pattern("a.b.c"), "deep")
    assert match(trie, "a.b") == ["mid"]
    assert match(trie, "a.b.c") == ["star"]
    trie.remove(parse_pattern("a.b"), "mid")
    trie.remove(parse_pattern("a.*.c"), "star")
    assert trie.node_count() == 1
    assert match(trie, "a.b.c") == []


@pytest.mark.parametrize(
    ("pattern", "value"),
    [("a.b", "other"), ("q.*", "v"), ("a.>", "v"), ("a.b.c", "v"), ("a", "v")],
)
def test_remove_missing_raises_key_error(make: Make, pattern: str, value: str) -> None:
    """Removing what is not there is a KeyError and changes nothing."""
    trie = make(("a.b", "v"))
    with pytest.raises(KeyError):
        trie.remove(parse_pattern(pattern), value)
    assert match(trie, "a.b") == ["v"]
    assert len(trie) == 1


def test_values_lists_everything(make: Make) -> None:
    """values() yields every stored value once."""
    entries = [("a.b", "1"), ("a.*", "2"), ("a.>", "3"), (">", "4"), ("*.*.c", "5")]
    trie = make(*entries)
    assert sorted(trie.values()) == ["1", "2", "3", "4", "5"]


def test_cache_entries_follow_inserts_and_removes(make: Make, cache_size: int) -> None:
    """Cached subjects see values inserted and removed after they were cached."""
    trie = make(("a.b", "literal"))
    subjects = ["a.b", "a.c", "x.y"]
    for subject in subjects:
        match(trie, subject)
    cached_before = set(trie.cache)
    trie.insert(parse_pattern("a.*"), "star")
    trie.insert(parse_pattern("a.b"), "literal-2")
    trie.insert(parse_pattern(">"), "all")
    assert set(trie.cache) == cached_before  # updated in place, not flushed
    assert sorted(match(trie, "a.b")) == ["all", "literal", "literal-2", "star"]
    assert sorted(match(trie, "a.c")) == ["all", "star"]
    assert match(trie, "x.y") == ["all"]
    trie.remove(parse_pattern("a.*"), "star")
    trie.remove(parse_pattern("a.b"), "literal")
    assert sorted(match(trie, "a.b")) == ["all", "literal-2"]
    assert match(trie, "a.c") == ["all"]
    assert len(trie.cache) <= cache_size


def test_cache_is_bounded(make: Make, cache_size: int) -> None:
    """A stream of distinct subjects never grows the cache past its size."""
    trie = make(("s.*", "v"))
    for i in range(3000):
        assert match(trie, f"s.{i}") == ["v"]
        assert len(trie.cache) <= cache_size
    if cache_size:
        # the newest subjects are the ones kept
        assert f"s.{2999}" in trie.cache
        assert "s.0" not in trie.cache


@pytest.mark.parametrize(("size", "evicted"), [(1, 1), (3, 1), (8, 2), (10, 2)])
def test_a_full_cache_evicts_its_oldest_quarter(size: int, evicted: int) -> None:
    """The oldest quarter (at least one) makes way; the rest stay, in order."""
    trie = LabelledRoutes(size)
    trie.insert(parse_pattern("s.*"), "v")
    first = [f"s.{i}" for i in range(size)]
    for subject in first:
        match(trie, subject)
    assert list(trie.cache) == first  # full, nothing evicted yet
    match(trie, "s.new")
    assert list(trie.cache) == [*first[evicted:], "s.new"]
    assert trie.cache["s.new"] == ["v"]
