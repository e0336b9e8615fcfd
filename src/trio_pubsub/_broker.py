"""Broker: the public facade of a broker; its pipeline is ``_delivery``'s.

``publish`` and ``publish_nowait`` are bound per broker straight to the
pipeline's methods (an instance attribute comes before the class's method),
so a call runs no frame of the facade, which would cost 28 ns, about 6% of a
``publish_nowait`` at fan-out 1; the class's methods, which document them,
delegate when called through the class. An instrumentation rebinds them with
:func:`bind_publishers`: no class changes.
"""

from __future__ import annotations

import functools
import types  # noqa: TC003 (the API reference resolves it)
import typing

# Runtime imports, so that the API reference can resolve the annotations.
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager  # noqa: TC003
from typing import Generic, TypeVar

from . import _options as default
from ._delivery import Delivery
from ._message import Message  # noqa: TC001
from ._options import check_int
from ._policy import OverflowPolicy  # noqa: TC001
from ._stats import BrokerStatistics, SubscriptionInfo  # noqa: TC001
from ._subject import parse_pattern
from ._subscription import Subscription  # noqa: TC001
from ._threads import ThreadPublisher

T = TypeVar("T")


@typing.final
class Broker(Generic[T]):
    """An in-process publish/subscribe broker for messages of type ``T``.

    ``Broker(OrderEvent)`` is a ``Broker[OrderEvent]`` that also checks at
    publish time that each payload is an ``OrderEvent``; ``Broker[OrderEvent]()``
    has the same static type and no runtime check.

    Args:
        message_type: If given, every payload must be an instance of it
            (``TypeError`` otherwise): a class, a union such as ``int | str``,
            or a tuple of classes, as ``isinstance`` takes them.
        max_buffer_size: Default buffer capacity of a subscription (int >= 1).
        policy: Default :class:`OverflowPolicy` of a subscription.
        disconnect_after: Default number of consecutive drops after which a
            ``DISCONNECT`` subscription is cut off (int >= 1).
        block_timeout: Default of the longest a publish waits for room in one
            full ``BLOCK`` subscription, in seconds (> 0); then the message is
            dropped for that subscription, counted and logged, and the publish
            goes on. ``None`` (the default): wait as long as it takes.
        match_cache_size: How many subjects the match cache remembers at most
            (int >= 0; 0 turns it off). A cached subject is routed with one dict
            lookup; when the cache is full, its oldest quarter makes way.
        match_cache_bytes: How many bytes the match cache's subjects and
            routes may take (int >= 0, default 8 MiB; 0 turns it off). A subject
            whose entry would take more than an eighth of it is not cached.
        max_retained: How many subjects' retained messages it keeps (int >= 0;
            see ``publish(..., retain=True)``); beyond it, the least recently
            updated subject's message is evicted and counted in
            :meth:`statistics` as ``retained_evicted``.

    Raises:
        TypeError: ``message_type`` is not something ``isinstance`` accepts (a
            Protocol that is not runtime-checkable, ``list[int]``), or an
            option has the wrong type.
        ValueError: an option is out of range.

    The broker is bound to no trio run: create it anywhere, use it from tasks of
    one trio run at a time. It is also an async context manager that closes it.
    :meth:`publish_from_thread` reaches it from other threads, in the trio run
    it was created in, or else the run it was last used in asynchronously.
    """

    __slots__ = ("__dict__", "__weakref__", "_delivery")

    def __init__(
        self,
        message_type: type[T] | types.UnionType | tuple[type[object], ...] | None = (
            None
        ),
        /,
        *,
        max_buffer_size: int = default.MAX_BUFFER_SIZE,
        policy: OverflowPolicy = default.POLICY,
        disconnect_after: int = default.DISCONNECT_AFTER,
        block_timeout: float | None = None,
        match_cache_size: int = default.MATCH_CACHE_SIZE,
        match_cache_bytes: int = default.MATCH_CACHE_BYTES,
        max_retained: int = default.MAX_RETAINED,
    ) -> None:
        self._delivery: Delivery[T] = Delivery(
            message_type,
            max_buffer_size=max_buffer_size,
            policy=policy,
            disconnect_after=disconnect_after,
            block_timeout=block_timeout,
            match_cache_size=match_cache_size,
            match_cache_bytes=match_cache_bytes,
            max_retained=max_retained,
        )
        bind_publishers(self, None, None)

    def __repr__(self) -> str:
        return self._delivery.describe()

    def subscribe(
        self,
        pattern: str,
        *,
        queue: str | None = None,
        max_buffer_size: int | None = None,
        policy: OverflowPolicy | None = None,
        disconnect_after: int | None = None,
        name: str | None = None,
        block_timeout: float | None = None,
        report_gaps: bool = False,
    ) -> AbstractAsyncContextManager[Subscription[T]]:
        """Listen on ``pattern`` for the body of an ``async with`` block.

        ``async with broker.subscribe("orders.>") as sub:`` registers the
        subscription on entry and removes it before control leaves the block,
        whatever the exit (normal, exception, cancellation, Ctrl-C); its pending
        messages are then discarded and counted as dropped. Messages published
        after entry are routed to it.

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
            name: A label for log lines and :meth:`subscriptions`, so that
                subscriptions on one pattern can be told apart: a non-empty
                ``str``; ``None``: the pattern.
            block_timeout: For ``BLOCK``, the longest a publish waits for room
                here (seconds > 0, ``math.inf``: for ever); then the message goes
                in if there is room, else it is dropped for this subscription,
                counted and logged, and the publish goes on. ``None``: the
                broker's. (Waiting publishers are let in once a quarter of the
                buffer is free, or at their deadline.)
            report_gaps: Raise :class:`Lagged` where messages were dropped for it.

        Returns:
            An async context manager yielding the :class:`Subscription`. Entering
            it is a trio checkpoint, taken before registering: a cancelled entry
            leaves nothing behind, and an entry that raises for any reason
            leaves nothing registered. It may be entered once.

        Raises:
            InvalidSubjectError: ``pattern`` breaks the subject grammar, or its
                first token is ``_INBOX``, reserved for reply subjects (see
                :meth:`request`).
            TypeError: ``pattern`` is not a ``str`` or an option has the wrong type.
            ValueError: an option is out of range, or ``queue`` is empty or
                contains whitespace.
            BrokerClosedError: the broker is closed (here, or on entry).

        Everything is checked here, at the call, before anything changes.
        """
        return self._delivery.subscribe(
            pattern,
            queue=queue,
            max_buffer_size=max_buffer_size,
            policy=policy,
            disconnect_after=disconnect_after,
            name=name,
            block_timeout=block_timeout,
            report_gaps=report_gaps,
        )

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
            InvalidSubjectError: ``subject`` breaks the grammar or has a
                wildcard, or lies under ``_INBOX.`` and is not the reply
                subject of one of this broker's requests (nor may one be
                retained).
            TypeError: ``subject`` is not a ``str``, the payload is not of the
                broker's ``message_type``, ``headers`` is not a mapping of
                ``str`` to ``str``, or ``retain`` is not a ``bool`` (checked
                first of all, before the checkpoint).
            BrokerClosedError: the broker is closed, or was closed while this
                call waited for room.

        If cancelled while waiting for room, the subscriptions already served
        keep their copy, the one it waited on and those after it get none, and
        every counter stays exact; the call does not count as published.
        """
        publish = self._delivery.publish
        return await publish(subject, payload, headers=headers, retain=retain)

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
            trio.WouldBlock: a matching ``BLOCK`` subscription's buffer is full,
                or publishers wait for room in it; then no subscription gets the
                message, it is not retained, and no counter but the match
                cache's changes.
            InvalidSubjectError: as for :meth:`publish`.
            TypeError: as for :meth:`publish`.
            BrokerClosedError: the broker is closed.
        """
        publish = self._delivery.publish_nowait
        return publish(subject, payload, headers=headers, retain=retain)

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

        Args:
            subject: A literal subject (no wildcards).
            payload: The message's payload.
            headers: A mapping of ``str`` to ``str``, as for :meth:`publish`.
            retain: Also keep it as the last message of ``subject``.

        Returns:
            How many subscriptions accepted the message.

        Raises:
            RuntimeError: called from the broker's own trio thread (it would wait
                for that thread, which would never get to run the publish: use
                ``await publish`` or ``publish_nowait`` there), or the broker has
                not been used in a trio run yet.
            BrokerClosedError: the broker is closed, or its trio run has ended
                (before the publish or while it waited).
            InvalidSubjectError, TypeError: as for :meth:`publish`.
        """
        publish = functools.partial(
            self.publish, subject, payload, headers=headers, retain=retain
        )
        return self._delivery.from_thread(publish)

    def thread_publisher(
        self, *, max_pending: int = default.MAX_PENDING
    ) -> ThreadPublisher[T]:
        """A batched entry for threads that publish many messages.

        ``publish_from_thread`` waits for the trio thread once per message;
        the :class:`ThreadPublisher` this returns queues messages, which the
        trio thread publishes a batch at a time (see there). Create it
        anywhere, and share it between threads or give each its own.

        Args:
            max_pending: How many messages may wait in its queue (an int >=
                1); a thread that would queue more waits for room. A full
                ``BLOCK`` subscription holds the queue back, and so the threads.

        Raises:
            TypeError, ValueError: ``max_pending`` is not an int >= 1.
            BrokerClosedError: the broker is closed.
        """
        check_int("max_pending", max_pending)
        self._delivery.check_open()
        return ThreadPublisher(self._delivery, self, max_pending)

    async def request(
        self,
        subject: str,
        payload: T,
        *,
        timeout: float,  # noqa: ASYNC109 (NATS's request takes one too)
        headers: Mapping[str, str] | None = None,
    ) -> Message[T]:
        """Publish a request on ``subject`` and return the first answer to it.

        The request is published as :meth:`publish` would, to every matching
        subscription by its policy, with a :attr:`Message.reply` subject made
        for it alone (``_INBOX.<broker>.<random>``). A responder answers with
        ``await message.respond(payload)``; the first answer ends the request,
        later ones reach nobody (``respond()`` returns 0). Nothing of the
        request stays in the broker once it returns or raises: its reply
        subject is in neither the routes nor the match cache, ever.

        A trio checkpoint. To ask several responders and gather every
        answer, subscribe to the answers' subject yourself and publish
        requests with a ``reply-to`` header of your own: the broker's reply
        subjects carry one answer each.

        Args:
            subject: A literal subject, not under ``_INBOX.``.
            payload: The request's payload.
            timeout: The most seconds the whole request takes, waits for room
                in a ``BLOCK`` buffer included (> 0; ``math.inf``: no limit).
            headers: As for :meth:`publish`.

        Returns:
            The answer: a :class:`Message` on the reply subject.

        Raises:
            NoRespondersError: no subscription matches ``subject`` (raised at
                once, and nothing is published), or every one that matches
                dropped the request by its policy (it is then published, and
                counted as dropped), or has nobody behind it (a NATS bridge
                that heard "no responders" from the server).
            trio.TooSlowError: no answer came within ``timeout``.
            BrokerClosedError: the broker is closed, or closed while this waited.
            InvalidSubjectError: ``subject`` breaks the grammar, has a wildcard
                or lies under ``_INBOX.``.
            TypeError: as for :meth:`publish`, or ``timeout`` is not a number.
            ValueError: ``timeout`` is not > 0.
        """
        return await self._delivery.request(subject, payload, timeout, headers)

    def retained(self, pattern: str) -> list[Message[T]]:
        """Return the retained messages of the subjects ``pattern`` matches.

        Sorted by subject (as strings). A new subscription receives the same
        list, in the same order, before any live message.

        Raises:
            InvalidSubjectError: ``pattern`` breaks the grammar.
            TypeError: ``pattern`` is not a ``str``.
        """
        return self._delivery.retained.matching(parse_pattern(pattern))

    def clear_retained(self, subject: str) -> bool:
        """Forget the retained message of ``subject``; return whether there was one.

        Raises:
            InvalidSubjectError: ``subject`` is not a valid literal subject.
            TypeError: ``subject`` is not a ``str``.
        """
        return self._delivery.clear_retained(subject)

    def statistics(self) -> BrokerStatistics:
        """Return a snapshot of the broker's counters."""
        return self._delivery.statistics()

    def subscriptions(self) -> tuple[SubscriptionInfo, ...]:
        """Return a snapshot of every open subscription, in the order they entered.

        Open: registered, so that it would be offered a new message (the ones
        :meth:`statistics` counts in ``subscriptions``); not those closed, cut
        off, drained or ended by :meth:`aclose`.
        """
        return self._delivery.subscriptions()

    async def aclose(self) -> None:
        """Close the broker. Idempotent, and a trio checkpoint.

        Afterwards ``publish``, ``publish_nowait``, ``request`` and
        ``subscribe`` raise :class:`BrokerClosedError`, and so do publishers
        waiting for room in a ``BLOCK`` buffer now, and requests waiting for
        an answer. Every open subscription takes no new messages, keeps what
        it holds for its consumer to drain, and then ends: ``async for``
        stops and ``receive()`` raises ``trio.EndOfChannel``.

        The broker is closed even if this call is cancelled.
        """
        await self._delivery.close()

    async def __aenter__(self) -> Broker[T]:
        await self._delivery.enter()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        await self._delivery.close()


def pipeline(broker: Broker[T]) -> Delivery[T]:
    """The pipeline of ``broker``, for its integrations (through ``_port``)."""
    return broker._delivery


Publish = Callable[..., Awaitable[int]]
PublishNowait = Callable[..., int]


def bind_publishers(
    broker: Broker[T], publish: Publish | None, publish_nowait: PublishNowait | None
) -> None:
    """What ``broker.publish`` and ``broker.publish_nowait`` call from now on.

    ``None``: the pipeline's own methods. For an instrumentation that wraps
    them (trio_pubsub.otel's tracing); they take the arguments the methods
    take.
    """
    delivery = broker._delivery
    broker.__dict__.update(
        publish=delivery.publish if publish is None else publish,
        publish_nowait=(
            delivery.publish_nowait if publish_nowait is None else publish_nowait
        ),
    )
