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
* Values are kept in insertion order, and :meth:`SubjectTrie.match` visits the
  ``*`` branch of a node before its literal branch, so matching is deterministic.

Every walk is a loop with an explicit stack, never recursion: subjects and
patterns have no length limit, and 10,000 tokens must work as 3 do.

Pure and synchronous (no trio, no cache, no knowledge of what the values are),
so that Hypothesis can compare it with a naive matcher. Routing, caching and
queue groups live in ``_routes.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

from ._subject import ONE, REST

if TYPE_CHECKING:
    from collections.abc import Iterator

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
    """A set of ``(pattern tokens, value)`` entries, matched by subject tokens."""

    __slots__ = ("_len", "_root")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._len = 0

    def __len__(self) -> int:
        """Number of ``(pattern, value)`` entries stored."""
        return self._len

    def insert(self, pattern: tuple[str, ...], value: V) -> None:
        """Store ``value`` under the parsed ``pattern``.

        Raises:
            ValueError: ``value`` is already stored under this pattern (and
                nothing changed).
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

    def remove(self, pattern: tuple[str, ...], value: V) -> None:
        """Remove ``value`` stored under ``pattern`` and prune emptied nodes.

        Raises:
            KeyError: ``value`` is not stored under this pattern (and nothing
                changed).
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
            if not node.rest or value not in node.rest:
                raise KeyError(value)
            del node.rest[value]
            if not node.rest:
                node.rest = None
        else:
            if not node.exact or value not in node.exact:
                raise KeyError(value)
            del node.exact[value]
            if not node.exact:
                node.exact = None
        self._len -= 1
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
        """Return the values whose pattern matches the parsed literal ``subject``.

        Follows the chain of literal children in a loop; a ``*`` child is
        walked first and the literal branch it leaves is kept on a stack, so
        the common all-literal path allocates little beyond the result.
        """
        found: list[V] = []
        end = len(subject)
        stack: list[tuple[_Node[V], int]] = []
        node = self._root
        index = 0
        while True:
            while index < end:
                if node.rest:
                    # '>' needs one or more tokens: subject[index] is at least that.
                    found.extend(node.rest)
                literal = node.literal
                child = literal.get(subject[index]) if literal else None
                index += 1
                if node.star is not None:
                    if child is not None:
                        stack.append((child, index))
                    node = node.star
                elif child is not None:
                    node = child
                else:
                    break
            else:
                if node.exact:
                    found.extend(node.exact)
            if not stack:
                return found
            node, index = stack.pop()

    def values(self) -> Iterator[V]:
        """Iterate over every stored value (once per pattern it is stored under)."""
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
