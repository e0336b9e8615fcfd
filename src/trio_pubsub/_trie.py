"""SubjectTrie: patterns stored by token, matched by walking a subject's tokens.

Each node has a map of literal children, at most one ``*`` child, the values whose
pattern ends at the node, and the values whose pattern ends with ``>`` right after
it. Matching a subject of n tokens visits at most the nodes on the paths that the
subject can take, never the list of patterns.

Invariants:

* A value is stored at exactly one place: the node its pattern leads to, in
  ``exact`` or in ``rest``. A pattern matches a subject along one path at most, so
  :meth:`SubjectTrie.match` never returns a value twice.
* No node but the root is empty: :meth:`SubjectTrie.remove` prunes on the way up.
* Values are kept in insertion order, so matching is deterministic.

A bounded match cache maps literal subjects to the tuple of values that match
them, as nats-server's Sublist does. It is kept exact: inserting or removing a
value updates only the entries it affects (one dict lookup for a literal pattern,
a scan of the cache for a wildcard one), and when the cache is full its oldest
quarter is evicted, so a stream of distinct subjects cannot grow memory.

The broker may set ``arrange``, which turns the values a subject matches into
what its cache entry holds (queue-group members gathered into one target);
values inserted or removed with ``regroup=True`` make the entries they affect be
matched and arranged again.

Pure and synchronous (no trio import), so that Hypothesis can compare it, with
the cache on and off, with a naive matcher.
"""

from __future__ import annotations

from itertools import islice
from typing import TYPE_CHECKING, Generic, TypeVar

from ._subject import ONE, REST, SEPARATOR, tokens_match

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

V = TypeVar("V")


class _Node(Generic[V]):
    # Every field stays None until it is needed: most nodes are leaves, and an
    # idle subscription's share of the trie is part of its memory cost.
    __slots__ = ("exact", "literal", "rest", "star")

    def __init__(self) -> None:
        self.literal: dict[str, _Node[V]] | None = None
        self.star: _Node[V] | None = None
        # dicts used as insertion-ordered sets
        self.exact: dict[V, None] | None = None
        self.rest: dict[V, None] | None = None

    def is_empty(self) -> bool:
        return not (self.literal or self.star or self.exact or self.rest)


