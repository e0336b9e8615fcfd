"""Broker: the public API, validation, publish sequencing, retained, stats, close.

Publishing is snapshot-then-deliver: the routes are asked once, synchronously,
for the targets of the subject, and the message is then offered to each. Every
target with room, or whose policy does not wait, gets it at once; only then
does ``publish`` wait, in snapshot order, for the ``BLOCK`` targets that were
full. Targets that leave meanwhile are skipped (``_Inbox.offer`` and
``_Inbox.put`` check their state); inboxes that enter meanwhile are not in the
snapshot.

No checkpoint lies between validating a call and changing state, so a rejected
call leaves the broker as it was; and every method that changes state is
protected from ``KeyboardInterrupt``, so a Ctrl-C is delivered at a checkpoint,
never between two mutations that belong together.
"""

from __future__ import annotations

import functools
import math
import secrets
import types  # noqa: TC003 (the API reference resolves it)
import typing

# Runtime imports, so that the API reference can resolve the annotations.
from collections.abc import Callable, Mapping  # noqa: TC003
from contextlib import AbstractAsyncContextManager  # noqa: TC003
from typing import Generic, TypeVar

import trio
from trio.lowlevel import enable_ki_protection

from ._errors import BrokerClosedError, InvalidSubjectError, NoRespondersError
from ._inbox import Tally, _Inbox
from ._message import (
    Message,
    freeze_headers,
    new_message,
    new_object,
    request_message,
    set_payload,
    set_subject,
)
from ._options import (
    check_int,
    check_message_type,
    check_name,
    check_policy,
    check_timeout,
    payload_error,
    retain_error,
    type_name,
)
from ._policy import OverflowPolicy
from ._reply import Replies
from ._retained import RetainedStore
from ._routes import RouteTable
from ._stats import BrokerStatistics, SubscriptionInfo
from ._subject import (
    REPLY_ROOT,
    is_reserved,
    parse_pattern,
    parse_queue,
    parse_subject,
    reserved_pattern,
)
from ._subscription import Subscription, SubscriptionScope
from ._threads import ThreadPublisher, TrioRun

if typing.TYPE_CHECKING:
    from ._groups import Target

T = TypeVar("T")

