"""The way out: local messages to NATS, through the link.

One trio task reads the export subscription (one subscription of the broker on
all the outbound patterns, so a subject that two of them match goes out once,
and in order), encodes, checks what NATS could not carry, and hands bounded
batches to the link. Answers to requests from NATS go out the same way
(:meth:`Exporter.send_answer`).

Every message it takes ends in one counter: handed to the link (which counts
its fate: exported, unconfirmed, refused), or lost here (``lost``: encode
failed, NATS cannot carry it, nobody waits for the answer to a request, or it
was not handed over), counted and logged at most once a second per cause.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from .. import Broker, OverflowPolicy, Subscription, _port
from .._log import RateLimitedWarning
from ._link import IN_FLIGHT, logger

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from .. import Message
    from ._link import Link, Outgoing

T = TypeVar("T")


def check_outbound_policy(policy: object) -> None:
    """Refuse an export policy other than ``BLOCK`` and the two drops.

    Raises:
        ValueError: it is ``DISCONNECT`` (an export cut off would stop
            exporting for good) or not a policy.
    """
    if policy not in (
        OverflowPolicy.DROP_NEWEST,
        OverflowPolicy.DROP_OLDEST,
        OverflowPolicy.BLOCK,
    ):
        raise ValueError(
            f"outbound_policy must be DROP_NEWEST, DROP_OLDEST or BLOCK, not "
            f"{policy!r} (an export that disconnected would stop exporting)"
        )


MAX_BATCH = 1024
"""Most messages the export task takes from its subscription at once."""


class Exporter(Generic[T]):
    """The export task, and the encoding of messages and answers for NATS."""

    def __init__(
        self,
        broker: Broker[T],
        link: Link,
        *,
        encode: Callable[[T], bytes],
        head: str,
        max_outbound_bytes: int,
    ) -> None:
        self._broker = broker
        self._pipeline = _port.pipeline(broker)
        self._link = link
        self._encode = encode
        self._head = head
        # each batch handed to the link: at most IN_FLIGHT of them there, and
        # one being made here
        self._chunk = max(1, max_outbound_bytes // (IN_FLIGHT + 1))
        self.sub: Subscription[T] | None = None
        """The export subscription, once open."""
        self.done = trio.Event()
        """Set once the export task has ended (or there is none)."""
        # counters
        self.handed = 0  # messages handed to the link (see Counters.settled)
        self.in_hand = 0  # taken to be exported (or answers), not yet handed
        self.lost = 0  # encode, NATS cannot carry it, expired, not handed over
        self.expired = 0  # local requests nobody waits for (in lost too)
        # one rate-limited warning per cause, so that each cause is named
        self._warn_encode = RateLimitedWarning(log=logger)
        # by cause of refusal (see _refusal), made on first use
        self._warn_refused: dict[str, RateLimitedWarning] = {}
        self._warn_expired = RateLimitedWarning(log=logger)

    def pending(self) -> int:
        """Local messages on their way out now (see ``outbound_pending``)."""
        held = 0 if self.sub is None else self.sub.statistics().pending
        return held + self.in_hand + self.handed - self._link.counters.settled

    async def run(self, sub: Subscription[T], scope: trio.CancelScope) -> None:
        """Export what ``sub`` receives until it ends (or ``scope`` is cancelled)."""
        with scope:
            try:
                while True:
                    try:
                        messages = await sub.receive_batch(MAX_BATCH)
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        return
                    await self._hand_all(messages)
            finally:
                self.done.set()

    async def send_answer(self, answer: Message[T], to: str) -> None:
        """Send the local answer to a request from NATS to its reply subject."""
        await self._hand(self._outgoing([answer], to=to)[0])

    async def _hand_all(self, messages: list[Message[T]]) -> None:
        """Encode ``messages`` and hand them to the link, a bounded batch at a time.

        Each batch holds about ``max_outbound_bytes / 5`` of data at most (one
        message more), so that what is encoded and not yet sent stays within
        ``max_outbound_bytes`` (and five messages).
        """
        self.in_hand += len(messages)
        start = 0
        try:
            while start < len(messages):
                batch, stop = self._outgoing(messages, start)
                self.in_hand -= stop - start  # each is lost (counted) or in batch
                start = stop
                await self._hand(batch)
        except BaseException:
            self.in_hand -= len(messages) - start
            self.lost += len(messages) - start
            raise

    async def _hand(self, batch: list[Outgoing]) -> None:
        """Hand ``batch`` to the link, counting it in hand, handed, or lost."""
        self.in_hand += len(batch)  # waiting for the link's credit
        try:
            handed = await self._link.send(batch)
        except BaseException:
            self.lost += len(batch)
            raise
        finally:
            self.in_hand -= len(batch)
        if handed:
            self.handed += len(batch)
        else:
            self.lost += len(batch)

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
        max_payload = self._link.max_payload
        chunk = self._chunk
        size = 0
        index = start
        for message in messages[start:] if start else messages:
            index += 1
            reply = message.reply
            deadline = None
            if reply is not None:
                left = self._pipeline.time_left(reply)
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
                self.lost += 1
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
                self.lost += 1
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
        self.lost += 1
        self.expired += 1
        self._warn_expired(
            "NATS bridge: a request on %r was not sent: nobody waits for its "
            "answer any more",
            subject,
        )


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