class SubjectTrie(Generic[V]):
    """A set of ``(pattern tokens, value)`` entries, matched by subject tokens.

    Args:
        cache_size: How many subjects the match cache holds; 0 turns it off.
    """

    __slots__ = ("_cache_size", "_len", "_root", "arrange", "cache")

    def __init__(self, cache_size: int = 0) -> None:
        self._root: _Node[V] = _Node()
        self._len = 0
        self._cache_size = cache_size
        # Literal subject -> the values matching it. The broker reads it directly
        # on its hot path; only this class writes it. A plain dict, in insertion
        # order, evicted a quarter at a time: cheaper per miss than an
        # OrderedDict's linked list, and the deleted slots at its front are
        # skipped once per eviction, not once per miss.
        self.cache: dict[str, tuple[V, ...]] = {}
        # What lookup() makes of the values a subject matches before caching
        # them: None keeps them as they are. Values inserted or removed with
        # ``regroup=True`` make their cache entries be arranged again.
        self.arrange: Callable[[list[V]], tuple[V, ...]] | None = None

    def lookup(self, subject: str, tokens: tuple[str, ...]) -> tuple[V, ...]:
        """Match ``subject`` (parsed as ``tokens``) and remember the result."""
        found = self._entry(tokens)
        if self._cache_size:
            cache = self.cache
            if len(cache) >= self._cache_size:
                self._evict()
            cache[subject] = found
        return found

    def _evict(self) -> None:
        """Drop the oldest quarter of the cache (at least one entry)."""
        cache = self.cache
        for subject in list(islice(cache, max(1, self._cache_size // 4))):
            del cache[subject]

    def _entry(self, tokens: tuple[str, ...]) -> tuple[V, ...]:
        """What the cache holds for a subject: the matches, arranged if asked."""
        if self.arrange is None:
            return tuple(self.match(tokens))
        return self.arrange(self.match(tokens))

    def _cached_subjects(self, pattern: tuple[str, ...]) -> list[str] | None:
        """The cached subject a literal ``pattern`` names; None for a wildcard."""
        if ONE in pattern or REST in pattern:
            return None
        subject = SEPARATOR.join(pattern)
        return [subject] if subject in self.cache else []

    def _subjects_matching(self, pattern: tuple[str, ...]) -> list[str]:
        """The cached subjects a wildcard ``pattern`` matches (a scan).

        Two string tests that run in C (the literal tokens before the first
        wildcard, and the number of separators) rule out most subjects before
        the few left are split and matched token by token.
        """
        head: list[str] = []
        for token in pattern:
            if token in (ONE, REST):
                break
            head.append(token)
        prefix = SEPARATOR.join(head)
        if head and len(head) < len(pattern):
            prefix += SEPARATOR
        dots = len(pattern) - 1
        open_ended = pattern[-1] == REST
        return [
            subject
            for subject in self.cache
            if subject.startswith(prefix)
            and (
                subject.count(SEPARATOR) >= dots
                if open_ended
                else subject.count(SEPARATOR) == dots
            )
            and tokens_match(pattern, tuple(subject.split(SEPARATOR)))
        ]

    def _rearrange(self, subjects: list[str]) -> None:
        cache = self.cache
        for subject in subjects:
            cache[subject] = self._entry(tuple(subject.split(SEPARATOR)))

    def __len__(self) -> int:
        """Number of values stored."""
        return self._len

    def insert(
        self, pattern: tuple[str, ...], value: V, *, regroup: bool = False
    ) -> None:
        """Store ``value`` under the parsed ``pattern``.

        With ``regroup``, the cache entries it affects are matched and arranged
        again rather than extended by ``value``.

        Raises:
            ValueError: ``value`` is already stored under this pattern.
        """
        node = self._root
        for token in pattern[:-1]:
            node = self._child(node, token)
        if pattern[-1] == REST:
            if node.rest is None:
                node.rest = {}
            slot = node.rest
        else:
            leaf = self._child(node, pattern[-1])
            if leaf.exact is None:
                leaf.exact = {}
            slot = leaf.exact
        if value in slot:
            raise ValueError(f"{value!r} is already stored under {pattern!r}")
        slot[value] = None
        self._len += 1
        if self.cache:
            cache = self.cache
            affected = self._cached_subjects(pattern)
            if affected is None:
                affected = self._subjects_matching(pattern)
            if regroup:
                self._rearrange(affected)
            else:
                for subject in affected:
                    cache[subject] = (*cache[subject], value)

    @staticmethod
    def _child(node: _Node[V], token: str) -> _Node[V]:
        if token == ONE:
            if node.star is None:
                node.star = _Node()
            return node.star
        if node.literal is None:
            node.literal = {}
        child = node.literal.get(token)
        if child is None:
            child = node.literal[token] = _Node()
        return child

    def remove(
        self, pattern: tuple[str, ...], value: V, *, regroup: bool = False
    ) -> None:
        """Remove ``value`` stored under ``pattern`` and prune emptied nodes.

        With ``regroup``, as for :meth:`insert`.

        Raises:
            KeyError: ``value`` is not stored under this pattern.
        """
        path: list[tuple[_Node[V], str]] = []
        node: _Node[V] | None = self._root
        last = pattern[-1]
        walk = pattern[:-1] if last == REST else pattern
        for token in walk:
            assert node is not None
            path.append((node, token))
            if token == ONE:
                node = node.star
            else:
                node = node.literal.get(token) if node.literal else None
            if node is None:
                raise KeyError(value)
        assert node is not None
        if last == REST:
            if not node.rest:
                raise KeyError(value)
            del node.rest[value]  # KeyError when absent
            if not node.rest:
                node.rest = None
        else:
            if not node.exact:
                raise KeyError(value)
            del node.exact[value]  # KeyError when absent
            if not node.exact:
                node.exact = None
        self._len -= 1
        if self.cache:
            cache = self.cache
            affected = self._cached_subjects(pattern)
            if regroup:
                if affected is None:
                    affected = self._subjects_matching(pattern)
                self._rearrange(affected)
            else:
                if affected is None:
                    affected = [s for s, found in cache.items() if value in found]
                for subject in affected:
                    cache[subject] = tuple(v for v in cache[subject] if v is not value)
        for parent, token in reversed(path):
            if not node.is_empty():
                break
            if token == ONE:
                parent.star = None
            else:
                assert parent.literal is not None
                del parent.literal[token]
                if not parent.literal:
                    parent.literal = None
            node = parent

    def match(self, subject: tuple[str, ...]) -> list[V]:
        """Return the values whose pattern matches the parsed literal ``subject``."""
        found: list[V] = []
        _walk(self._root, subject, 0, len(subject), found)
        return found

    def values(self) -> Iterator[V]:
        """Iterate over every stored value."""
        for node in self._nodes():
            yield from node.exact or ()
            yield from node.rest or ()

    def node_count(self) -> int:
        """Number of nodes, the root included (1 when empty and fully pruned)."""
        return sum(1 for _ in self._nodes())

    def _nodes(self) -> Iterator[_Node[V]]:
        stack = [self._root]
        while stack:
            node = stack.pop()
            yield node
            if node.literal:
                stack.extend(node.literal.values())
            if node.star is not None:
                stack.append(node.star)


def _walk(
    node: _Node[V], subject: tuple[str, ...], index: int, end: int, found: list[V]
) -> None:
    """Collect into ``found`` what matches ``subject[index:]`` below ``node``.

    Follows the chain of literal children in a loop and recurses only into
    ``*`` children, so the common all-literal path allocates nothing.
    """
    while index < end:
        if node.rest:
            # '>' needs one or more tokens: subject[index] is at least that.
            found.extend(node.rest)
        if node.star is not None:
            _walk(node.star, subject, index + 1, end, found)
        if not node.literal:
            return
        child = node.literal.get(subject[index])
        if child is None:
            return
        node = child
        index += 1
    if node.exact:
        found.extend(node.exact)