DEFAULT_MAX_BUFFER_SIZE: typing.Final = 64
DEFAULT_POLICY: typing.Final = OverflowPolicy.DROP_NEWEST
DEFAULT_DISCONNECT_AFTER: typing.Final = 1
DEFAULT_MATCH_CACHE_SIZE: typing.Final = 8192
DEFAULT_MATCH_CACHE_BYTES: typing.Final = 8 << 20
DEFAULT_MAX_RETAINED: typing.Final = 10_000
DEFAULT_MAX_PENDING: typing.Final = 1024  # a thread publisher's queue


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

    __slots__ = (
        "__weakref__",
        "_block_timeout",
        "_cache",
        "_cache_hits",
        "_cache_misses",
        "_closed",
        "_disconnect_after",
        "_exports",
        "_max_buffer_size",
        "_message_type",
        "_on_subscribe",
        "_policy",
        "_published",
        "_replies",
        "_retained",
        "_routes",
        "_run",
        "_tally",
    )

    def __init__(
        self,
        message_type: type[T] | types.UnionType | tuple[type[object], ...] | None = (
            None
        ),
        /,
        *,
        max_buffer_size: int = DEFAULT_MAX_BUFFER_SIZE,
        policy: OverflowPolicy = DEFAULT_POLICY,
        disconnect_after: int = DEFAULT_DISCONNECT_AFTER,
        block_timeout: float | None = None,
        match_cache_size: int = DEFAULT_MATCH_CACHE_SIZE,
        match_cache_bytes: int = DEFAULT_MATCH_CACHE_BYTES,
        max_retained: int = DEFAULT_MAX_RETAINED,
    ) -> None:
        if message_type is not None:
            check_message_type(message_type)
        self._message_type = message_type
        self._max_buffer_size = check_int("max_buffer_size", max_buffer_size)
        self._policy = check_policy(policy)
        self._disconnect_after = check_int("disconnect_after", disconnect_after)
        self._block_timeout = check_timeout("block_timeout", block_timeout)
        self._routes: RouteTable[T] = RouteTable(
            check_int("match_cache_size", match_cache_size, minimum=0),
            check_int("match_cache_bytes", match_cache_bytes, minimum=0),
        )
        # The hot path reads the cache straight from here; it is never replaced.
        self._cache = self._routes.cache
        self._retained: RetainedStore[Message[T]] = RetainedStore(
            check_int("max_retained", max_retained, minimum=0)
        )
        self._run = TrioRun()
        self._tally = Tally(detach=self._routes.discard)
        # 88 random bits: reply subjects of brokers in other processes, met
        # across a NATS bridge, do not collide.
        self._replies: Replies[T] = Replies(f"{REPLY_ROOT}.{secrets.token_hex(11)}.")
        # the NATS bridges' exports open now: what they import skips them all
        self._exports: set[_Inbox[T]] = set()
        self._published = 0
        self._cache_hits = 0
        self._cache_misses = 0
        self._closed = False
        # Set by an integration (trio_pubsub.otel) to wrap each subscription's
        # scope; subscribing is not on the publish path, so this costs nothing.
        self._on_subscribe: (
            Callable[
                [AbstractAsyncContextManager[Subscription[T]]],
                AbstractAsyncContextManager[Subscription[T]],
            ]
            | None
        ) = None

    def __repr__(self) -> str:
        kind = "" if self._message_type is None else type_name(self._message_type)
        state = "closed" if self._closed else "open"
        return (
            f"<trio_pubsub.Broker[{kind}] {state}, "
            f"{len(self._routes)} subscriptions, {self._published} published>"
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
        name: str | None = None,
        block_timeout: float | None = None,
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
        tokens = parse_pattern(pattern)
        if tokens[0] == REPLY_ROOT:
            raise reserved_pattern(pattern)
        inbox = self._inbox(
            pattern,
            tokens,
            queue=parse_queue(queue),
            policy=self._policy if policy is None else check_policy(policy),
            max_buffer_size=max_buffer_size,
            disconnect_after=disconnect_after,
            name=check_name(name),
            block_timeout=check_timeout("block_timeout", block_timeout),
        )
        self._check_open()
        scope = SubscriptionScope(inbox, self._attach)
        hook = self._on_subscribe
        return scope if hook is None else hook(scope)

    def _inbox(
        self,
        pattern: str,
        tokens: tuple[str, ...],
        *,
        policy: OverflowPolicy,
        max_buffer_size: int | None,
        disconnect_after: int | None,
        queue: str | None = None,
        also: tuple[tuple[str, ...], ...] = (),
        name: str | None = None,
        block_timeout: float | None = None,
    ) -> _Inbox[T]:
        """A new inbox with the broker's defaults where an option is ``None``."""
        if block_timeout is None:
            block_timeout = self._block_timeout
        return _Inbox(
            pattern,
            tokens,
            queue=queue,
            also=also,
            name=name,
            block_timeout=math.inf if block_timeout is None else block_timeout,
            policy=policy,
            max_buffer_size=(
                self._max_buffer_size
                if max_buffer_size is None
                else check_int("max_buffer_size", max_buffer_size)
            ),
            disconnect_after=(
                self._disconnect_after
                if disconnect_after is None
                else check_int("disconnect_after", disconnect_after)
            ),
            tally=self._tally,
        )

    def _attach(self, inbox: _Inbox[T]) -> None:
        """Register ``inbox`` and hand it its retained messages, in one step.

        Everything that can raise comes before registering, so an entry that
        raises leaves nothing behind; but a log call about a retained message
        the inbox drops can raise too (a user's logging filter), and then the
        inbox leaves again at once, what it took counted as dropped. No
        checkpoint lies between registering and the retained messages: they
        come first, live ones after, none missed and none twice.
        """
        self._check_open()
        if self._run.learn():
            self._tally.clock = None  # the clock of the run before
        retained = (
            self._retained.matching(inbox.tokens)
            if self._retained and inbox.queue is None and not inbox.also
            else []
        )
        self._routes.add(inbox)
        try:
            inbox.take_retained(retained)
        except BaseException:
            inbox.close()  # off the routes again
            raise

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosedError("the broker is closed")

    # -- publishing -----------------------------------------------------------

    def _snapshot(
        self, subject: str, payload: T, headers: Mapping[str, str] | None
    ) -> tuple[Message[T], tuple[Target[T], ...]]:
        """Check the call; return its message and the targets ``subject`` reaches.

        Checks come in this order: subject, payload, headers, then whether the
        broker is closed.
        """
        try:
            # Only valid subjects are ever cached, so a hit needs no parsing,
            # once the subject is known to be a str (an object that merely
            # compares equal to one is not).
            targets = self._cache.get(subject)
        except TypeError:  # not even hashable: let parsing say what is wrong
            targets = None
        if targets is None or type(subject) is not str:
            tokens = parse_subject(subject)
            if tokens[0] == REPLY_ROOT:
                self._replies.check(subject)
            if type(subject) is str:
                targets = None
            else:  # a str subclass: routed, and received, as the plain str
                subject = str.__str__(subject)
                targets = self._cache.get(subject)
                self._cache_hits += targets is not None
        else:
            self._cache_hits += 1
        message_type = self._message_type
        if message_type is not None and not isinstance(payload, message_type):
            raise payload_error(message_type, payload)
        message = new_message(subject, payload, headers)
        if targets is None:
            # A closed broker caches nothing: every call on it gets here.
            self._check_open()
            self._cache_misses += 1
            # A reply subject reaches its waiting request, or nobody: never
            # the trie, never the cache.
            targets = (
                self._replies.targets(subject)
                if tokens[0] == REPLY_ROOT
                else self._routes.targets(subject, tokens)
            )
        return message, targets

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
                taken = inbox.offer(message)
                if taken < 0:  # WAIT: a full BLOCK buffer
                    full.append(inbox)
                else:
                    accepted += taken
        self._tally.delivered += appended
        return accepted + appended

    @enable_ki_protection
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
        if retain is not False and retain is not True:
            raise retain_error(retain)
        if retain:
            _check_retainable(subject)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._run.token is None:
            self._run.learn()
        # The common case in this one frame: a cached str subject without
        # headers (see _snapshot for the rest), delivered as _deliver does.
        targets = self._cache.get(subject) if type(subject) is str else None
        if targets is None or headers is not None:
            message, targets = self._snapshot(subject, payload, headers)
        else:
            self._cache_hits += 1
            message_type = self._message_type
            if message_type is not None and not isinstance(payload, message_type):
                raise payload_error(message_type, payload)
            message = new_object(Message)
            set_subject(message, subject)
            set_payload(message, payload)
        if retain:
            self._retained.put(message.subject, message)
        full: list[Target[T]] | None = None
        appended = accepted = 0
        for inbox in targets:
            buffer = inbox.buffer
            if len(buffer) < inbox.limit:
                buffer.append(message)
                appended += 1
            else:
                taken = inbox.offer(message)
                if taken >= 0:
                    accepted += taken
                elif full is None:  # WAIT: a full BLOCK buffer
                    full = [inbox]
                else:
                    full.append(inbox)
        self._tally.delivered += appended
        accepted += appended
        if full is None:
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            for inbox in full:
                accepted += await inbox.put(message)
        self._published += 1
        return accepted

    @enable_ki_protection
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
        if retain is not False and retain is not True:
            raise retain_error(retain)
        if retain:
            _check_retainable(subject)
        # The hit path of publish(), written out here too (one frame less).
        targets = self._cache.get(subject) if type(subject) is str else None
        if targets is None or headers is not None:
            message, targets = self._snapshot(subject, payload, headers)
        else:
            self._cache_hits += 1
            message_type = self._message_type
            if message_type is not None and not isinstance(payload, message_type):
                raise payload_error(message_type, payload)
            message = new_object(Message)
            set_subject(message, subject)
            set_payload(message, payload)
        if self._routes.blocking:
            for inbox in targets:
                # Below its fast-path limit, an inbox cannot be full.
                if len(inbox.buffer) >= inbox.limit and inbox.would_block():
                    raise trio.WouldBlock
        if retain:
            self._retained.put(message.subject, message)
        # _deliver(), inlined on the hottest path: no target here can be full.
        appended = accepted = 0
        for inbox in targets:
            buffer = inbox.buffer
            if len(buffer) < inbox.limit:
                buffer.append(message)
                appended += 1
            else:
                accepted += inbox.offer(message)
        self._tally.delivered += appended
        self._published += 1
        return accepted + appended

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
            BrokerClosedError: the broker is closed, or its trio run has ended
                (before the publish or while it waited).
            InvalidSubjectError, TypeError: as for :meth:`publish`.
        """
        self._run.check_caller("publish_from_thread()")
        self._check_open()
        return self._run.call(
            functools.partial(
                self.publish, subject, payload, headers=headers, retain=retain
            )
        )

    def thread_publisher(
        self, *, max_pending: int = DEFAULT_MAX_PENDING
    ) -> ThreadPublisher[T]:
        """A batched entry for threads that publish many messages.

        ``publish_from_thread`` waits for the trio thread once per message;
        the :class:`ThreadPublisher` this returns queues messages instead,
        and the trio thread publishes them a batch at a time, woken once per
        batch. Its ``publish(subject, payload, *, headers=None)`` checks the
        message in the calling thread (raising what ``publish`` would raise,
        there) and returns once it is queued; ``flush()`` returns once every
        message queued so far is published; as a context manager its exit
        flushes and closes it. Create it anywhere, and share it between
        threads or give each its own.

        Args:
            max_pending: How many messages may wait in its queue (an int >=
                1); a thread that would queue more waits for room. A full
                ``BLOCK`` subscription holds the queue back, and so the threads.

        Messages queued from one thread are published in the order they were
        queued; those of different threads interleave. Each is published with
        ``publish_nowait``, or, when a ``BLOCK`` buffer is full, with ``await
        publish`` by a task that waits for room (and holds the rest of the
        queue back meanwhile). Queued messages it could not publish because
        the broker closed, or its trio run ended, are counted in ``lost``, and
        ``flush()`` raises :class:`BrokerClosedError` for them.

        Raises:
            TypeError, ValueError: ``max_pending`` is not an int >= 1.
            BrokerClosedError: the broker is closed.
        """
        check_int("max_pending", max_pending)
        self._check_open()
        return ThreadPublisher(self._run, self._thread_item, self, max_pending)

    def _thread_item(
        self, subject: object, payload: object, headers: object
    ) -> tuple[str, T, Mapping[str, str] | None]:
        """Check a message for the thread publisher, in the calling thread.

        The checks of ``publish``, in its order; a subject already in the
        match cache (a plain dict, read whole under the interpreter's lock) is
        known to be valid.
        """
        if type(subject) is not str or subject not in self._cache:
            tokens = parse_subject(subject)  # so it is a str from here on
            subject = str.__str__(typing.cast("str", subject))
            if tokens[0] == REPLY_ROOT:
                raise InvalidSubjectError(
                    subject,
                    "a request is answered with Message.respond() in the trio "
                    "thread, not from a thread publisher",
                )
        message_type = self._message_type
        if message_type is not None and not isinstance(payload, message_type):
            raise payload_error(message_type, payload)
        frozen = None if headers is None else freeze_headers(headers) or None
        self._check_open()
        return subject, typing.cast("T", payload), frozen

    # -- request/reply --------------------------------------------------------

    @enable_ki_protection
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
        seconds = check_timeout("timeout", timeout)
        if seconds is None:
            raise TypeError("timeout must be a number of seconds > 0, not None")
        if _reserved(subject):
            raise InvalidSubjectError(
                subject,
                f"a request goes to subscriptions, and none listens under "
                f"{REPLY_ROOT}.",
            )
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._run.token is None:
            self._run.learn()
        if seconds == math.inf:
            return await self._ask(subject, payload, headers)
        # A bare cancel scope: trio.fail_after's two context managers around
        # it would cost a tenth of a round trip more.
        with trio.CancelScope(deadline=trio.current_time() + seconds):
            return await self._ask(subject, payload, headers)
        raise trio.TooSlowError  # the deadline cancelled the scope

    @enable_ki_protection
    async def _ask(
        self, subject: str, payload: T, headers: Mapping[str, str] | None
    ) -> Message[T]:
        """Publish the request and wait for its answer (``request`` minus the limit)."""
        message, targets = self._snapshot(subject, payload, headers)
        if not targets:
            raise NoRespondersError(message.subject, "no subscription matches it")
        reply = self._replies.open(message.subject, trio.current_effective_deadline())
        try:
            request = request_message(message, reply.subject, self._respond)
            full: list[Target[T]] = []
            reply.takers += self._deliver(request, targets, full)
            for inbox in full:
                reply.takers += await inbox.put(request)
            self._published += 1
            reply.publishing = False
            if reply.takers <= 0:
                raise NoRespondersError(message.subject, reply.why_nobody(len(targets)))
            return await reply.wait()
        finally:
            reply.close()

    @enable_ki_protection
    async def _respond(
        self, subject: str, payload: T, *, headers: Mapping[str, str] | None = None
    ) -> int:
        """``publish(subject, ...)`` for a reply subject of ours, as ``respond()``.

        The same checks, counts and checkpoints, without parsing a subject
        known to be valid, or asking the match cache for one never in it.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        message_type = self._message_type
        if message_type is not None and not isinstance(payload, message_type):
            raise payload_error(message_type, payload)
        message = new_message(subject, payload, headers)
        self._check_open()
        reply = self._replies.waiting.get(subject)
        accepted = 0 if reply is None else reply.offer(message)
        self._published += 1
        await trio.lowlevel.cancel_shielded_checkpoint()
        return accepted

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

    @enable_ki_protection
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
            subscriptions=len(self._routes),
            cache_hits=self._cache_hits,
            cache_misses=self._cache_misses,
            cache_size=len(self._cache),
            cache_evictions=self._routes.evictions,
            retained=len(self._retained),
            retained_evicted=self._retained.evicted,
            requests_waiting=len(self._replies),
        )

    def subscriptions(self) -> tuple[SubscriptionInfo, ...]:
        """Return a snapshot of every open subscription, in the order they entered.

        Open: registered, so that it would be offered a new message (the ones
        :meth:`statistics` counts in ``subscriptions``); not those closed, cut
        off, drained or ended by :meth:`aclose`.
        """
        return tuple(
            SubscriptionInfo(
                name=inbox.name,
                pattern=inbox.pattern,
                queue=inbox.queue,
                policy=inbox.policy,
                max_buffer_size=inbox.max_buffer_size,
                statistics=inbox.statistics(),
            )
            for inbox in self._routes.registered
        )

    @enable_ki_protection
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
        self._run.learn()
        if not self._closed:
            self._closed = True
            for inbox in self._routes.close():
                inbox.end()
            self._replies.fail_all(
                lambda: BrokerClosedError(
                    "the broker was closed while a request waited for its answer"
                )
            )
        await trio.lowlevel.checkpoint()

    async def __aenter__(self) -> Broker[T]:
        self._run.learn()
        await trio.lowlevel.checkpoint()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        await self.aclose()


def _check_retainable(subject: object) -> None:
    """Refuse to retain on a reply subject: nothing of a request may stay."""
    if _reserved(subject):
        raise InvalidSubjectError(
            subject, "a reply subject is answered once, never retained"
        )


def _reserved(subject: object) -> typing.TypeGuard[str]:
    return isinstance(subject, str) and is_reserved(subject)
