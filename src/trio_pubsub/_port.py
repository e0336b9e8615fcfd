"""The one door through which the integrations reach into a broker.

They are ``trio_pubsub.nats``, ``trio_pubsub.prometheus`` and
``trio_pubsub.otel``.

A bridge needs four things that the public API does not offer, and gets them
here, so that a change inside the broker touches this module rather than the
bridge:

* :func:`export`: one subscription on several patterns, each message once and
  in order (a subject matching two of them goes out once);
* :func:`stop_routing`: route nothing more to it, keep what it holds;
* :func:`inject`: publish what came from NATS past every export of the
  broker (no echo, and no loop between two bridges of one broker), without a
  checkpoint (the bridge takes one per batch);
* :func:`finish`: wait, as ``publish`` does, for the full ``BLOCK``
  subscriptions an injected message is still due to;
* for requests across the bridge: :func:`reply_prefix` (the start of the
  broker's reply subjects, which the bridge listens on in NATS),
  :func:`inject_request` (a request from NATS, as :func:`inject` publishes a
  message, with a :class:`Reply` to wait on for the answer) and
  :func:`decline` (NATS said "no responders" to one of the broker's requests),
  :func:`time_left` (how long a request still waits) and :func:`is_reserved`
  (a subject under ``_INBOX.``, which nothing from NATS may be published on);
* for metric collectors, which other threads call: :func:`read_in_run`,
  and the one catalogue of per-subscription figures they all report,
  :func:`subscription_rows`;
  and for OpenTelemetry, :func:`on_subscribe`, a hook on every new scope.

It also passes on the option checks the bridge shares with the broker, and
the token matcher, for subjects from NATS that the broker's grammar refuses.
"""

from __future__ import annotations

import typing
from typing import Generic, TypeVar

import trio
from trio.lowlevel import enable_ki_protection

from ._message import new_message, request_message
from ._metrics import (
    LEFT as LEFT,
    SubscriptionRow as SubscriptionRow,
    subscription_rows as subscription_rows,
)
from ._options import (
    check_int as check_int,
    check_policy,
    check_seconds as check_seconds,
    payload_error,
)
from ._reply import Reply as Reply  # noqa: TC001 (re-exported for the bridge)
from ._subject import (
    REPLY_ROOT,
    SEPARATOR as SEPARATOR,
    is_reserved as is_reserved,
    parse_pattern,
    parse_queue as parse_queue,
    reserved_pattern,
    tokens_match as tokens_match,
)
from ._subscription import SubscriptionScope

if typing.TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from contextlib import AbstractAsyncContextManager

    from ._broker import Broker
    from ._groups import Target
    from ._inbox import _Inbox
    from ._message import Message
    from ._policy import OverflowPolicy
    from ._subscription import Subscription

T = TypeVar("T")
R = TypeVar("R")


def export(
    broker: Broker[T],
    patterns: Sequence[str],
    *,
    max_buffer_size: int,
    policy: OverflowPolicy,
) -> AbstractAsyncContextManager[Subscription[T]]:
    """One subscription on several ``patterns``: each message once, in order.

    It gets no retained messages, counts once in the broker's statistics, and
    is skipped by :func:`inject` while it is open.

    Raises:
        ValueError: ``patterns`` is empty, or an option is out of range.
        InvalidSubjectError, TypeError: as for ``Broker.subscribe``.
    """
    parsed: dict[tuple[str, ...], None] = {}
    for pattern in patterns:
        tokens = parse_pattern(pattern)
        if tokens[0] == REPLY_ROOT:
            raise reserved_pattern(pattern)
        parsed[tokens] = None
    if not parsed:
        raise ValueError("at least one pattern is needed")
    first, *rest = parsed
    inbox = broker._inbox(
        ", ".join(SEPARATOR.join(tokens) for tokens in parsed),
        first,
        also=tuple(rest),
        policy=check_policy(policy),
        max_buffer_size=check_int("max_buffer_size", max_buffer_size),
        disconnect_after=None,
    )
    broker._check_open()
    return _Export(broker, inbox)


class _Export(Generic[T]):
    """The scope of an export: registered, and known to :func:`inject`, inside."""

    __slots__ = ("_broker", "_inbox", "_scope")

    def __init__(self, broker: Broker[T], inbox: _Inbox[T]) -> None:
        self._broker = broker
        self._inbox = inbox
        self._scope = SubscriptionScope(inbox, broker._attach)

    async def __aenter__(self) -> Subscription[T]:
        subscription = await self._scope.__aenter__()
        self._broker._exports.add(self._inbox)
        return subscription

    async def __aexit__(self, *exc_info: object) -> None:
        self._broker._exports.discard(self._inbox)
        await self._scope.__aexit__(None, None, None)


@enable_ki_protection
def stop_routing(subscription: Subscription[T]) -> None:
    """Route nothing more to ``subscription``; it keeps what it holds.

    Its consumer then drains it and sees ``trio.EndOfChannel``; publishers
    waiting for room in it return normally. Idempotent.
    """
    subscription._inbox.drain()


class Pending(Generic[T]):
    """An injected message and the full ``BLOCK`` targets it still goes to."""

    __slots__ = ("full", "message")

    def __init__(self, message: Message[T], full: list[Target[T]]) -> None:
        self.message = message
        self.full = full


def check_unreserved(pattern: str) -> None:
    """Refuse a pattern (valid already) on the reserved reply subjects.

    Raises:
        InvalidSubjectError: its first token is ``_INBOX``.
    """
    if pattern.split(SEPARATOR, 1)[0] == REPLY_ROOT:
        raise reserved_pattern(pattern)


