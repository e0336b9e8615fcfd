"""open_bridge: a broker's subjects to and from a NATS server.

Two trio tasks move messages: the export task reads one subscription of the
broker on all the outbound patterns (so a subject that two of them match goes
out once, and in order), encodes, and hands batches to the link; the import
task takes batches from the link, decodes, and publishes into the broker past
that same subscription (so nothing imported goes back out). The link
(``_link.py``) runs nats-py on its own asyncio loop in a thread.

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

import math
import random
import time
import typing

# Runtime imports, so that the API reference can resolve the annotations.
from collections.abc import (  # noqa: TC003
    AsyncIterator,
    Callable,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import trio

from .. import (
    Broker,
    BrokerClosedError,
    InvalidSubjectError,
    OverflowPolicy,
    Subscription,
    _port,
    validate_pattern,
    validate_subject,
)
from .._log import RateLimitedWarning
from ._link import IN_FLIGHT, Backoff, Link, logger

if TYPE_CHECKING:
    from .. import Message
    from ._client import Incoming
    from ._link import Lane, Outgoing

T = TypeVar("T")

MAX_BATCH = 1024
"""Most messages the export task hands to the link at once."""


@attrs.frozen(kw_only=True)
class BridgeStatistics:
    """A snapshot of a bridge's counters (:meth:`Bridge.statistics`)."""

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
    """A running bridge, as :func:`open_bridge` yields it."""

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
        self._replies = _port.reply_prefix(broker)
        self._encode = encode
        self._decode = decode
        self._outbound = outbound
        self._inbound = inbound
        self._head = "" if prefix is None else prefix + _port.SEPARATOR
        self._queue = queue
        self._max_outbound = max_outbound
        # each batch handed to the link: at most IN_FLIGHT of them there, and
        # one being made here
        self._chunk = max(1, max_outbound_bytes // (IN_FLIGHT + 1))
        self._outbound_policy = outbound_policy
        self._drain = drain
        self._drain_timeout = drain_timeout
        self._request_timeout = request_timeout
        self._max_requests = max_requests
        self._reply_prefixes = tuple(p + _port.SEPARATOR for p in reply_prefixes)
        self._imports = [tuple(pattern.split(_port.SEPARATOR)) for pattern in inbound]
        self._link: Link | None = None
        self._nursery: trio.Nursery | None = None
        self._export_sub: Subscription[T] | None = None
        self._export_scope: AbstractAsyncContextManager[Subscription[T]] | None = None
        # The export and import tasks' cancel scopes, and whether to start none.
        self._pumps: list[trio.CancelScope] = []
        # the cancel scopes of the tasks waiting to answer requests from NATS
        self._answering: set[trio.CancelScope] = set()
        self._busy: list[str] = []  # reply subjects to tell "no responders"
        self._pumps_stopped = False
        self._importing = 0  # import tasks in the middle of a batch
        self._waiting = 0  # requests from NATS waiting for a local answer
        self._export_done = trio.Event()
        self._closing = False
        self._closed = trio.Event()
        # trio-side counters
        self._imported = 0
        self._handed = 0  # messages handed to the link (see Counters.settled)
        self._in_hand = 0  # taken to be exported (or answers), not yet handed
        self._out_lost = 0  # encode, headers, not handed over
        self._in_lost = 0  # decode, grammar, type, closed broker, left at close
        self._refused = 0  # requests from NATS (in _in_lost too)
        self._expired = 0  # local requests nobody waits for (in _out_lost too)
        # one rate-limited warning per cause, so that each cause is named
        self._warn_encode = RateLimitedWarning(log=logger)
        # by cause of refusal (see _refusal), made on first use
        self._warn_refused: dict[str, RateLimitedWarning] = {}
        self._warn_decode = RateLimitedWarning(log=logger)
        self._warn_import = RateLimitedWarning(log=logger)
        self._warn_answer = RateLimitedWarning(log=logger)
        self._warn_reserved = RateLimitedWarning(log=logger)
        self._warn_request = RateLimitedWarning(log=logger)
        self._warn_busy = RateLimitedWarning(log=logger)
        self._warn_expired = RateLimitedWarning(log=logger)

    @property
    def broker(self) -> Broker[T]:
        """The broker it bridges."""
        return self._broker

    def statistics(self) -> BridgeStatistics:
        """Return a snapshot of the bridge's counters."""
        link = self._link
        assert link is not None
        counters = link.counters
        sub = self._export_sub
        sub_dropped = pending = 0
        if sub is not None:
            stats = sub.statistics()
            sub_dropped, pending = stats.dropped, stats.pending
        outbound_dropped = (
            self._out_lost + counters.refused + counters.expired + sub_dropped
        )
        inbound_dropped = self._in_lost + counters.slow_consumer + counters.malformed
        return BridgeStatistics(
            exported=counters.exported,
            imported=self._imported,
            dropped=outbound_dropped + inbound_dropped,
            reconnects=counters.reconnects,
            connected=counters.connected,
            outbound_dropped=outbound_dropped,
            inbound_dropped=inbound_dropped,
            unconfirmed=counters.unconfirmed,
            outbound_pending=(
                pending + self._in_hand + self._handed - counters.settled
            ),
            closed=counters.closed,
            requests_refused=self._refused,
            requests_expired=self._expired + counters.expired,
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

    async def _start(self, nursery: trio.Nursery) -> None:
        link = self._link
        assert link is not None
        self._nursery = nursery
        try:
            if self._outbound:
                # Listening for answers before a request can go out.
                answers = await link.subscribe_replies(self._replies)
                nursery.start_soon(self._import, answers)
                self._export_scope = _port.export(
                    self._broker,
                    self._outbound,
                    max_buffer_size=self._max_outbound,
                    policy=self._outbound_policy,
                )
                self._export_sub = await self._export_scope.__aenter__()
                nursery.start_soon(self._export)
            else:
                self._export_done.set()
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
                    nursery.start_soon(self._import, lane)
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
        link = self._link
        assert link is not None
        try:
            if drain:
                with trio.move_on_after(self._drain_timeout):
                    await self._drain_all(link)
            self._pumps_stopped = True
            for scope in [*self._pumps, *self._answering]:
                scope.cancel()
            if self._export_sub is not None:
                self._export_sub.close()  # what it still holds: dropped, counted
            if self._export_scope is not None:
                await self._export_scope.__aexit__(None, None, None)
            # nats-py's close is quick on loopback and bounded elsewhere by its
            # own timeouts; the limit here guards against a wedged connection.
            with trio.move_on_after(10):
                await link.close(drain=False)
            self._in_lost += link.queued_inbound()
        finally:
            await link.stop()
            self._closed.set()

    async def _drain_all(self, link: Link) -> None:
        if self._export_sub is not None:
            _port.stop_routing(self._export_sub)
            await self._export_done.wait()
        while self._answering:  # noqa: ASYNC110 (each ends within request_timeout)
            await trio.sleep(0.005)
        await link.wait_sent()
        # nats-py's drain: the inbound subscriptions stop, what they hold still
        # comes in (the import task is running), publishes are flushed.
        await link.close(drain=True)
        while link.queued_inbound() or self._importing:  # noqa: ASYNC110
            await trio.sleep(0.005)  # polls a deque the loop's thread fills

    # -- export ----------------------------------------------------------------------

    async def _export(self) -> None:
        sub = self._export_sub
        link = self._link
        assert sub is not None
        assert link is not None
        with trio.CancelScope() as scope:
            self._pumps.append(scope)
            if self._pumps_stopped:
                scope.cancel()
            try:
                while True:
                    try:
                        messages = await sub.receive_batch(MAX_BATCH)
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        return
                    await self._hand_all(link, messages)
            finally:
                self._export_done.set()

    async def _hand_all(self, link: Link, messages: list[Message[T]]) -> None:
        """Encode ``messages`` and hand them to the link, a bounded batch at a time.

        Each batch holds about ``max_outbound_bytes / 5`` of data at most (one
        message more), so that what is encoded and not yet sent stays within
        ``max_outbound_bytes`` (and five messages).
        """
        self._in_hand += len(messages)
        start = 0
        try:
            while start < len(messages):
                batch, stop = self._outgoing(messages, start)
                self._in_hand -= stop - start  # each is lost (counted) or in batch
                start = stop
                await self._hand(link, batch)
        except BaseException:
            self._in_hand -= len(messages) - start
            self._out_lost += len(messages) - start
            raise

    async def _hand(self, link: Link, batch: list[Outgoing]) -> None:
        """Hand ``batch`` to the link, counting it in hand, handed, or lost."""
        self._in_hand += len(batch)  # waiting for the link's credit
        try:
            handed = await link.send(batch)
        except BaseException:
            self._out_lost += len(batch)
            raise
        finally:
            self._in_hand -= len(batch)
        if handed:
            self._handed += len(batch)
        else:
            self._out_lost += len(batch)

    def _outgoing(
        self, messages: list[Message[T]], start: int = 0, to: str | None = None
    ) -> tuple[list[Outgoing], int]:
        """Encode and check messages for NATS; count and log what cannot go.

        From ``messages[start]`` on, until the batch holds about a chunk of
        data. Each goes to its subject under the prefix, with its reply
        subject if it is a request (unless nobody waits for its answer any
        more); or, given ``to``, to that subject as is (an answer). Returns
        the batch and the index of the first message not taken.
        """
        batch: list[Outgoing] = []
        encode = self._encode
        head = self._head
        assert self._link is not None
        max_payload = self._link.max_payload
        chunk = self._chunk
        size = 0
        index = start
        for message in messages[start:] if start else messages:
            index += 1
            reply = message.reply
            deadline = None
            if reply is not None:
                left = _port.time_left(self._broker, reply)
                if left is None or left <= 0:
                    self._expire(message.subject)
                    continue
                if left != math.inf:
                    deadline = time.monotonic() + left
            try:
                data = encode(message.payload)
                if not isinstance(data, bytes):
                    raise TypeError(f"encode returned {type(data).__name__}, not bytes")
            except Exception as error:
                self._out_lost += 1
                self._warn_encode(
                    "NATS bridge: a message on %r was not exported: "
                    "encode failed: %s: %s",
                    message.subject,
                    type(error).__name__,
                    error,
                )
                continue
            subject = head + message.subject if to is None else to
            refusal = _refusal(subject, data, message.headers, max_payload, reply)
            if refusal is not None:
                cause, problem = refusal
                self._out_lost += 1
                warn = self._warn_refused.get(cause)
                if warn is None:
                    warn = self._warn_refused[cause] = RateLimitedWarning(log=logger)
                warn(
                    "NATS bridge: a message on %r was not exported: %s",
                    message.subject,
                    problem,
                )
                continue
            headers = dict(message.headers) if message.headers else None
            batch.append((subject, data, headers, reply, deadline))
            size += len(data)
            if size >= chunk:
                break
        return batch, index

    def _expire(self, subject: str) -> None:
        self._out_lost += 1
        self._expired += 1
        self._warn_expired(
            "NATS bridge: a request on %r was not sent: nobody waits for its "
            "answer any more",
            subject,
        )

    # -- import ----------------------------------------------------------------------

    async def _import(self, lane: Lane) -> None:
        """Publish what comes in on ``lane`` into the broker, in order."""
        link = self._link
        assert link is not None
        if lane.answers:
            one: Callable[[Incoming], _port.Pending[T] | None] = self._import_answer
        elif lane.screened:
            one = self._import_screened
        else:
            one = self._import_one
        with trio.CancelScope() as scope:
            self._pumps.append(scope)
            if self._pumps_stopped:
                scope.cancel()
            while True:
                # incoming() waits only when nothing is there: a checkpoint per
                # batch keeps a steady stream from starving the other tasks.
                await trio.lowlevel.checkpoint()
                batch = await link.incoming(lane)
                self._importing += 1
                try:
                    for index, item in enumerate(batch):
                        try:
                            pending = one(item)
                            if pending is not None:
                                self._tell_busy()
                                await self._import_rest(pending)
                        except BaseException:
                            self._in_lost += len(batch) - index
                            raise
                    self._tell_busy()
                finally:
                    self._importing -= 1

    def _tell_busy(self) -> None:
        """Send "no responders" to the requests refused for want of room."""
        if self._busy:
            assert self._link is not None
            self._link.no_responders(self._busy)
            self._busy = []

    async def _import_rest(self, pending: _port.Pending[T]) -> None:
        try:
            await _port.finish(self._broker, pending)
        except BrokerClosedError as error:
            self._in_lost += 1
            self._warn_import(
                "NATS bridge: a message on %r was not imported: %s",
                pending.message.subject,
                error,
            )
        else:
            self._imported += 1

    def _import_screened(self, item: Incoming) -> _port.Pending[T] | None:
        """:meth:`_import_one`, but never to a subject under ``_INBOX.``.

        For the patterns whose first token is a wildcard: only they match
        reply subjects.
        """
        remote = item[0]
        subject = remote[len(self._head) :]
        if _port.is_reserved(subject):
            # Answers to the broker's requests come on the answers' lane only.
            self._in_lost += 1
            self._warn_reserved(
                "NATS bridge: a message on %r was not imported: subjects under "
                "_INBOX. are reply subjects, and answers to this broker's "
                "requests arrive only on the bridge's own subscription for them",
                remote,
            )
            return None
        return self._import_one(item)

    def _import_one(self, item: Incoming) -> _port.Pending[T] | None:
        """Publish ``item`` into the broker, or count it as dropped.

        Returns what is left to wait for, if anything: a message and the full
        ``BLOCK`` subscriptions it is still to go to.
        """
        remote, answer_to, data, headers = item
        subject = remote[len(self._head) :]
        if answer_to and not self._may_ask(remote, answer_to):
            return None
        try:
            payload = self._decode(data)
        except Exception as error:
            self._in_lost += 1
            self._warn_decode(
                "NATS bridge: a message on %r was not imported: decode failed: %s: %s",
                remote,
                type(error).__name__,
                error,
            )
            return None
        reply = None
        try:
            if answer_to:
                pending, reply = _port.inject_request(
                    self._broker, subject, payload, headers
                )
            else:
                pending = _port.inject(self._broker, subject, payload, headers)
        except (InvalidSubjectError, TypeError, BrokerClosedError) as error:
            self._in_lost += 1
            self._warn_import(
                "NATS bridge: a message on %r was not imported: %s",
                remote,
                error,
            )
            return None
        if reply is not None:
            assert self._nursery is not None
            self._waiting += 1
            self._nursery.start_soon(self._answer, reply, answer_to)
        if pending is None:
            self._imported += 1
        return pending

    def _may_ask(self, remote: str, to: str) -> bool:
        """Whether a request from NATS, answered to ``to``, may be published.

        If not, it is counted as refused (and told "no responders" if it is
        refused for want of room).
        """
        why = self._unanswerable(to)
        if why is None and self._waiting < self._max_requests:
            return True
        self._in_lost += 1
        self._refused += 1
        if why is not None:
            self._warn_request(
                "NATS bridge: a request on %r was not imported: its reply "
                "subject %r is %s",
                remote,
                to,
                why,
            )
        else:
            self._busy.append(to)
            self._warn_busy(
                "NATS bridge: a request on %r was answered 'no responders': "
                "%d requests from NATS already wait for a local answer "
                "(max_requests)",
                remote,
                self._max_requests,
            )
        return False

    def _unanswerable(self, to: str) -> str | None:
        """Why an answer may not go to ``to`` (a reply subject from NATS), or None."""
        if not to.startswith(self._reply_prefixes):
            return "not under an inbox prefix the bridge answers (reply_prefixes)"
        try:
            validate_subject(to)
        except InvalidSubjectError as error:
            return f"not a literal subject ({error.reason})"
        if to.startswith(self._replies):
            return "one of the broker's own reply subjects"
        if to.startswith(self._head):
            local = to[len(self._head) :]
            if not _port.is_reserved(local):
                tokens = tuple(local.split(_port.SEPARATOR))
                for pattern in self._imports:
                    if _port.tokens_match(pattern, tokens):
                        return "a subject the bridge imports"
        return None

    def _import_answer(self, item: Incoming) -> None:
        """An answer from NATS to one of the broker's requests: pass it on.

        It reaches the request if it still waits, else nobody (counted as
        imported all the same: it was published). A "no responders" status
        carries no answer: it tells the request that nobody in NATS will.
        Never waits: a reply takes its answer at once.
        """
        subject, _, data, headers = item
        if headers and headers.get("Status") == _NO_RESPONDERS and not data:
            _port.decline(self._broker, subject)
            return
        try:
            payload = self._decode(data)
        except Exception as error:
            self._in_lost += 1
            self._warn_decode(
                "NATS bridge: an answer on %r was not imported: decode failed: %s: %s",
                subject,
                type(error).__name__,
                error,
            )
            return
        try:
            _port.inject(self._broker, subject, payload, headers)
        except (TypeError, BrokerClosedError) as error:
            self._in_lost += 1
            self._warn_import(
                "NATS bridge: an answer on %r was not imported: %s", subject, error
            )
            return
        self._imported += 1

    async def _answer(self, reply: _port.Reply[T], to: str) -> None:
        """Wait for the local answer to a request from NATS; send it to ``to``."""
        link = self._link
        assert link is not None
        with trio.CancelScope() as scope:
            self._answering.add(scope)
            if self._pumps_stopped:
                scope.cancel()
            try:
                with trio.move_on_after(self._request_timeout):
                    answer = await reply.wait()
                    await self._hand(link, self._outgoing([answer], to=to)[0])
                    return
                self._warn_answer(
                    "NATS bridge: a request from NATS on %r had no local answer "
                    "within request_timeout (%s s)",
                    reply.asked,
                    self._request_timeout,
                )
            except BrokerClosedError:
                pass  # nobody can answer any more
            finally:
                self._waiting -= 1
                reply.close()
                self._answering.discard(scope)


_NO_RESPONDERS = "503"
"""The status NATS sends to a reply subject when nobody subscribes to the request."""

MAX_CONTROL_LINE = 4096
"""nats-server's default ``max_control_line``: the longest ``HPUB`` line it takes.

A longer one makes it answer ``-ERR`` and close the connection."""

_CONTROL_LINE_EXTRA = 48  # "HPUB", spaces, two sizes of up to 20 digits, CRLF
_HEADER_BLOCK = len(b"NATS/1.0\r\n\r\n")
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


def _refusal(
    subject: str,
    data: bytes,
    headers: Mapping[str, str],
    max_payload: int,
    reply: str | None = None,
) -> tuple[str, str] | None:
    """Why NATS cannot carry this message as it is: (cause, explanation), or None.

    Checked before it is written, because nats-py and the server would
    otherwise fail on it after the fact: a lone surrogate raises in the
    sender; a control line over the server's limit, or headers and payload
    over ``max_payload``, make the server close the connection; nats-py
    refuses header names that are not RFC 7230 tokens and strips the
    whitespace around values.
    """
    if subject.isascii():
        size = len(subject)
    else:
        try:
            size = len(subject.encode())
        except UnicodeEncodeError:
            return "subject", "the subject is not valid UTF-8 (a lone surrogate)"
    if reply is not None:
        size += len(reply) + 1  # (ASCII: the broker makes them)
    if size + _CONTROL_LINE_EXTRA > MAX_CONTROL_LINE:
        return "control line", (
            f"its subject takes {size} bytes, too many for a NATS control line "
            f"({MAX_CONTROL_LINE} bytes in all)"
        )
    size = len(data)
    if headers:
        size += _HEADER_BLOCK
        for name, value in headers.items():
            if not name or not _TOKEN_CHARS.issuperset(name):
                return "header name", (
                    f"header name {name!r} is not valid in NATS (letters, digits "
                    "and !#$%&'*+-.^_`|~ only)"
                )
            if "\r" in value or "\n" in value:
                return "header value", (
                    f"the value of header {name!r} holds a line break"
                )
            if value != value.strip():
                return "header value", (
                    f"the value of header {name!r} starts or ends with whitespace, "
                    "which NATS would strip"
                )
            try:
                size += len(name) + len(value.encode()) + 4  # ": " and CRLF
            except UnicodeEncodeError:
                return "header value", (
                    f"the value of header {name!r} is not valid UTF-8 (a lone "
                    "surrogate)"
                )
    if size > max_payload:
        return "size", (
            f"it takes {size} bytes with its headers, more than the server's "
            f"max_payload ({max_payload})"
        )
    return None


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


def _servers(servers: str | Sequence[str]) -> list[str]:
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
    if outbound_policy not in (
        OverflowPolicy.DROP_NEWEST,
        OverflowPolicy.DROP_OLDEST,
        OverflowPolicy.BLOCK,
    ):
        raise ValueError(
            f"outbound_policy must be DROP_NEWEST, DROP_OLDEST or BLOCK, not "
            f"{outbound_policy!r} (a bridge that disconnected would stop exporting)"
        )
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
        "servers": _servers(servers),
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
