"""Broker: publish, publish_nowait, subscribe and aclose, wiring the rest together.

Publishing is snapshot-then-deliver: the trie is matched once, synchronously,
and the message is then offered to each inbox of that snapshot. Every inbox with
room, or whose policy does not wait, gets it at once; only then does ``publish``
wait, in snapshot order, for the ``BLOCK`` inboxes that were full. Inboxes that
leave meanwhile are skipped (``_Inbox.offer`` and ``_Inbox.put`` check their
state); inboxes that enter meanwhile are not in the snapshot.

No checkpoint lies between validating a call and changing state, so a rejected
call leaves the broker as it was.
"""

from __future__ import annotations

import contextlib
import functools
import typing

# Runtime imports, so that the API reference can resolve the annotations.
from collections.abc import Mapping, Sequence  # noqa: TC003
from contextlib import AbstractAsyncContextManager
from typing import Generic, TypeVar

import trio

from ._errors import BrokerClosedError
from ._message import Message, build_message, make_message
from ._policy import OverflowPolicy
from ._queue import GroupTarget, Target, _Group
from ._retained import RetainedStore
from ._stats import BrokerStatistics
from ._subject import SEPARATOR, parse_pattern, parse_queue, parse_subject
from ._subscription import Subscription, _Inbox, _State, _Tally
from ._trie import SubjectTrie

if typing.TYPE_CHECKING:
    from types import TracebackType

T = TypeVar("T")

DEFAULT_MAX_BUFFER_SIZE: typing.Final = 64
DEFAULT_POLICY: typing.Final = OverflowPolicy.DROP_NEWEST
DEFAULT_DISCONNECT_AFTER: typing.Final = 1
DEFAULT_MATCH_CACHE_SIZE: typing.Final = 8192
DEFAULT_MAX_RETAINED: typing.Final = 10_000


def _check_count(name: str, value: object, *, minimum: int = 1) -> int:
    # bool is an int, but True as a buffer size is always a mistake.
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(
            f"{name} must be an int >= {minimum}, not {type(value).__name__}: {value!r}"
        )
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_policy(value: object) -> OverflowPolicy:
    if not isinstance(value, OverflowPolicy):
        raise TypeError(
            f"policy must be an OverflowPolicy member, not {type(value).__name__}: "
            f"{value!r}"
        )
    return value


