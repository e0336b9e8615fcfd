"""Retained messages: the last message of each subject, kept for late subscribers.

A bounded store, least recently updated first: an ``OrderedDict`` from subject
to message, for eviction in O(1), beside a trie of the stored subjects' tokens,
so that the retained messages a pattern matches are found by walking the
pattern over the stored subjects: a literal token follows one child, ``*``
every child, ``>`` every subject below. Its cost grows with what the pattern
matches, not with the number of subjects stored.

Pure and synchronous, like the subscription trie, and iterative: every walk
is a loop over an explicit stack, since subjects have no length limit.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

from ._subject import ONE, REST, SEPARATOR

M = TypeVar("M")


class _Node(Generic[M]):
    __slots__ = ("children", "subject")

    def __init__(self) -> None:
        self.children: dict[str, _Node[M]] | None = None
        self.subject: str | None = None  # set where a stored subject ends


class RetainedStore(Generic[M]):
    """The last message of up to ``limit`` subjects.

    Args:
        limit: How many subjects it holds; beyond it, the least recently updated
            one is evicted. 0 keeps nothing.
    """

    __slots__ = ("_by_subject", "_limit", "_root", "evicted")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._by_subject: OrderedDict[str, M] = OrderedDict()
        self._root: _Node[M] = _Node()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._by_subject)

    def put(self, subject: str, message: M) -> None:
        """Store ``message`` as the last one of the valid literal ``subject``."""
        stored = self._by_subject
        if subject in stored:
            stored[subject] = message
            stored.move_to_end(subject)
            return
        if self._limit == 0:
            self.evicted += 1
            return
        if len(stored) >= self._limit:
            oldest, _ = stored.popitem(last=False)
            self._unlink(oldest)
            self.evicted += 1
        stored[subject] = message
        node = self._root
        for token in subject.split(SEPARATOR):
            if node.children is None:
                node.children = {}
            child = node.children.get(token)
            if child is None:
                child = node.children[token] = _Node()
            node = child
        node.subject = subject

    def discard(self, subject: str) -> bool:
        """Drop the message of the valid literal ``subject``; say if there was one."""
        if self._by_subject.pop(subject, None) is None:
            return False
        self._unlink(subject)
        return True

    def _unlink(self, subject: str) -> None:
        """Remove a stored subject's end mark and prune the nodes left empty."""
        path: list[tuple[_Node[M], str]] = []
        node = self._root
        for token in subject.split(SEPARATOR):
            assert node.children is not None
            path.append((node, token))
            node = node.children[token]
        node.subject = None
        for parent, token in reversed(path):
            if node.children or node.subject is not None:
                break
            assert parent.children is not None
            del parent.children[token]
            if not parent.children:
                parent.children = None
            node = parent

    def matching(self, pattern: tuple[str, ...]) -> list[M]:
        """The messages of the stored subjects ``pattern`` matches, by subject.

        A loop over an explicit stack, not recursion: patterns have no length
        limit.
        """
        subjects: list[str] = []
        last = len(pattern)
        stack = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            if index == last:
                if node.subject is not None:
                    subjects.append(node.subject)
                continue
            children = node.children
            if not children:
                continue
            token = pattern[index]
            if token == REST:
                _below(node, subjects)
            elif token == ONE:
                stack.extend((child, index + 1) for child in children.values())
            else:
                child = children.get(token)
                if child is not None:
                    stack.append((child, index + 1))
        subjects.sort()
        stored = self._by_subject
        return [stored[subject] for subject in subjects]

    def node_count(self) -> int:
        """Nodes in the subject trie, the root included (1 when empty)."""
        count = 0
        stack = [self._root]
        while stack:
            node = stack.pop()
            count += 1
            if node.children:
                stack.extend(node.children.values())
        return count


def _below(node: _Node[M], out: list[str]) -> None:
    """Add to ``out`` every subject strictly below ``node`` (what ``>`` matches)."""
    assert node.children is not None
    stack = list(node.children.values())
    while stack:
        below = stack.pop()
        if below.subject is not None:
            out.append(below.subject)
        if below.children:
            stack.extend(below.children.values())
