"""Delivery: the one owner of the publishing pipeline, and the broker's state.

Every message a broker carries goes through :class:`Delivery`, whoever sends
it: ``publish``, ``publish_nowait``, a thread, a request, an answer, or a NATS
bridge importing. The pipeline has three steps:

1. :meth:`Delivery.prepare` checks the call and builds the message once, then
   asks the routes, synchronously, for the targets of its subject (the
   snapshot): one dict lookup for a cached subject;
2. :meth:`Delivery.offer` offers it to every target, each through its own
   ``offer()`` (``_Inbox.offer``, ``GroupTarget.offer``, ``Reply.offer``): the
   target keeps its invariants, and says ``WAIT`` when it is a full ``BLOCK``
   buffer;
3. only then does the caller wait, in snapshot order, for the full ``BLOCK``
   targets (``put()``). Targets that leave meanwhile are skipped (their
   ``offer`` and ``put`` check their state); inboxes that enter meanwhile are
   not in the snapshot.

One documented copy of steps 1 and 2 is inlined, in :meth:`Delivery.publish_nowait`
for a cached subject without headers (the W1 and W2 workloads): it appends to
a target's buffer itself while the buffer is below the target's ``limit``, the
one place outside ``_Inbox`` that does, as ``_Inbox`` documents. Through the
steps instead, a W1 publish took 1.38x the time at fan-out 1 and 2.0x at
fan-out 100 (``bench/ab.py`` against that variant). ``publish`` is a
``publish_nowait`` between two checkpoints while no ``BLOCK`` subscription is
registered (no target can be full), and the steps otherwise; an import of a
cached subject that reaches no export is one too.

No checkpoint lies between checking a call and changing state, so a rejected
call leaves the broker as it was; every method that changes state is protected
from ``KeyboardInterrupt`` (what it calls is protected with it), so a Ctrl-C is
delivered at a checkpoint, never between two mutations that belong together.

This module, ``_inbox`` (parking and waking tasks) and ``_subscription`` (the
receiving end's checkpoints) are the only ones of the core that use
``trio.lowlevel``.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import typing
from typing import Generic, TypeVar

import trio
from trio.lowlevel import enable_ki_protection

from ._errors import BrokerClosedError, InvalidSubjectError, NoRespondersError
from ._inbox import Tally, _Inbox
from ._message import (
    Message,
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
from ._reply import Replies, Reply
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
from ._subscription import SubscriptionScope

if typing.TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from contextlib import AbstractAsyncContextManager

    from ._groups import Routed, Target
    from ._policy import OverflowPolicy
    from ._subscription import Subscription

T = TypeVar("T")
R = TypeVar("R")


class TrioRun:
    """The trio run a broker belongs to, as far as it knows.

    A broker is bound to no trio run, so it learns one: the run it was created
    in, or else the one in which it last entered a subscription, or was first
    awaited in ``publish`` or ``async with``. Other threads reach it through
    :meth:`call`, which refuses first what would deadlock (a call from the
    run's own thread) or cannot work (no run learned yet).
    """

    __slots__ = ("token",)

    def __init__(self) -> None:
        self.token: trio.lowlevel.TrioToken | None = None
        self.learn()

    def learn(self) -> bool:
        """Remember the trio run this is called from (outside one: keep the last).

        Returns whether it is another run than the one remembered before.
        """
        with contextlib.suppress(RuntimeError):
            token = trio.lowlevel.current_trio_token()
            if token is not self.token:
                self.token = token
                return True
        return False

    def is_current(self) -> bool:
        """Whether this is called from the run's own trio thread."""
        try:
            return trio.lowlevel.current_trio_token() is self.token
        except RuntimeError:  # outside a trio run
            return False

    def check_caller(self, what: str) -> None:
        """Refuse a call from the run's own thread, or before a run is known.

        Raises:
            RuntimeError: called from the broker's trio thread (waiting there
                for that thread would never end), or no run is known yet.
        """
        if self.token is not None and self.is_current():
            raise RuntimeError(
                f"{what} was called from the broker's own trio thread, where it "
                "would wait for itself forever; use 'await broker.publish()' or "
                "'broker.publish_nowait()' there"
            )
        if self.token is None:
            raise RuntimeError(
                "the broker has not been used in a trio run yet, so there is no "
                "trio thread to publish in: create it inside trio.run(), or enter "
                "a subscription first"
            )

    def call(self, async_fn: Callable[[], Awaitable[R]]) -> R:
        """Run ``async_fn`` in the run and wait for it (after :meth:`check_caller`).

        Raises:
            BrokerClosedError: the run has ended, before ``async_fn`` started or
                while it ran.
        """
        assert self.token is not None
        try:
            return trio.from_thread.run(async_fn, trio_token=self.token)
        except (trio.RunFinishedError, trio.Cancelled):
            # Given a token, trio runs async_fn in its system nursery, which is
            # cancelled only as the run ends: a Cancelled here says just that.
            raise BrokerClosedError(
                "the trio run the broker belonged to has ended"
            ) from None

    def read(self, read: Callable[[], R]) -> R:
        """Call ``read()`` where it is safe to look at the broker: in its run.

        For metric collectors, which other threads call (an HTTP server's, an
        exporter's): from there it runs through ``trio.from_thread.run_sync``
        and waits. From the run's own thread, before any run is known, or
        after the run has ended (then nothing changes the broker any more), it
        is called at once.
        """
        if self.token is None or self.is_current():
            return read()
        try:
            return trio.from_thread.run_sync(read, trio_token=self.token)
        except trio.RunFinishedError:
            return read()

    def spawn(self, async_fn: Callable[[R], Awaitable[None]], arg: R) -> None:
        """Start ``async_fn(arg)`` as a system task of the current run.

        Raises:
            RuntimeError: the run is shutting down.
        """
        trio.lowlevel.spawn_system_task(async_fn, arg)


class Pending(Generic[T]):
    """An injected message and the full ``BLOCK`` targets it still goes to."""

    __slots__ = ("full", "message")

    def __init__(self, message: Message[T], full: list[Target[T]]) -> None:
        self.message = message
        self.full = full


class Defaults:
    """A broker's options for a new subscription that gives none of its own."""

    __slots__ = ("block_timeout", "disconnect_after", "max_buffer_size", "policy")

    def __init__(
        self,
        max_buffer_size: int,
        policy: OverflowPolicy,
        disconnect_after: int,
        block_timeout: float | None,
    ) -> None:
        self.max_buffer_size = max_buffer_size
        self.policy = policy
        self.disconnect_after = disconnect_after
        self.block_timeout = block_timeout


class Delivery(Generic[T]):
    """A broker's pipeline and everything it reads: see the module doc."""

    __slots__ = (
        "cache",
        "cache_hits",
        "cache_misses",
        "closed",
        "defaults",
        "exports",
        "message_type",
        "on_subscribe",
        "published",
        "replies",
        "retained",
        "routes",
        "run",
        "tally",
    )

    def __init__(
        self,
        message_type: object,
        *,
        max_buffer_size: int,
        policy: OverflowPolicy,
        disconnect_after: int,
        block_timeout: float | None,
        match_cache_size: int,
        match_cache_bytes: int,
        max_retained: int,
    ) -> None:
        """The options of ``Broker()``, checked here, in its order."""
        if message_type is not None:
            check_message_type(message_type)
        self.message_type = message_type
        self.defaults = Defaults(
            check_int("max_buffer_size", max_buffer_size),
            check_policy(policy),
            check_int("disconnect_after", disconnect_after),
            check_timeout("block_timeout", block_timeout),
        )
        self.routes: RouteTable[T] = RouteTable(
            check_int("match_cache_size", match_cache_size, minimum=0),
            check_int("match_cache_bytes", match_cache_bytes, minimum=0),
        )
        # The hot path reads the cache straight from here; it is never replaced.
        self.cache = self.routes.cache
        self.retained: RetainedStore[Message[T]] = RetainedStore(
            check_int("max_retained", max_retained, minimum=0)
        )
        self.run = TrioRun()
        self.tally = Tally(detach=self.routes.discard)
        # 88 random bits: reply subjects of brokers in other processes, met
        # across a NATS bridge, do not collide.
        self.replies: Replies[T] = Replies(f"{REPLY_ROOT}.{secrets.token_hex(11)}.")
        # the NATS bridges' exports open now: what they import skips them all
        self.exports: set[_Inbox[T]] = set()
        self.published = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.closed = False
        # Set by an integration (trio_pubsub.otel) to wrap each subscription's
        # scope; subscribing is not on the publish path, so this costs nothing.
        self.on_subscribe: (
            Callable[
                [AbstractAsyncContextManager[Subscription[T]]],
                AbstractAsyncContextManager[Subscription[T]],
            ]
            | None
        ) = None

    def describe(self) -> str:
        """The broker's ``repr``."""
        kind = "" if self.message_type is None else type_name(self.message_type)
        state = "closed" if self.closed else "open"
        return (
            f"<trio_pubsub.Broker[{kind}] {state}, "
            f"{len(self.routes)} subscriptions, {self.published} published>"
        )

    def check_open(self) -> None:
        """Raises: BrokerClosedError: the broker is closed."""
        if self.closed:
            raise BrokerClosedError("the broker is closed")

    def check_payload(self, payload: object) -> T:
        """Raises: TypeError: ``payload`` is not of the broker's ``message_type``."""
        message_type = self.message_type
        if message_type is not None and not isinstance(payload, message_type):  # type: ignore[arg-type]
            raise payload_error(message_type, payload)
        return typing.cast("T", payload)

    # -- subscriptions ----------------------------------------------------------

    def subscribe(
        self,
        pattern: str,
        *,
        queue: str | None,
        max_buffer_size: int | None,
        policy: OverflowPolicy | None,
        disconnect_after: int | None,
        name: str | None,
        block_timeout: float | None,
        report_gaps: bool,
    ) -> AbstractAsyncContextManager[Subscription[T]]:
        """``Broker.subscribe``: everything checked here, before anything changes."""
        if report_gaps is not False and report_gaps is not True:
            raise TypeError(f"report_gaps must be a bool, not {report_gaps!r}")
        tokens = parse_pattern(pattern)
        if tokens[0] == REPLY_ROOT:
            raise reserved_pattern(pattern)
        inbox = self.new_inbox(
            pattern,
            tokens,
            queue=parse_queue(queue),
            policy=None if policy is None else check_policy(policy),
            max_buffer_size=max_buffer_size,
            disconnect_after=disconnect_after,
            name=check_name(name),
            block_timeout=check_timeout("block_timeout", block_timeout),
            report_gaps=report_gaps,
        )
        self.check_open()
        scope = SubscriptionScope(inbox, self.attach)
        hook = self.on_subscribe
        return scope if hook is None else hook(scope)

    def new_inbox(
        self,
        pattern: str,
        tokens: tuple[str, ...],
        *,
        policy: OverflowPolicy | None,
        max_buffer_size: int | None,
        disconnect_after: int | None,
        queue: str | None = None,
        also: tuple[tuple[str, ...], ...] = (),
        name: str | None = None,
        block_timeout: float | None = None,
        report_gaps: bool = False,
    ) -> _Inbox[T]:
        """A new inbox with the broker's defaults where an option is ``None``.

        Options are checked by the caller, but for the two sizes.
        """
        defaults = self.defaults
        if block_timeout is None:
            block_timeout = defaults.block_timeout
        return _Inbox(
            pattern,
            tokens,
            queue=queue,
            also=also,
            name=name,
            block_timeout=math.inf if block_timeout is None else block_timeout,
            report_gaps=report_gaps,
            policy=defaults.policy if policy is None else policy,
            max_buffer_size=(
                defaults.max_buffer_size
                if max_buffer_size is None
                else check_int("max_buffer_size", max_buffer_size)
            ),
            disconnect_after=(
                defaults.disconnect_after
                if disconnect_after is None
                else check_int("disconnect_after", disconnect_after)
            ),
            tally=self.tally,
        )

    @enable_ki_protection
    def attach(self, inbox: _Inbox[T]) -> None:
        """Register ``inbox`` and hand it its retained messages, in one step.

        Everything that can raise comes before registering, so an entry that
        raises leaves nothing behind; but a log call about a retained message
        the inbox drops can raise too (a user's logging filter), and then the
        inbox leaves again at once, what it took counted as dropped. No
        checkpoint lies between registering and the retained messages: they
        come first, live ones after, none missed and none twice.
        """
        self.check_open()
        if self.run.learn():
            self.tally.clock = None  # the clock of the run before
        retained = (
            self.retained.matching(inbox.tokens)
            if self.retained and inbox.queue is None and not inbox.also
            else []
        )
        self.routes.add(inbox)
        try:
            inbox.take_retained(retained)
        except BaseException:
            inbox.close()  # off the routes again
            raise

    # -- the pipeline -----------------------------------------------------------

    def prepare(
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
            targets: tuple[Target[T], ...] | None = self.cache.get(subject)
        except TypeError:  # not even hashable: let parsing say what is wrong
            targets = None
        if targets is None or type(subject) is not str:
            tokens = parse_subject(subject)
            if tokens[0] == REPLY_ROOT:
                self.replies.check(subject)
            if type(subject) is str:
                targets = None
            else:  # a str subclass: routed, and received, as the plain str
                subject = str.__str__(subject)
                targets = self.cache.get(subject)
                self.cache_hits += targets is not None
        else:
            self.cache_hits += 1
        message_type = self.message_type
        if message_type is not None and not isinstance(payload, message_type):  # type: ignore[arg-type]
            raise payload_error(message_type, payload)
        if headers is None:  # new_message() without its call, as most are
            message: Message[T] = new_object(Message)
            set_subject(message, subject)
            set_payload(message, payload)
        else:
            message = new_message(subject, payload, headers)
        if targets is None:
            # A closed broker caches nothing: every call on it gets here.
            self.check_open()
            self.cache_misses += 1
            # A reply subject reaches its waiting request, or nobody: never
            # the trie, never the cache.
            targets = (
                self.replies.targets(subject)
                if tokens[0] == REPLY_ROOT
                else self.routes.targets(subject, tokens)
            )
        return message, targets

    def offer(
        self,
        message: Message[T],
        targets: tuple[Target[T], ...],
        full: list[Target[T]],
    ) -> int:
        """Offer ``message`` to every target without waiting; count acceptances.

        Full ``BLOCK`` targets are appended to ``full`` for the caller to wait on.
        """
        accepted = 0
        for target in targets:
            taken = target.offer(message)
            if taken < 0:  # WAIT: a full BLOCK buffer
                full.append(target)
            else:
                accepted += taken
        return accepted

    @enable_ki_protection
    async def publish(
        self,
        subject: str,
        payload: T,
        *,
        headers: Mapping[str, str] | None = None,
        retain: bool = False,
    ) -> int:
        """``Broker.publish``: the steps, and a wait for the full targets.

        While no ``BLOCK`` subscription is registered, no target can be full:
        it is a ``publish_nowait`` between two checkpoints.
        """
        if retain is not False and retain is not True:
            raise retain_error(retain)  # (before the checkpoint, as documented)
        if retain:
            check_retainable(subject)
        await trio.lowlevel.checkpoint_if_cancelled()
        if self.run.token is None:
            self.run.learn()
        if not self.routes.blocking:
            accepted = self.publish_nowait(
                subject, payload, headers=headers, retain=retain
            )
            await trio.lowlevel.cancel_shielded_checkpoint()
            return accepted
        message, targets = self.prepare(subject, payload, headers)
        if retain:
            self.retained.put(message.subject, message)
        full: list[Target[T]] = []
        accepted = self.offer(message, targets, full)
        if full:
            for target in full:
                accepted += await target.put(message)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()
        self.published += 1
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
        """``Broker.publish_nowait``: see there.

        The one inlined copy of :meth:`prepare` (its cache-hit path) and
        :meth:`offer` (see the module doc). Below its ``limit``, a routed
        target takes a message by an append.
        """
        if retain is not False and retain is not True:
            raise retain_error(retain)
        if retain:
            check_retainable(subject)
        cached = self.cache.get(subject) if type(subject) is str else None
        targets: tuple[Routed[T], ...]
        if cached is None or headers is not None:
            message, found = self.prepare(subject, payload, headers)
            if self.replies.waiting:  # found may hold a Reply: no appends
                return self._publish_nowait(message, found, retain)
            # no Reply among them: all routed (no typing.cast, a call here)
            targets = found  # type: ignore[assignment]
        else:
            targets = cached
            self.cache_hits += 1
            message_type = self.message_type
            if message_type is not None and not isinstance(payload, message_type):  # type: ignore[arg-type]
                raise payload_error(message_type, payload)
            message = new_object(Message)
            set_subject(message, subject)
            set_payload(message, payload)
        if self.routes.blocking:
            for target in targets:
                # Below its limit, a target cannot be full.
                if len(target.buffer) >= target.limit and target.would_block():
                    raise trio.WouldBlock
        if retain:
            self.retained.put(message.subject, message)
        appended = accepted = 0
        for target in targets:
            buffer = target.buffer
            if len(buffer) < target.limit:
                buffer.append(message)
                appended += 1
            else:
                accepted += target.offer(message)  # (it cannot say WAIT now)
        self.tally.delivered += appended
        self.published += 1
        return accepted + appended

    def _publish_nowait(
        self,
        message: Message[T],
        targets: tuple[Target[T], ...],
        retain: bool,
    ) -> int:
        """The rest of :meth:`publish_nowait` through the steps: all or nothing."""
        if self.routes.blocking:
            for target in targets:
                if target.would_block():
                    raise trio.WouldBlock
        if retain:
            self.retained.put(message.subject, message)
        full: list[Target[T]] = []
        accepted = self.offer(message, targets, full)
        assert not full, "no target would block"
        self.published += 1
        return accepted

    # -- imports from a NATS bridge ----------------------------------------------

    @enable_ki_protection
    def inject(
        self, subject: str, payload: T, headers: Mapping[str, str] | None
    ) -> Pending[T] | None:
        """Publish to every matching subscription but the exports, at once.

        What came in from NATS through any bridge of the broker goes out through
        none of them: one bridge importing what another exports would otherwise
        pass each message round for ever.

        Returns ``None`` when it is published, or what :meth:`finish` has left
        to do. Takes no checkpoint (the bridge takes one per batch).

        Raises:
            InvalidSubjectError, TypeError, BrokerClosedError: as ``publish`` does.
        """
        exports = self.exports
        if not self.routes.blocking and headers is None:
            cached = self.cache.get(subject)
            if cached is not None and (not exports or exports.isdisjoint(cached)):
                # No export among them, and none can be full: publish_nowait
                self.publish_nowait(subject, payload)
                return None
        message, targets = self.prepare(subject, payload, headers)
        if exports and not exports.isdisjoint(targets):
            targets = _without(targets, exports)
        full: list[Target[T]] = []
        self.offer(message, targets, full)
        if full:
            return Pending(message, full)
        self.published += 1
        return None

    @enable_ki_protection
    def inject_request(
        self,
        subject: str,
        payload: T,
        headers: Mapping[str, str] | None,
    ) -> tuple[Pending[T] | None, Reply[T] | None]:
        """:meth:`inject` a request, as ``Broker.request`` publishes one.

        Returns what :meth:`finish` has left to do, and the reply to wait on
        for the answer, then close: ``None`` when no subscription took the
        request (then it is a plain message, published to nobody or dropped
        by all).
        """
        message, targets = self.prepare(subject, payload, headers)
        exports = self.exports
        if exports and not exports.isdisjoint(targets):
            targets = _without(targets, exports)
        reply: Reply[T] | None = None
        if targets:
            reply = self.replies.open(message.subject)
            message = request_message(message, reply.subject, self.respond)
        full: list[Target[T]] = []
        accepted = self.offer(message, targets, full)
        if reply is not None and not accepted and not full:
            reply.close()
            reply = None
        if full:
            return Pending(message, full), reply
        self.published += 1
        return None, reply

    @enable_ki_protection
    async def finish(self, pending: Pending[T]) -> None:
        """Wait for room in each full target of ``pending``, as ``publish`` does.

        Raises:
            BrokerClosedError: the broker was closed while it waited.
        """
        for target in pending.full:
            await target.put(pending.message)
        self.published += 1

    # -- request/reply -----------------------------------------------------------

    @enable_ki_protection
    async def request(
        self,
        subject: str,
        payload: T,
        timeout: float,  # noqa: ASYNC109 (NATS's request takes one too)
        headers: Mapping[str, str] | None,
    ) -> Message[T]:
        """``Broker.request``: see there."""
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
        if self.run.token is None:
            self.run.learn()
        if seconds == math.inf:
            return await self._ask(subject, payload, headers)
        # A bare cancel scope: trio.fail_after's two context managers around
        # it would cost a tenth of a round trip more.
        with trio.CancelScope(deadline=trio.current_time() + seconds):
            return await self._ask(subject, payload, headers)
        raise trio.TooSlowError  # the deadline cancelled the scope

    async def _ask(
        self, subject: str, payload: T, headers: Mapping[str, str] | None
    ) -> Message[T]:
        """Publish the request and wait for its answer (``request`` minus the limit)."""
        message, targets = self.prepare(subject, payload, headers)
        if not targets:
            raise NoRespondersError(message.subject, "no subscription matches it")
        reply = self.replies.open(message.subject, trio.current_effective_deadline())
        try:
            request = request_message(message, reply.subject, self.respond)
            full: list[Target[T]] = []
            reply.takers += self.offer(request, targets, full)
            for target in full:
                reply.takers += await target.put(request)
            self.published += 1
            reply.publishing = False
            if reply.takers <= 0:
                raise NoRespondersError(message.subject, reply.why_nobody(len(targets)))
            return await reply.wait()
        finally:
            reply.close()

    @enable_ki_protection
    async def respond(
        self, subject: str, payload: T, *, headers: Mapping[str, str] | None = None
    ) -> int:
        """``publish(subject, ...)`` for a reply subject of ours, as ``respond()``.

        The same checks, counts and checkpoints, without parsing a subject
        known to be valid, or asking the match cache for one never in it.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        message = new_message(subject, self.check_payload(payload), headers)
        self.check_open()
        reply = self.replies.waiting.get(subject)
        accepted = 0 if reply is None else reply.offer(message)
        self.published += 1
        await trio.lowlevel.cancel_shielded_checkpoint()
        return accepted

    @enable_ki_protection
    def decline(self, reply: str) -> None:
        """NATS said "no responders" to the request whose reply subject is ``reply``.

        The export that took it has nobody behind it; if no other subscription
        took the request, it ends with ``NoRespondersError``. Nothing happens if
        the request has ended.
        """
        waiting = self.replies.waiting.get(reply)
        if waiting is not None:
            waiting.decline()

    def time_left(self, reply: str) -> float | None:
        """Seconds until the request whose reply subject is ``reply`` gives up.

        ``math.inf`` if it waits with no deadline; ``None`` if it no longer waits
        (answered, timed out, cancelled). For a bridge, which sends no request
        that nobody would read the answer of.
        """
        waiting = self.replies.waiting.get(reply)
        if waiting is None:
            return None
        return waiting.deadline - trio.current_time()

    # -- the rest -----------------------------------------------------------------

    @enable_ki_protection
    def clear_retained(self, subject: str) -> bool:
        """``Broker.clear_retained``: see there."""
        parse_subject(subject)  # the store takes valid subjects only
        return self.retained.discard(subject)

    def from_thread(self, publish: Callable[[], Awaitable[int]]) -> int:
        """``Broker.publish_from_thread``: run ``publish`` in the run, and wait."""
        self.run.check_caller("publish_from_thread()")
        self.check_open()
        return self.run.call(publish)

    def statistics(self) -> BrokerStatistics:
        """``Broker.statistics``: see there."""
        tally = self.tally
        return BrokerStatistics(
            published=self.published,
            delivered=tally.delivered,
            dropped=tally.dropped,
            disconnected=tally.disconnected,
            subscriptions=len(self.routes),
            cache_hits=self.cache_hits,
            cache_misses=self.cache_misses,
            cache_size=len(self.cache),
            cache_evictions=self.routes.evictions,
            retained=len(self.retained),
            retained_evicted=self.retained.evicted,
            requests_waiting=len(self.replies),
        )

    def subscriptions(self) -> tuple[SubscriptionInfo, ...]:
        """``Broker.subscriptions``: see there."""
        return tuple(
            SubscriptionInfo(
                name=inbox.name,
                pattern=inbox.pattern,
                queue=inbox.queue,
                policy=inbox.policy,
                max_buffer_size=inbox.max_buffer_size,
                statistics=inbox.statistics(),
            )
            for inbox in self.routes.registered
        )

    @enable_ki_protection
    async def close(self) -> None:
        """``Broker.aclose``: see there."""
        self.run.learn()
        if not self.closed:
            self.closed = True
            for inbox in self.routes.close():
                inbox.end()
            self.replies.fail_all(
                lambda: BrokerClosedError(
                    "the broker was closed while a request waited for its answer"
                )
            )
        await trio.lowlevel.checkpoint()

    async def enter(self) -> None:
        """``async with broker``: learn the run, and take a checkpoint."""
        self.run.learn()
        await trio.lowlevel.checkpoint()


def check_retainable(subject: object) -> None:
    """Refuse to retain on a reply subject: nothing of a request may stay."""
    if _reserved(subject):
        raise InvalidSubjectError(
            subject, "a reply subject is answered once, never retained"
        )


def _reserved(subject: object) -> typing.TypeGuard[str]:
    return isinstance(subject, str) and is_reserved(subject)


def _without(targets: tuple[R, ...], skip: set[typing.Any]) -> tuple[R, ...]:
    """``targets`` but those in ``skip``, in order.

    (A generator inline would make ``skip`` a cell of the caller's frame, at a
    cost to every call of the caller.)
    """
    return tuple(target for target in targets if target not in skip)