@typing.final
class Broker(Generic[T]):
    """An in-process publish/subscribe broker for messages of type ``T``.

    ``Broker(OrderEvent)`` is a ``Broker[OrderEvent]`` that also checks at
    publish time that each payload is an ``OrderEvent``; ``Broker[OrderEvent]()``
    has the same static type and no runtime check.

    Args:
        message_type: If given, every payload must be an instance of it
            (``TypeError`` otherwise).
        max_buffer_size: Default buffer capacity of a subscription (int >= 1).
        policy: Default :class:`OverflowPolicy` of a subscription.
        disconnect_after: Default number of consecutive drops after which a
            ``DISCONNECT`` subscription is cut off (int >= 1).
        match_cache_size: How many subjects the match cache remembers at most
            (int >= 0; 0 turns it off). A cached subject is routed with one dict
            lookup; when the cache is full, its oldest quarter makes way.
        max_retained: How many subjects' retained messages it keeps (int >= 0;
            see ``publish(..., retain=True)``); beyond it, the least recently
            updated subject's message is evicted and counted in
            :meth:`statistics` as ``retained_evicted``.

    Raises:
        TypeError: ``message_type`` is not a class, or an option has the wrong type.
        ValueError: an option is out of range.

    The broker is bound to no trio run: create it anywhere, use it from tasks of
    one trio run at a time. It is also an async context manager that closes it.
    :meth:`publish_from_thread` reaches it from other threads, in the trio run
    it was created in, or else the run it was last used in asynchronously.
    """

    __slots__ = (
        "__weakref__",
        "_blocking",
        "_cache_hits",
        "_cache_misses",
        "_closed",
        "_disconnect_after",
        "_extra_entries",
        "_groups",
        "_max_buffer_size",
        "_message_type",
        "_policy",
        "_published",
        "_retained",
        "_tally",
        "_token",
        "_trie",
    )

    def __init__(
        self,
        message_type: type[T] | None = None,
        /,
        *,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
        policy: OverflowPolicy = DEFAULT_POLICY,
        disconnect_after: int = DEFAULT_DISCONNECT_AFTER,
        match_cache_size: int = DEFAULT_MATCH_CACHE_SIZE,
        max_retained: int = DEFAULT_MAX_RETAINED,
    ) -> None:
        if message_type is not None and not isinstance(message_type, type):
            raise TypeError(
                f"message_type must be a class usable with isinstance(), "
                f"not {message_type!r}"
            )
        self._message_type = message_type
        self._max_buffer_size = _check_count("max_buffer_size", max_buffer_size)
        self._policy = _check_policy(policy)
        self._disconnect_after = _check_count("disconnect_after", disconnect_after)
        self._trie: SubjectTrie[Target[T]] = SubjectTrie(
            _check_count("match_cache_size", match_cache_size, minimum=0)
        )
        self._groups: dict[str, _Group] = {}  # queue groups with members now
        self._retained: RetainedStore[Message[T]] = RetainedStore(
            _check_count("max_retained", max_retained, minimum=0)
        )
        # The trio run to reach from other threads (see _learn_run).
        self._token: trio.lowlevel.TrioToken | None = None
        self._learn_run()
        self._tally = _Tally(detach=self._detach)
        self._published = 0
        self._cache_hits = 0
        self._cache_misses = 0
        self._blocking = 0  # BLOCK subscriptions registered now
        # Trie entries beyond one per subscription (inboxes on several patterns).
        self._extra_entries = 0
        self._closed = False

    def __repr__(self) -> str:
        kind = "" if self._message_type is None else self._message_type.__qualname__
        state = "closed" if self._closed else "open"
        return (
            f"<trio_pubsub.Broker[{kind}] {state}, "
            f"{len(self._trie)} subscriptions, {self._published} published>"
        )

    # -- subscribing ----------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        *,
        queue: str | None = None,
        max_buffer_size: int | None = None,
        policy: OverflowPolicy | None = None,
        disconnect_after: int | None = None,
    ) -> AbstractAsyncContextManager[Subscription[T]]:
        """Listen on ``pattern`` for the body of an ``async with`` block.

        ``async with broker.subscribe("orders.>") as sub:`` registers the
        subscription on entry and removes it before control leaves the block,
        whatever the exit (normal, exception, cancellation); its pending messages
        are then discarded and counted as dropped. Messages published after entry
        are routed to it.

        Args:
            pattern: A subject in which ``*`` matches one token and a final ``>``
                one or more.
            queue: The name of a queue group to join: each message goes to one
                member of the group (see :doc:`/how-to/distribute-work`), not
                to all. A non-empty ``str`` without whitespace; ``None``: no group.
            max_buffer_size: Buffer capacity (int >= 1); ``None``: the broker's.
            policy: What a full buffer does; ``None``: the broker's.
            disconnect_after: Consecutive drops that cut a ``DISCONNECT``
                subscription off (int >= 1); ``None``: the broker's.

        Returns:
            An async context manager yielding the :class:`Subscription`. Entering
            it is a trio checkpoint, taken before registering: a cancelled entry
            leaves nothing behind. It may be entered once.

        Raises:
            InvalidSubjectError: ``pattern`` breaks the subject grammar.
            TypeError: ``pattern`` is not a ``str`` or an option has the wrong type.
            ValueError: an option is out of range, or ``queue`` is empty or
                contains whitespace.
            BrokerClosedError: the broker is closed (here, or on entry).

        Everything is checked here, at the call, before anything changes.
        """
        tokens = parse_pattern(pattern)
        inbox: _Inbox[T] = _Inbox(
            pattern,
            tokens,
            queue=parse_queue(queue),
            policy=self._policy if policy is None else _check_policy(policy),
            max_buffer_size=(
                self._max_buffer_size
                if max_buffer_size is None
                else _check_count("max_buffer_size", max_buffer_size)
            ),
            disconnect_after=(
                self._disconnect_after
                if disconnect_after is None
                else _check_count("disconnect_after", disconnect_after)
            ),
            tally=self._tally,
        )
        self._check_open()
        return _SubscriptionScope(self, inbox)

    def _subscribe_many(
        self,
        patterns: Sequence[str],
        *,
        max_buffer_size: int,
        policy: OverflowPolicy,
    ) -> AbstractAsyncContextManager[Subscription[T]]:
        """One subscription on several patterns, each message once, in order.

        Private, for :mod:`trio_pubsub.nats`: a bridge exports what its patterns
        match as one ordered stream, and a subject matching two of them must go
        out once. Such a subscription gets no retained messages.
        """
        parsed = list(dict.fromkeys(parse_pattern(p) for p in patterns))
        if not parsed:
            raise ValueError("at least one pattern is needed")
        inbox: _Inbox[T] = _Inbox(
            ", ".join(SEPARATOR.join(tokens) for tokens in parsed),
            parsed[0],
            policy=_check_policy(policy),
            max_buffer_size=_check_count("max_buffer_size", max_buffer_size),
            disconnect_after=self._disconnect_after,
            tally=self._tally,
        )
        inbox.also = tuple(parsed[1:])
        self._check_open()
        return _SubscriptionScope(self, inbox)

    def _stop_routing(self, subscription: Subscription[T]) -> None:
        """Route nothing more to ``subscription``; it keeps what it holds.

        Private, for :mod:`trio_pubsub.nats`: a draining bridge exports what its
        subscription holds, and then sees ``trio.EndOfChannel``.
        """
        inbox = subscription._inbox
        if inbox.state is _State.OPEN:
            self._detach(inbox)
            inbox.end()

    def _learn_run(self) -> None:
        """Remember the trio run this is called from, for publish_from_thread."""
        with contextlib.suppress(RuntimeError):  # outside trio.run: keep it
            self._token = trio.lowlevel.current_trio_token()

    def _attach(self, inbox: _Inbox[T]) -> None:
        self._check_open()
        self._learn_run()
        if inbox.also:
            # Matched and arranged again on every change, so that _arrange can
            # keep one entry of it per subject.
            self._trie.arrange = self._arrange
            for tokens in (inbox.tokens, *inbox.also):
                self._trie.insert(tokens, inbox, regroup=True)
            self._extra_entries += len(inbox.also)
        elif inbox.queue is None:
            self._trie.insert(inbox.tokens, inbox)
            if self._retained:
                # No checkpoint since the insert: retained messages come first,
                # live ones after, none missed and none twice.
                inbox.take_retained(self._retained.matching(inbox.tokens))
        else:
            group = self._groups.get(inbox.queue)
            if group is None:
                group = self._groups[inbox.queue] = _Group(inbox.queue)
            group.join(inbox)
            # From the first member on, the match cache holds GroupTargets.
            self._trie.arrange = self._arrange
            self._trie.insert(inbox.tokens, inbox, regroup=True)
        self._blocking += inbox.policy is OverflowPolicy.BLOCK

    def _detach(self, inbox: _Inbox[T]) -> None:
        group = inbox.group
        if inbox.also:
            for tokens in (inbox.tokens, *inbox.also):
                self._trie.remove(tokens, inbox, regroup=True)
            self._extra_entries -= len(inbox.also)
        elif group is None:
            self._trie.remove(inbox.tokens, inbox)
        else:
            group.leave(inbox)
            if not group.order:
                del self._groups[group.name]
            self._trie.remove(inbox.tokens, inbox, regroup=True)
        self._blocking -= inbox.policy is OverflowPolicy.BLOCK

    @staticmethod
    def _arrange(matched: list[Target[T]]) -> tuple[Target[T], ...]:
        """Turn the inboxes a subject matches into the targets of a publish.

        Members of one queue group become one GroupTarget, at the place of the
        first of them; an inbox on several patterns appears once.
        """
        slots: list[Target[T] | _Group] = []  # a group where its target goes
        members: dict[_Group, list[_Inbox[T]]] = {}
        for target in matched:
            inbox = typing.cast("_Inbox[T]", target)  # the trie holds inboxes only
            group = inbox.group
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

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosedError("the broker is closed")

    # -- publishing -----------------------------------------------------------

    def _snapshot(self, subject: str, payload: T) -> tuple[Target[T], ...]:
        """Check the call and return the inboxes that ``subject`` reaches now."""
        try:
            # Only valid subjects are ever cached, so a hit needs no parsing.
            targets = self._trie.cache.get(subject)
        except TypeError:  # not even hashable: let parsing say what is wrong
            targets = None
        tokens = None
        if targets is None:  # a miss (get, not [], because raising costs more)
            tokens = parse_subject(subject)
        else:
            self._cache_hits += 1
        message_type = self._message_type
        if message_type is not None and not isinstance(payload, message_type):
            raise self._payload_error(payload)
        if targets is not None:
            return targets
        assert tokens is not None
        # A closed broker has an empty trie without a cache: every call ends here.
        self._check_open()
        self._cache_misses += 1
        return self._trie.lookup(subject, tokens)

    def _payload_error(self, payload: object) -> TypeError:
        assert self._message_type is not None
        return TypeError(
            f"payload must be an instance of {self._message_type.__qualname__}, "
            f"not {type(payload).__name__}: {payload!r}"
        )

    def _deliver(
        self,
        message: Message[T],
        targets: tuple[Target[T], ...],
        full: list[Target[T]],
    ) -> int:
        """Offer ``message`` to every target without waiting; count acceptances.

        Full ``BLOCK`` targets are appended to ``full`` for the caller to wait on.
        """
        appended = accepted = 0
        for inbox in targets:
            buffer = inbox.buffer
            if len(buffer) < inbox.limit:
                # The common case, inlined: room, and no receiver waiting (the
                # limit is 0 while one does).
                buffer.append(message)
                appended += 1
            else:
                try:
                    accepted += inbox.offer(message)
                except trio.WouldBlock:
                    full.append(inbox)
        self._tally.delivered += appended
        return accepted + appended

    async def publish(
        self,
        subject: str,
        payload: T,
        *,
        headers: Mapping[str, str] | None = None,
        retain: bool = False,
    ) -> int:
        """Publish ``payload`` on ``subject`` to every matching subscription.

        A trio checkpoint. The matching subscriptions are fixed when it is
        called; each gets the message according to its policy. It waits only
        for ``BLOCK`` subscriptions whose buffer is full, after every other one
        has been served. A subscription that leaves while it waits is skipped.

        Args:
            subject: A literal subject (no wildcards).
            payload: The message's payload.
            headers: Metadata for the receivers (correlation IDs, trace
                context): a mapping of ``str`` to ``str``, copied into the
                read-only :attr:`Message.headers` that every receiver shares.
            retain: Also keep the message as the last one of ``subject``, for
                subscriptions entered later (see :meth:`retained`). It is
                stored when the subscriptions are fixed, before any wait.

        Returns:
            How many subscriptions accepted the message into their buffer.

        Raises:
            InvalidSubjectError: ``subject`` breaks the grammar or has a wildcard.
            TypeError: ``subject`` is not a ``str``, the payload is not of the
                broker's ``message_type``, ``headers`` is not a mapping of
                ``str`` to ``str``, or ``retain`` is not a ``bool``.
            BrokerClosedError: the broker is closed, or was closed while this
                call waited for room.

        If cancelled while waiting for room, the subscriptions already served
        keep their copy, the one it waited on and those after it get none, and
        every counter stays exact; the call does not count as published.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._token is None:
            self._learn_run()
        if headers is None:
            message = make_message(subject, payload)
        else:
            message = build_message(subject, payload, headers)
        targets = self._snapshot(subject, payload)
        if retain:
            self._retain(subject, message, retain)
        full: list[Target[T]] = []
        accepted = self._deliver(message, targets, full)
        if full:
            for inbox in full:
                accepted += await inbox.put(message)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        self._published += 1
        return accepted

    def _publish_except(
        self,
        skip: Subscription[T] | None,
        subject: str,
        payload: T,
        headers: Mapping[str, str] | None,
    ) -> tuple[Message[T], list[Target[T]]]:
        """Publish to every matching subscription but ``skip``, without waiting.

        Private, for :mod:`trio_pubsub.nats`: what a bridge imports must not
        reach its own export (no echo). Kept apart from :meth:`publish`, whose
        hot path should not pay for a test that only bridges need.

        Returns the message and the full ``BLOCK`` subscriptions still to get
        it; if there are any, :meth:`_publish_rest` waits for them. Takes no
        checkpoint: the bridge imports batches and takes one per batch.
        """
        message = (
            make_message(subject, payload)
            if headers is None
            else build_message(subject, payload, headers)
        )
        targets = self._snapshot(subject, payload)
        if skip is not None and skip._inbox in targets:
            left_out = skip._inbox
            targets = tuple(target for target in targets if target is not left_out)
        full: list[Target[T]] = []
        self._deliver(message, targets, full)
        if not full:
            self._published += 1
        return message, full

    async def _publish_rest(self, message: Message[T], full: list[Target[T]]) -> None:
        """Wait for room in each of ``full``, as :meth:`publish` does."""
        for inbox in full:
            await inbox.put(message)
        self._published += 1

    def publish_nowait(
        self,
        subject: str,
        payload: T,
        *,
        headers: Mapping[str, str] | None = None,
        retain: bool = False,
    ) -> int:
        """Publish without waiting: like :meth:`publish`, all or nothing.

        Returns:
            How many subscriptions accepted the message into their buffer.

        Raises:
            trio.WouldBlock: a matching ``BLOCK`` subscription's buffer is full;
                then no subscription gets the message, it is not retained, and
                no counter but the match cache's changes.
            InvalidSubjectError: as for :meth:`publish`.
            TypeError: as for :meth:`publish`.
            BrokerClosedError: the broker is closed.
        """
        if headers is None:
            message = make_message(subject, payload)
        else:
            message = build_message(subject, payload, headers)
        targets = self._snapshot(subject, payload)
        if self._blocking:
            for inbox in targets:
                # Below its fast-path limit, an inbox cannot be full.
                if len(inbox.buffer) >= inbox.limit and inbox.would_block():
                    raise trio.WouldBlock
        if retain:
            self._retain(subject, message, retain)
        accepted = self._deliver(message, targets, [])
        self._published += 1
        return accepted

    def _retain(self, subject: str, message: Message[T], retain: object) -> None:
        if retain is not True:
            raise TypeError(
                f"retain must be a bool, not {type(retain).__name__}: {retain!r}"
            )
        self._retained.put(subject, message)

    def publish_from_thread(
        self,
        subject: str,
        payload: T,
        *,
        headers: Mapping[str, str] | None = None,
        retain: bool = False,
    ) -> int:
        """Publish from a thread other than the broker's trio thread, and wait.

        Runs :meth:`publish` in the broker's trio run and blocks the calling
        thread until it is done, ``BLOCK`` waits included, then returns its
        result or raises its exception. Calls from one thread are published in
        the order they are made. It works from ``trio.to_thread.run_sync``
        workers and from any other thread.

        The broker's trio run is the one it was created in, or else the one in
        which it last entered a subscription, or was first awaited in
        ``publish`` or ``async with``.

        Args: as for :meth:`publish`.

        Returns:
            As for :meth:`publish`.

        Raises:
            RuntimeError: called from the broker's own trio thread (it would wait
                for that thread, which would never get to run the publish: use
                ``await publish`` or ``publish_nowait`` there), or the broker has
                not been used in a trio run yet.
            BrokerClosedError: the broker is closed, or its trio run has ended.
            InvalidSubjectError, TypeError, trio.Cancelled: as for :meth:`publish`.
        """
        token = self._token
        try:
            here = trio.lowlevel.current_trio_token()
        except RuntimeError:
            here = None
        if here is not None and here is token:
            raise RuntimeError(
                "publish_from_thread() was called from the broker's own trio "
                "thread, where it would wait for itself forever; use "
                "'await broker.publish()' or 'broker.publish_nowait()' there"
            )
        if token is None:
            raise RuntimeError(
                "the broker has not been used in a trio run yet, so there is no "
                "trio thread to publish in: create it inside trio.run(), or enter "
                "a subscription first"
            )
        self._check_open()
        publish = functools.partial(
            self.publish, subject, payload, headers=headers, retain=retain
        )
        try:
            return trio.from_thread.run(publish, trio_token=token)
        except trio.RunFinishedError:
            raise BrokerClosedError(
                "the trio run the broker belonged to has ended"
            ) from None

    # -- retained messages ----------------------------------------------------

    def retained(self, pattern: str) -> list[Message[T]]:
        """Return the retained messages of the subjects ``pattern`` matches.

        Sorted by subject (as strings). A new subscription receives the same
        list, in the same order, before any live message.

        Raises:
            InvalidSubjectError: ``pattern`` breaks the grammar.
            TypeError: ``pattern`` is not a ``str``.
        """
        return self._retained.matching(parse_pattern(pattern))

    def clear_retained(self, subject: str) -> bool:
        """Forget the retained message of ``subject``; return whether there was one.

        Raises:
            InvalidSubjectError: ``subject`` is not a valid literal subject.
            TypeError: ``subject`` is not a ``str``.
        """
        parse_subject(subject)  # the store takes valid subjects only
        return self._retained.discard(subject)

    # -- the rest -------------------------------------------------------------

    def statistics(self) -> BrokerStatistics:
        """Return a snapshot of the broker's counters."""
        tally = self._tally
        return BrokerStatistics(
            published=self._published,
            delivered=tally.delivered,
            dropped=tally.dropped,
            disconnected=tally.disconnected,
            subscriptions=len(self._trie) - self._extra_entries,
            cache_hits=self._cache_hits,
            cache_misses=self._cache_misses,
            cache_size=len(self._trie.cache),
            retained=len(self._retained),
            retained_evicted=self._retained.evicted,
        )

    async def aclose(self) -> None:
        """Close the broker. Idempotent, and a trio checkpoint.

        Afterwards ``publish``, ``publish_nowait`` and ``subscribe`` raise
        :class:`BrokerClosedError`, and so do publishers waiting for room in a
        ``BLOCK`` buffer now. Every open subscription takes no new messages,
        keeps what it holds for its consumer to drain, and then ends: ``async
        for`` stops and ``receive()`` raises ``trio.EndOfChannel``.

        The broker is closed even if this call is cancelled.
        """
        self._learn_run()
        if not self._closed:
            self._closed = True
            # (the trie holds inboxes only; GroupTargets live in its cache)
            inboxes = typing.cast(
                "list[_Inbox[T]]", list(dict.fromkeys(self._trie.values()))
            )
            self._trie = SubjectTrie()  # no cache: every publish now checks _closed
            for inbox in inboxes:
                inbox.end()
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Broker[T]:
        self._learn_run()
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


@typing.final
class _SubscriptionScope(Generic[T]):
    """What ``subscribe()`` returns: registers on entry, removes on exit."""

    __slots__ = ("_broker", "_entered", "_inbox")

    def __init__(self, broker: Broker[T], inbox: _Inbox[T]) -> None:
        self._broker = broker
        self._inbox = inbox
        self._entered = False

    async def __aenter__(self) -> Subscription[T]:
        # Checkpoint before registering: a cancellation here leaves nothing behind,
        # and after registering nothing may raise until the body runs.
        await trio.lowlevel.checkpoint()
        if self._entered:
            raise RuntimeError(
                f"this subscribe({self._inbox.pattern!r}) was already entered; "
                "call broker.subscribe() again for a new subscription"
            )
        self._broker._attach(self._inbox)
        self._entered = True
        return Subscription(self._inbox)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._inbox.close()
