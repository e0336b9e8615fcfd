"""SubjectTrie: storage by token, matching, pruning."""

from __future__ import annotations

import pytest

from trio_pubsub._subject import parse_pattern, parse_subject
from trio_pubsub._trie import SubjectTrie


def make(*entries: tuple[str, str]) -> SubjectTrie[str]:
    trie: SubjectTrie[str] = SubjectTrie()
    for pattern, value in entries:
        trie.insert(parse_pattern(pattern), value)
    return trie


def match(trie: SubjectTrie[str], subject: str) -> list[str]:
    return trie.match(parse_subject(subject))


def test_match_literal_star_and_rest() -> None:
    """Each kind of token finds the values it should, in insertion order."""
    trie = make(
        ("a.b", "exact"),
        ("a.*", "star"),
        ("a.>", "rest"),
        (">", "all"),
        ("*.b", "star-b"),
        ("a.b.c", "deeper"),
    )
    assert sorted(match(trie, "a.b")) == ["all", "exact", "rest", "star", "star-b"]
    assert sorted(match(trie, "a.b.c")) == ["all", "deeper", "rest"]
    assert match(trie, "a") == ["all"]
    assert match(trie, "z.z.z") == ["all"]
    assert match(trie, "x.b") == ["all", "star-b"]


def test_rest_needs_at_least_one_token() -> None:
    """'a.>' does not match 'a' itself."""
    trie = make(("a.>", "rest"))
    assert match(trie, "a") == []
    assert match(trie, "a.b") == ["rest"]


def test_same_pattern_many_values_in_order() -> None:
    """Values sharing a pattern come back in the order they were inserted."""
    trie = make(*[("a.*", f"v{i}") for i in range(5)])
    assert match(trie, "a.x") == [f"v{i}" for i in range(5)]
    assert len(trie) == 5


def test_insert_twice_is_an_error() -> None:
    """The same value under the same pattern is refused, and nothing changes."""
    trie = make(("a.>", "v"))
    with pytest.raises(ValueError, match="already stored"):
        trie.insert(parse_pattern("a.>"), "v")
    assert len(trie) == 1


@pytest.mark.parametrize("pattern", ["a.b", "a.>", "a.*", "*.b", ">", "*", "x.y.z"])
def test_remove_prunes_to_root(pattern: str) -> None:
    """Removing the only value leaves the trie with its root alone."""
    trie = make((pattern, "v"))
    assert trie.node_count() > 1 or pattern == ">"
    trie.remove(parse_pattern(pattern), "v")
    assert len(trie) == 0
    assert trie.node_count() == 1
    assert list(trie.values()) == []


def test_remove_keeps_shared_nodes() -> None:
    """Pruning stops at a node still used by another pattern."""
    trie = make(("a.b.c", "deep"), ("a.b", "mid"), ("a.*.c", "star"))
    trie.remove(parse_pattern("a.b.c"), "deep")
    assert match(trie, "a.b") == ["mid"]
    assert match(trie, "a.b.c") == ["star"]
    trie.remove(parse_pattern("a.b"), "mid")
    trie.remove(parse_pattern("a.*.c"), "star")
    assert trie.node_count() == 1


@pytest.mark.parametrize(
    ("pattern", "value"), [("a.b", "other"), ("q.*", "v"), ("a.>", "v"), ("a.b.c", "v")]
)
def test_remove_missing_raises_key_error(pattern: str, value: str) -> None:
    """Removing what is not there is a KeyError and changes nothing."""
    trie = make(("a.b", "v"))
    with pytest.raises(KeyError):
        trie.remove(parse_pattern(pattern), value)
    assert match(trie, "a.b") == ["v"]
    assert len(trie) == 1


def test_values_lists_everything() -> None:
    """values() yields every stored value once."""
    entries = [("a.b", "1"), ("a.*", "2"), ("a.>", "3"), (">", "4"), ("*.*.c", "5")]
    trie = make(*entries)
    assert sorted(trie.values()) == ["1", "2", "3", "4", "5"]