def reply_prefix(broker: Broker[T]) -> str:
    """``_INBOX.<random>.``: every reply subject of ``broker`` starts so."""
    return broker._replies.prefix


@enable_ki_protection
def inject(
    broker: Broker[T],
    subject: str,
    payload: T,
    headers: Mapping[str, str] | None,
) -> Pending[T] | None:
    """Publish to every matching subscription but the broker's exports, at once.

    What came in from NATS through any bridge of the broker goes out through
    none of them: one bridge importing what another exports would otherwise
    pass each message round for ever.

    Returns ``None`` when it is published, or what :func:`finish` has left to
    do. Takes no checkpoint.

    Raises:
        InvalidSubjectError, TypeError, BrokerClosedError: as ``publish`` does.
    """
    # The cache-hit path of _inject() and the broker's _snapshot(), written
    # out: every imported message takes it, once its subject is known.
    targets = broker._cache.get(subject) if headers is None else None
    if targets is None or type(subject) is not str:
        return _inject(broker, subject, payload, headers, ask=False)[0]
    broker._cache_hits += 1
    message_type = broker._message_type
    if message_type is not None and not isinstance(payload, message_type):
        raise payload_error(message_type, payload)
    message = new_message(subject, payload)
    exports = broker._exports
    if exports and not exports.isdisjoint(targets):
        targets = tuple(target for target in targets if target not in exports)
    full: list[Target[T]] = []
    broker._deliver(message, targets, full)
    if full:
        return Pending(message, full)
    broker._published += 1
    return None


@enable_ki_protection
def inject_request(
    broker: Broker[T],
    subject: str,
    payload: T,
    headers: Mapping[str, str] | None,
) -> tuple[Pending[T] | None, Reply[T] | None]:
    """:func:`inject` a request, as ``Broker.request`` publishes one.

    Returns what :func:`finish` has left to do, and the reply to wait on for
    the answer, then close: ``None`` when no subscription took the request
    (then it is a plain message, published to nobody or dropped by all).

    Raises:
        InvalidSubjectError, TypeError, BrokerClosedError: as ``publish`` does.
    """
    return _inject(broker, subject, payload, headers, ask=True)


def _inject(
    broker: Broker[T],
    subject: str,
    payload: T,
    headers: Mapping[str, str] | None,
    *,
    ask: bool,
) -> tuple[Pending[T] | None, Reply[T] | None]:
    message, targets = broker._snapshot(subject, payload, headers)
    exports = broker._exports
    if exports and not exports.isdisjoint(targets):
        targets = tuple(target for target in targets if target not in exports)
    reply: Reply[T] | None = None
    if ask and targets:
        reply = broker._replies.open(message.subject)
        message = request_message(message, reply.subject, broker._respond)
    full: list[Target[T]] = []
    accepted = broker._deliver(message, targets, full)
    if reply is not None and not accepted and not full:
        reply.close()
        reply = None
    if full:
        return Pending(message, full), reply
    broker._published += 1
    return None, reply


@enable_ki_protection
async def finish(broker: Broker[T], pending: Pending[T]) -> None:
    """Wait for room in each full target of ``pending``, as ``publish`` does.

    Raises:
        BrokerClosedError: the broker was closed while it waited.
    """
    for target in pending.full:
        await target.put(pending.message)
    broker._published += 1


@enable_ki_protection
def decline(broker: Broker[T], reply: str) -> None:
    """NATS answered "no responders" to the request whose reply subject is ``reply``.

    The export that took it has nobody behind it; if no other subscription
    took the request, it ends with ``NoRespondersError``. Nothing happens if
    the request has ended.
    """
    waiting = broker._replies.waiting.get(reply)
    if waiting is not None:
        waiting.decline()


def time_left(broker: Broker[T], reply: str) -> float | None:
    """Seconds until the request whose reply subject is ``reply`` gives up.

    ``math.inf`` if it waits with no deadline; ``None`` if it no longer waits
    (answered, timed out, cancelled). For a bridge, which sends no request
    that nobody would read the answer of.
    """
    waiting = broker._replies.waiting.get(reply)
    if waiting is None:
        return None
    return waiting.deadline - trio.current_time()


def read_in_run(broker: Broker[T], read: Callable[[], R]) -> R:
    """Call ``read()`` where it is safe to look at ``broker``: in its trio thread.

    For metric collectors, which other threads call (an HTTP server's, an
    exporter's): from there it runs through ``trio.from_thread.run_sync`` and
    waits. From the broker's own trio thread, before any run is known, or
    after its run has ended (then nothing changes the broker any more), it
    is called at once.
    """
    token = broker._run.token
    if token is None:
        return read()
    try:
        here: trio.lowlevel.TrioToken | None = trio.lowlevel.current_trio_token()
    except RuntimeError:
        here = None
    if here is token:
        return read()
    try:
        return trio.from_thread.run_sync(read, trio_token=token)
    except trio.RunFinishedError:
        return read()


def on_subscribe(
    broker: Broker[T],
    hook: Callable[
        [AbstractAsyncContextManager[Subscription[T]]],
        AbstractAsyncContextManager[Subscription[T]],
    ]
    | None,
) -> None:
    """Have ``hook`` wrap the scope of every subscription ``subscribe`` makes.

    ``None`` removes it. For trio_pubsub.otel, which watches what consumers
    receive; nothing on the publish path reads it.
    """
    broker._on_subscribe = hook
