"""RouteTable: the broker's only view of routing.

It owns the subscription trie, the exact match cache and its bounds, and the
arrangement of what a subject reaches into the targets a publish offers a
message to: the members of one queue group gathered into one ``GroupTarget``
(placed where the first of them was), and an inbox listening on several
patterns (a NATS bridge's export) appearing once. Swapping the matcher is a
change to this module alone.

The match cache maps literal subjects to their targets, as nats-server's
Sublist does. The pipeline reads ``cache`` directly on its hot path (one dict
lookup per publish) and never writes it. It is kept exact: registering or
removing an inbox updates only the entries it affects (one lookup for a
literal pattern, a scan of the cache for a wildcard one). It is bounded twice:
in entries (``cache_size``) and in bytes (``cache_bytes``, what its subjects and
target tuples take, counted a little above what ``sys.getsizeof`` says,
without its cost), so that neither a
stream of distinct subjects nor a few huge ones can grow memory. An entry
larger than an eighth of the byte bound is not cached at all. When either bound
is reached, the oldest quarter of the entries makes way (more, until the new
one fits).

Synchronous, and every method leaves the table whole: :meth:`RouteTable.add`
either registers an inbox completely or raises with nothing changed.
"""

from __future__ import annotations

import typing
from itertools import islice
from typing import Generic, TypeVar

from ._groups import GroupTarget, _Group
from ._policy import OverflowPolicy
from ._subject import ONE, REST, SEPARATOR, tokens_match
from ._trie import SubjectTrie

if typing.TYPE_CHECKING:
    from ._groups import Routed
    from ._inbox import _Inbox

T = TypeVar("T")

# The bytes of a cache entry are counted as 1 per character of an ASCII subject
# (4 of any other: the most a str takes), 8 per target, and this for the str's
# and the tuple's headers (49 and 40 bytes as sys.getsizeof counts them) and
# the dict's slot: a little more than the entry takes.
_ENTRY_OVERHEAD = 120


