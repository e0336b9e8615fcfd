"""open_bridge: a broker's subjects to and from a NATS server.

The bridge is split by job: this module opens and closes it, checks its
options and adds up its statistics; ``_export`` takes local messages out
(one task on one subscription of the broker on all the outbound patterns, so
a subject that two of them match goes out once, and in order); ``_import``
brings messages and requests in (one task per inbound pattern, past every
export of the broker, so nothing imported goes back out); ``_link`` runs
nats-py on its own asyncio loop in a thread, and ``_client`` holds every
guard over nats-py's internals.

Every message the export subscription was routed ends in exactly one counter
once the bridge is closed: exported (confirmed by the server), unconfirmed
(sent as the connection broke), or one of the causes of ``outbound_dropped``.

Requests cross both ways. A local request that the export takes goes out with
its reply subject (``_INBOX.<broker>.<random>``); the bridge listens on NATS for
every reply subject of its broker (one subscription, ``_INBOX.<broker>.*``)
and imports the answers, which reach the waiting request or nobody; a "no
responders" status from the server ends the request with
``NoRespondersError`` unless a local subscription took it too. A request from
NATS on an inbound pattern is published locally as a request; one task per
request waits (at most ``request_timeout``) for the first local answer and
sends it to the NATS reply subject, counted as the exports are.
"""

from __future__ import annotations

import random
import typing