class RouteTable(Generic[T]):
    """Which targets a subject reaches, for the inboxes registered now.

    Args:
        cache_size: How many subjects the match cache holds; 0 turns it off.
        cache_bytes: How many bytes its subjects and target tuples may take.
    """

    __slots__ = (
        "_arranged",
        "_budget",
        "_bytes",
        "_largest",
        "_limit",
        "_trie",
        "blocking",
        "cache",
        "evictions",
        "groups",
        "membership",
        "registered",
    )

    def __init__(self, cache_size: int, cache_bytes: int) -> None:
        self._trie: SubjectTrie[_Inbox[T]] = SubjectTrie()
        self._limit = cache_size if cache_bytes else 0
        self._budget = cache_bytes
        self._largest = cache_bytes // 8  # a larger entry is not cached
        self._bytes = 0  # what the cache's entries take now
        self._arranged = 0  # of those, queue members and multi-pattern inboxes
        self.cache: dict[str, tuple[Routed[T], ...]] = {}
        """Literal subject -> its targets. Read by the broker, written here only."""
        self.evictions = 0
        """Entries the cache has let go to make room, so far."""
        self.blocking = 0
        """How many registered inboxes have the ``BLOCK`` policy."""
        self.groups: dict[str, _Group] = {}
        """Queue groups with members now, by name."""
        self.membership: dict[_Inbox[T], _Group] = {}
        """The group of each registered queue member."""
        self.registered: dict[_Inbox[T], None] = {}
        """Every inbox registered now, in the order they were added."""

    def __len__(self) -> int:
        """Number of inboxes registered."""
        return len(self.registered)

    @property
    def cache_bytes(self) -> int:
        """Bytes the match cache's subjects and target tuples take now."""
        return self._bytes

    def node_count(self) -> int:
        """Nodes in the trie, the root included (1 when nothing is registered)."""
        return self._trie.node_count()

    # -- lookups ----------------------------------------------------------------

    def targets(self, subject: str, tokens: tuple[str, ...]) -> tuple[Routed[T], ...]:
        """The targets of ``subject`` (parsed as ``tokens``), cached if it fits.

        The broker calls this on a cache miss.
        """
        # _entry(), inlined for the common case: nothing to arrange
        matched = self._trie.match(tokens)
        found = self._arrange(matched) if self._arranged else tuple(matched)
        if self._limit:
            weight = (len(subject) if subject.isascii() else 4 * len(subject)) + (
                8 * len(found) + _ENTRY_OVERHEAD
            )
            if weight <= self._largest:
                cache = self.cache
                self._bytes += weight
                if len(cache) >= self._limit or self._bytes > self._budget:
                    self._evict()
                cache[subject] = found
        return found

    def _entry(self, tokens: tuple[str, ...]) -> tuple[Routed[T], ...]:
        """The targets of a parsed subject, arranged when anything needs it."""
        matched = self._trie.match(tokens)
        return self._arrange(matched) if self._arranged else tuple(matched)

    def _arrange(self, matched: list[_Inbox[T]]) -> tuple[Routed[T], ...]:
        """Gather queue members into GroupTargets; list multi-pattern inboxes once."""
        slots: list[Routed[T] | _Group] = []  # a group where its target goes
        members: dict[_Group, list[_Inbox[T]]] = {}
        membership = self.membership
        for inbox in matched:
            group = membership.get(inbox)
            if group is None:
                if not inbox.also or inbox not in slots:
                    slots.append(inbox)
            elif group in members:
                members[group].append(inbox)
            else:
                members[group] = [inbox]
                slots.append(group)
        return tuple(
            GroupTarget(slot, frozenset(members[slot]))
            if isinstance(slot, _Group)
            else slot
            for slot in slots
        )

    def _evict(self) -> None:
        """Drop the oldest quarter of the cache, and more, until both bounds hold.

        The count bound leaves room for one more entry (whose bytes the caller
        has counted already).
        """
        cache = self.cache
        while cache:
            freed = 0
            oldest = list(islice(cache, max(1, len(cache) // 4)))
            self.evictions += len(oldest)
            for subject in oldest:
                targets = cache.pop(subject)
                freed += len(subject) if subject.isascii() else 4 * len(subject)
                freed += 8 * len(targets)
            self._bytes -= freed + _ENTRY_OVERHEAD * len(oldest)
            if len(cache) < self._limit and self._bytes <= self._budget:
                return

    def _store(self, subject: str, targets: tuple[Routed[T], ...]) -> None:
        """Replace the cached targets of ``subject``, keeping the byte count."""
        cache = self.cache
        self._bytes += 8 * (len(targets) - len(cache[subject]))
        cache[subject] = targets

    def _affected(self, pattern: tuple[str, ...]) -> list[str]:
        """The cached subjects ``pattern`` matches."""
        cache = self.cache
        if ONE not in pattern and REST not in pattern:
            subject = SEPARATOR.join(pattern)
            return [subject] if subject in cache else []
        # Two string tests that run in C (the literal tokens before the first
        # wildcard, and the number of separators) rule out most subjects before
        # the few left are split and matched token by token.
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
            for subject in cache
            if subject.startswith(prefix)
            and (
                subject.count(SEPARATOR) >= dots
                if open_ended
                else subject.count(SEPARATOR) == dots
            )
            and tokens_match(pattern, tuple(subject.split(SEPARATOR)))
        ]

    def _recompute(self, subjects: list[str]) -> None:
        for subject in subjects:
            self._store(subject, self._entry(tuple(subject.split(SEPARATOR))))

    # -- registration -----------------------------------------------------------

    def add(self, inbox: _Inbox[T]) -> None:
        """Register ``inbox``: route what its patterns match to it from now on.

        All or nothing: if anything raises, nothing stays registered.
        """
        patterns = (inbox.tokens, *inbox.also)
        inserted: list[tuple[str, ...]] = []
        group: _Group | None = None
        try:
            if inbox.queue is not None:
                group = self.groups.get(inbox.queue)
                if group is None:
                    group = self.groups[inbox.queue] = _Group(inbox.queue)
                group.join(inbox)
                self.membership[inbox] = group
            for tokens in patterns:
                self._trie.insert(tokens, inbox)
                inserted.append(tokens)
        except BaseException:
            for tokens in inserted:
                self._trie.remove(tokens, inbox)
            if group is not None:
                self._leave(group, inbox)
            raise
        self.registered[inbox] = None
        self.blocking += inbox.policy is OverflowPolicy.BLOCK
        arranged = group is not None or bool(inbox.also)
        self._arranged += arranged
        if self.cache:
            for tokens in patterns:
                affected = self._affected(tokens)
                if arranged or self._arranged:
                    self._recompute(affected)
                else:
                    for subject in affected:
                        self._store(subject, (*self.cache[subject], inbox))
            if self._bytes > self._budget:
                self._evict()

    def discard(self, inbox: _Inbox[T]) -> None:
        """Route nothing more to ``inbox`` (registered now)."""
        patterns = (inbox.tokens, *inbox.also)
        for tokens in patterns:
            self._trie.remove(tokens, inbox)
        group = self.membership.get(inbox)
        if group is not None:
            self._leave(group, inbox)
        del self.registered[inbox]
        self.blocking -= inbox.policy is OverflowPolicy.BLOCK
        arranged = group is not None or bool(inbox.also)
        self._arranged -= arranged
        cache = self.cache
        if not cache:
            return
        if arranged or self._arranged:
            for tokens in patterns:
                self._recompute(self._affected(tokens))
            return
        pattern = inbox.tokens
        if ONE in pattern or REST in pattern:
            affected = [s for s, found in cache.items() if inbox in found]
        else:
            affected = self._affected(pattern)
        for subject in affected:
            self._store(subject, tuple(t for t in cache[subject] if t is not inbox))

    def _leave(self, group: _Group, inbox: _Inbox[T]) -> None:
        self.membership.pop(inbox, None)
        group.leave(inbox)
        if not group.order:
            del self.groups[group.name]

    def close(self) -> list[_Inbox[T]]:
        """Unregister every inbox and return them; route and cache nothing more."""
        inboxes = list(dict.fromkeys(self._trie.values()))
        self._trie = SubjectTrie()
        self.cache.clear()
        self._limit = self._bytes = self._arranged = 0
        self.registered.clear()
        self.blocking = 0
        self.groups.clear()
        self.membership.clear()
        return inboxes