# Runtime imports, so that the API reference can resolve the annotations.
from collections.abc import (  # noqa: TC003
    AsyncIterator,
    Callable,
    Iterable,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, TypeVar

import attrs
import trio

from .. import (
    Broker,
    InvalidSubjectError,
    OverflowPolicy,
    Subscription,
    _port,
    validate_pattern,
    validate_subject,
)
from ._export import Exporter, check_outbound_policy
from ._import import Importer
from ._link import Backoff, Link

T = TypeVar("T")


@attrs.frozen(kw_only=True)
class BridgeStatistics:
    """A snapshot of a bridge's counters, from ``Bridge.statistics()``."""

    exported: int
    """Messages sent to NATS and confirmed by the server (a PING/PONG after them),
    answers to requests from NATS included."""
    imported: int
    """Messages from NATS published into the broker, answers to the broker's
    requests included."""
    dropped: int
    """Messages lost both ways (``outbound_dropped + inbound_dropped``)."""
    reconnects: int
    """Times the connection was restored after a break."""
    connected: bool
    """Whether the connection is up now."""
    outbound_dropped: int
    """Local messages not exported, because the outbound queue overflowed (its policy),
    ``encode`` failed, a header is not valid in NATS, the server refused it, the
    connection was closed for good, or the bridge closed before sending it."""
    inbound_dropped: int
    """Messages from NATS not imported, because the inbound queue was full, ``decode``
    failed, the subject or payload is not valid in the broker, the broker is
    closed, or the bridge closed before importing it."""
    unconfirmed: int
    """Messages sent as the connection broke, which may or may not have reached
    the server (core NATS delivers at most once)."""
    outbound_pending: int
    """Local messages waiting to be exported now, in the outbound queue or
    handed to the connection's thread and not yet sent and confirmed."""
    closed: bool
    """Whether the connection is closed for good (no reconnect attempt was left,
    or the bridge has closed); then nothing more is exported or imported."""
    requests_refused: int = 0
    """Requests from NATS not published into the broker, because their reply
    subject is not one the bridge answers (not under ``reply_prefixes``, one
    of the broker's own, or one the bridge imports), or because
    ``max_requests`` were already waiting for a local answer (those are
    answered "no responders"). Included in ``inbound_dropped``."""
    requests_expired: int = 0
    """Local requests not sent to NATS because nobody waited for their answer
    any more when their turn came (their deadline passed, in an outage for
    example). Included in ``outbound_dropped``."""


class Bridge(Generic[T]):
    """A running bridge, as :func:`~trio_pubsub.nats.open_bridge` yields it."""

    def __init__(
        self,
        broker: Broker[T],
        *,
        encode: Callable[[T], bytes],
        decode: Callable[[bytes], T],
        outbound: list[str],
        inbound: list[str],
        prefix: str | None,
        queue: str | None,
        max_outbound: int,
        max_outbound_bytes: int,
        outbound_policy: OverflowPolicy,
        drain: bool,
        drain_timeout: float,
        request_timeout: float,
        max_requests: int,
        reply_prefixes: list[str],
    ) -> None:
        self._broker = broker
        self._encode = encode
        self._decode = decode
        self._outbound = outbound
        self._inbound = inbound
        self._head = "" if prefix is None else prefix + _port.SEPARATOR
        self._queue = queue
        self._max_outbound = max_outbound
        self._max_outbound_bytes = max_outbound_bytes
        self._outbound_policy = outbound_policy
        self._drain = drain
        self._drain_timeout = drain_timeout
        self._request_timeout = request_timeout
        self._max_requests = max_requests
        self._reply_prefixes = reply_prefixes
        self._link: Link | None = None
        self._exporter: Exporter[T] | None = None
        self._importer: Importer[T] | None = None
        self._export_scope: AbstractAsyncContextManager[Subscription[T]] | None = None
        # The export and import tasks' cancel scopes, and whether to start none.
        self._pumps: list[trio.CancelScope] = []
        self._pumps_stopped = False
        self._closing = False
        self._closed = trio.Event()

    @property
    def broker(self) -> Broker[T]:
        """The broker it bridges."""
        return self._broker

    def statistics(self) -> BridgeStatistics:
        """Return a snapshot of the bridge's counters."""
        link, exporter, importer = self._link, self._exporter, self._importer
        assert link is not None
        assert exporter is not None
        assert importer is not None
        counters = link.counters
        sub = exporter.sub
        sub_dropped = 0 if sub is None else sub.statistics().dropped
        outbound_dropped = (
            exporter.lost + counters.refused + counters.expired + sub_dropped
        )
        inbound_dropped = importer.lost + counters.slow_consumer + counters.malformed
        return BridgeStatistics(
            exported=counters.exported,
            imported=importer.imported,
            dropped=outbound_dropped + inbound_dropped,
            reconnects=counters.reconnects,
            connected=counters.connected,
            outbound_dropped=outbound_dropped,
            inbound_dropped=inbound_dropped,
            unconfirmed=counters.unconfirmed,
            outbound_pending=exporter.pending(),
            closed=counters.closed,
            requests_refused=importer.refused,
            requests_expired=exporter.expired + counters.expired,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closing else "open"
        return (
            f"<trio_pubsub.nats.Bridge {state}, outbound={self._outbound!r}, "
            f"inbound={self._inbound!r}>"
        )

    # -- opening and closing -----------------------------------------------------

    async def _connect(
        self,
        connect_options: dict[str, Any],
        max_inbound: int,
        max_inbound_bytes: int,
        confirm_timeout: float,
        backoff: Backoff,
    ) -> None:
        link = self._link = Link(
            trio.lowlevel.current_trio_token(),
            max_inbound=max_inbound,
            max_inbound_bytes=max_inbound_bytes,
            connect_options=connect_options,
            flush_timeout=confirm_timeout,
            backoff=backoff,
        )
        exporter = self._exporter = Exporter(
            self._broker,
            link,
            encode=self._encode,
            head=self._head,
            max_outbound_bytes=self._max_outbound_bytes,
        )
        self._importer = Importer(
            self._broker,
            link,
            decode=self._decode,
            head=self._head,
            inbound=self._inbound,
            request_timeout=self._request_timeout,
            max_requests=self._max_requests,
            reply_prefixes=self._reply_prefixes,
            send_answer=exporter.send_answer,
        )
        link.start()
        try:
            await link.connect()
        except BaseException as error:
            await self._close(drain=False)
            if isinstance(error, Exception):
                raise ConnectionError(
                    f"could not connect to NATS at {connect_options['servers']}: "
                    f"{type(error).__name__}: {error}"
                ) from error
            raise

    def _pump(self) -> trio.CancelScope:
        """The cancel scope of a new export or import task (cancelled at close)."""
        scope = trio.CancelScope()
        self._pumps.append(scope)
        if self._pumps_stopped:
            scope.cancel()
        return scope

    async def _start(self, nursery: trio.Nursery) -> None:
        link, exporter, importer = self._link, self._exporter, self._importer
        assert link is not None
        assert exporter is not None
        assert importer is not None
        importer.nursery = nursery
        try:
            if self._outbound:
                # Listening for answers before a request can go out.
                answers = await link.subscribe_replies(_port.reply_prefix(self._broker))
                nursery.start_soon(importer.run, answers, self._pump())
                self._export_scope = _port.export(
                    self._broker,
                    self._outbound,
                    max_buffer_size=self._max_outbound,
                    policy=self._outbound_policy,
                )
                sub = exporter.sub = await self._export_scope.__aenter__()
                nursery.start_soon(exporter.run, sub, self._pump())
            else:
                exporter.done.set()
            if self._inbound:
                # One lane, and one task, per pattern: a full BLOCK subscriber
                # holds back only the pattern whose message waits for it.
                lanes = await link.subscribe(
                    [self._head + pattern for pattern in self._inbound],
                    self._queue or "",
                )
                for lane, pattern in zip(lanes, self._inbound, strict=True):
                    # (only a pattern starting with a wildcard matches subjects
                    # under _INBOX: the others need no look at each message)
                    lane.screened = pattern.split(_port.SEPARATOR, 1)[0] in ("*", ">")
                    nursery.start_soon(importer.run, lane, self._pump())
        except BaseException:
            await self._close(drain=False)
            raise

    async def aclose(self) -> None:
        """Close the bridge: stop both ways, close the connection, end the thread.

        With ``drain=True`` (and not cancelled) it first exports what is
        queued and imports what NATS still holds for it, for at most
        ``drain_timeout`` seconds. What is left is counted as dropped.
        Idempotent; the bridge is closed even if this call is cancelled.
        """
        await self._close(drain=self._drain)

    async def _close(self, *, drain: bool) -> None:
        """Close once, shielded; a later call waits for the first to finish.

        Without ``drain`` when the block was cancelled or raised, or opening
        failed.
        """
        with trio.CancelScope(shield=True):
            if self._closing:
                await self._closed.wait()
                return
            self._closing = True
            await self._shut(drain=drain)

    async def _shut(self, *, drain: bool) -> None:
        link, exporter, importer = self._link, self._exporter, self._importer
        assert link is not None
        try:
            if drain:
                assert exporter is not None
                assert importer is not None
                with trio.move_on_after(self._drain_timeout):
                    await self._drain_all(link, exporter, importer)
            self._pumps_stopped = True
            answering = set() if importer is None else importer.answering
            if importer is not None:
                importer.stopped = True
            for scope in [*self._pumps, *answering]:
                scope.cancel()
            sub = None if exporter is None else exporter.sub
            if sub is not None:
                sub.close()  # what it still holds: dropped, counted
            if self._export_scope is not None:
                await self._export_scope.__aexit__(None, None, None)
            # nats-py's close is quick on loopback and bounded elsewhere by its
            # own timeouts; the limit here guards against a wedged connection.
            with trio.move_on_after(10):
                await link.close(drain=False)
            if importer is not None:
                importer.lost += link.queued_inbound()
        finally:
            await link.stop()
            self._closed.set()

    async def _drain_all(
        self, link: Link, exporter: Exporter[T], importer: Importer[T]
    ) -> None:
        if exporter.sub is not None:
            exporter.sub.drain()
            await exporter.done.wait()
        while importer.answering:  # noqa: ASYNC110 (each ends within request_timeout)
            await trio.sleep(0.005)
        await link.wait_sent()
        # nats-py's drain: the inbound subscriptions stop, what they hold still
        # comes in (the import tasks are running), publishes are flushed.
        await link.close(drain=True)
        while link.queued_inbound() or importer.importing:  # noqa: ASYNC110
            await trio.sleep(0.005)  # polls a deque the loop's thread fills


def _patterns(kind: str, patterns: Iterable[str]) -> list[str]:
    if isinstance(patterns, str):
        raise TypeError(
            f"{kind} must be a list of patterns, not a str: write [{patterns!r}]"
        )
    out = []
    for pattern in patterns:
        validate_pattern(pattern)
        _port.check_unreserved(pattern)
        if kind == "inbound":
            _check_nats_tokens(pattern, "pattern")
        out.append(pattern)
    return list(dict.fromkeys(out))


def _reply_prefixes(prefixes: Iterable[str]) -> list[str]:
    if isinstance(prefixes, str):
        raise TypeError(
            f"reply_prefixes must be a list of subjects, not a str: write "
            f"[{prefixes!r}]"
        )
    out = []
    for prefix in prefixes:
        validate_subject(prefix)
        out.append(prefix)
    return out


def _check_nats_tokens(text: str, kind: str) -> None:
    """Refuse what NATS subscribes to stricter than the broker's grammar.

    A token that merely contains ``*`` or ``>`` (``a*``, ``>>``) is a literal
    here, but NATS clients refuse it in a subscription (nats-py raises
    ``BadSubjectError`` after connecting), so an inbound pattern or a prefix
    with one is refused at the call.
    """
    for token in text.split("."):
        if token not in ("*", ">") and ("*" in token or ">" in token):
            raise InvalidSubjectError(
                text,
                f"token {token!r}: NATS allows '*' and '>' only as whole tokens "
                "in what it subscribes to",
                kind=kind,
            )


def check_servers(servers: str | Sequence[str]) -> list[str]:
    """The server URLs as a list (for both bridges).

    Raises:
        ValueError: there is none.
        TypeError: one is not a non-empty ``str``.
    """
    listed: list[object] = [servers] if isinstance(servers, str) else list(servers)
    if not listed:
        raise ValueError("servers must name at least one NATS server URL")
    for url in listed:
        if not isinstance(url, str) or not url:
            raise TypeError(f"a server must be a non-empty str URL, not {url!r}")
    return typing.cast("list[str]", listed)


@asynccontextmanager
async def open_bridge(
    broker: Broker[T],
    servers: str | Sequence[str],
    *,
    encode: Callable[[T], bytes],
    decode: Callable[[bytes], T],
    outbound: Iterable[str] = (),
    inbound: Iterable[str] = (),
    prefix: str | None = None,
    queue: str | None = None,
    max_outbound: int = 10_000,
    max_outbound_bytes: int = 16 * 1024 * 1024,
    outbound_policy: OverflowPolicy = OverflowPolicy.DROP_NEWEST,
    max_inbound: int = 10_000,
    max_inbound_bytes: int = 16 * 1024 * 1024,
    drain: bool = False,
    drain_timeout: float = 30.0,
    name: str | None = None,
    connect_timeout: float = 2.0,
    reconnect_time_wait: float = 0.5,
    max_reconnect_wait: float = 5.0,
    max_reconnect_attempts: int = -1,
    ping_interval: float = 10.0,
    confirm_timeout: float = 10.0,
    request_timeout: float = 10.0,
    max_requests: int = 1000,
    reply_prefixes: Iterable[str] = ("_INBOX",),
) -> AsyncIterator[Bridge[T]]:
    """Bridge ``broker`` to a NATS server for the body of an ``async with`` block.

    Messages published in ``broker`` on a subject matching an ``outbound``
    pattern are sent to NATS; messages from NATS on an ``inbound`` pattern are
    published into ``broker``, through its subscriptions' policies. Each
    inbound pattern is imported on its own, in order: a full ``BLOCK``
    subscriber holds back the pattern whose message waits for it, and no
    other pattern, nor the answers to the broker's requests. A message
    imported is never exported again. Once the block is entered, the inbound
    subscriptions are active on the server and the outbound one in the
    broker.

    Args:
        broker: The broker to bridge.
        servers: A NATS URL (``"nats://127.0.0.1:4222"``) or a list of them.
        encode: Turns a payload into ``bytes`` (see :func:`encode_json`).
        decode: Turns ``bytes`` into a payload (see :func:`decode_json`).
        outbound: Patterns of local subjects to export.
        inbound: Patterns of NATS subjects to import (without ``prefix``).
        prefix: A literal subject put before every subject on the NATS side:
            local ``a.b`` is ``PREFIX.a.b`` there, and back.
        queue: Import as a NATS queue group: each message on ``inbound`` goes
            to one of the bridges with this queue name, across processes.
        max_outbound: Capacity of the outbound queue (an int >= 1).
        max_outbound_bytes: The most encoded bytes waiting to be sent and
            confirmed (about; five messages more at most), 16 MiB by default.
        outbound_policy: What a full outbound queue does: ``DROP_NEWEST``,
            ``DROP_OLDEST`` or ``BLOCK`` (local publishers wait).
        max_inbound: The most messages each inbound pattern's queue holds
            between NATS and the broker, and as many in nats-py's queue
            behind it (an int >= 1); beyond, they are dropped and counted.
        max_inbound_bytes: As ``max_inbound``, in payload bytes (16 MiB by
            default); an empty queue takes one message of any size the
            server allows.
        drain: On a normal exit, first export what is queued and import what
            NATS still holds for the bridge.
        drain_timeout: The most seconds a drain takes.
        name: The connection's name, as the NATS server shows it.
        connect_timeout: Seconds to wait for each connection attempt.
        reconnect_time_wait: Seconds before the first attempt to reconnect;
            each further one waits twice as long as the one before, up to
            ``max_reconnect_wait``, and every wait is drawn at random between
            half of that and all of it, so that many processes that lost one
            server do not all come back in the same instant.
        max_reconnect_wait: The longest wait between two attempts (seconds).
        max_reconnect_attempts: Attempts before giving up for good; -1: never.
        ping_interval: Seconds between two PINGs on an idle connection; after
            two unanswered ones the connection is taken as dead and replaced,
            so a server that stops answering is noticed within about three
            times this (30 s by default).
        confirm_timeout: Seconds to wait for the server's PONG that confirms
            what was sent before it; what it does not confirm in time counts
            as unconfirmed.
        request_timeout: Seconds to wait for the first local answer to a
            request from NATS (a message with a reply subject on an inbound
            pattern) before giving up on it; the requester's own timeout is
            not known here. An answer is sent to the requester and counted as
            exported.
        max_requests: The most requests from NATS waiting for a local answer
            at once; one more is answered "no responders" at once (NATS's
            503 status) and counted in ``requests_refused``.
        reply_prefixes: Subjects under which the reply subjects of requests
            from NATS must lie (``_INBOX``: ``_INBOX.<anything>``, what NATS
            clients make). A request whose reply subject lies elsewhere, is
            one of the broker's own, or is one that the bridge imports, is not
            imported (counted in ``requests_refused``): an answer goes only
            where a requester waits for it. ``()`` refuses every request.

    Requests cross in both directions: a local
    :meth:`trio_pubsub.Broker.request` on an outbound subject reaches
    responders in NATS (and ends with ``NoRespondersError`` when the server
    says none listens there and no local subscription took it), and a request
    from NATS on an inbound subject reaches local responders (see
    :doc:`/how-to/request-reply`).

    Raises:
        ConnectionError: no server could be reached on entry.
        InvalidSubjectError: a pattern, ``prefix`` or one of
            ``reply_prefixes`` breaks the subject grammar,
            a pattern's first token is ``_INBOX`` (reserved for reply
            subjects), or an inbound pattern (or the prefix, with inbound
            patterns) has ``*`` or ``>`` inside a token, which NATS refuses to
            subscribe to.
        TypeError: an argument has the wrong type.
        ValueError: an argument is out of range, or there is nothing to bridge.
    """
    outbound_list = _patterns("outbound", outbound)
    prefixes = _reply_prefixes(reply_prefixes)
    inbound_list = _patterns("inbound", inbound)
    if not outbound_list and not inbound_list:
        raise ValueError("nothing to bridge: give outbound or inbound patterns")
    if prefix is not None:
        validate_subject(prefix)
        if inbound_list:
            _check_nats_tokens(prefix, "subject")
    queue = _port.parse_queue(queue)
    check_outbound_policy(outbound_policy)
    _port.check_int("max_outbound", max_outbound)
    _port.check_int("max_outbound_bytes", max_outbound_bytes)
    _port.check_int("max_inbound", max_inbound)
    _port.check_int("max_inbound_bytes", max_inbound_bytes)
    _port.check_int("max_requests", max_requests)
    _port.check_seconds("drain_timeout", drain_timeout)
    _port.check_seconds("connect_timeout", connect_timeout)
    _port.check_seconds("reconnect_time_wait", reconnect_time_wait)
    _port.check_seconds("max_reconnect_wait", max_reconnect_wait)
    if max_reconnect_wait < reconnect_time_wait:
        raise ValueError(
            f"max_reconnect_wait ({max_reconnect_wait}) must be at least "
            f"reconnect_time_wait ({reconnect_time_wait})"
        )
    _port.check_int("max_reconnect_attempts", max_reconnect_attempts, minimum=-1)
    _port.check_seconds("ping_interval", ping_interval)
    _port.check_seconds("confirm_timeout", confirm_timeout)
    _port.check_seconds("request_timeout", request_timeout)
    if not (callable(typing.cast("object", encode)) and callable(decode)):
        raise TypeError("encode and decode must be callables")
    connect_options: dict[str, Any] = {
        "servers": check_servers(servers),
        "name": name,
        "no_echo": True,  # what the bridge sends never comes back to it
        "allow_reconnect": True,
        "connect_timeout": connect_timeout,
        "reconnect_time_wait": reconnect_time_wait,
        "max_reconnect_attempts": max_reconnect_attempts,
        "ping_interval": ping_interval,
        "max_outstanding_pings": 2,
    }
    bridge = Bridge(
        broker,
        encode=encode,
        decode=decode,
        outbound=outbound_list,
        inbound=inbound_list,
        prefix=prefix,
        queue=queue,
        max_outbound=max_outbound,
        max_outbound_bytes=max_outbound_bytes,
        outbound_policy=outbound_policy,
        drain=drain,
        drain_timeout=drain_timeout,
        request_timeout=request_timeout,
        max_requests=max_requests,
        reply_prefixes=prefixes,
    )
    backoff = Backoff(reconnect_time_wait, max_reconnect_wait, random.uniform)
    await bridge._connect(
        connect_options, max_inbound, max_inbound_bytes, confirm_timeout, backoff
    )
    try:
        async with trio.open_nursery() as nursery:
            await bridge._start(nursery)
            try:
                yield bridge
            except BaseException:
                await bridge._close(drain=False)
                raise
            await bridge.aclose()
    except BaseExceptionGroup as group:
        # The two tasks raise nothing of their own: what the group holds is the
        # body's exception (or the start's), which the caller should see as is.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise  # pragma: no cover - never more than one
