"""Storing in JetStream from the loop's thread: HPUBs in, PubAcks out.

A JetStream publish is a NATS message with a reply subject; the stream's
answer (the PubAck, a JSON document) comes back on that subject. nats-py's
own JetStream publish makes a future, a task-side semaphore and a ``PubAck``
object for each, and reads each answer through a subscription's queue and
task. A :class:`Storer` does less, in the loop's thread:

* the trio side hands over each message (:meth:`Storer.hand`); what comes
  together crosses in one hop and is written to the connection at once, one
  HPUB each (``Nats-Msg-Id`` and ``Nats-Expected-Stream`` among its headers),
  behind what nats-py's buffer holds;
* the answers come on one subscription (a random inbox prefix, one token per
  message), taken in nats-py's read loop (``GuardedClient.takers``); the
  answers of one turn of the loop cross back in one hop
  (:attr:`Storer.on_answers`, run in the trio thread);
* what has no answer after ``ATTEMPT_TIMEOUT`` is written again, with the
  same id (the server drops the copy it has), and again until its deadline;
  on "JetStream unavailable" (status 503, or a 503 error in the answer) it
  is written again after a short, doubling wait; after a reconnection, at
  once.

The answer is what the server says: a sequence (and whether it was a
duplicate), or its refusal (the stream's limits, say), which no resend would
change. An answer that is not one of these is logged and ignored: the
message is written again as if none had come.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._client import Incoming
    from ._link import Link

EXPECTED_STREAM = "Nats-Expected-Stream"
"""The header by which the server refuses a message for another stream."""

ATTEMPT_TIMEOUT = 2.0
"""Seconds to wait for one PubAck before writing the message again."""

_FIRST_WAIT = 0.05  # seconds before writing again after "unavailable"
_LAST_WAIT = 1.0  # the longest such wait

Answer = tuple[int, bool] | str | None
"""What became of a message: its sequence in the stream and whether it was a
duplicate, the server's refusal (why), or ``None``: no PubAck by its
deadline (it may or may not be stored)."""


class Storing:
    """A message on its way to the stream.

    Made on the trio side, then written in the loop's thread only, until it is
    handed back with its :attr:`answer` (through ``on_answers``).
    """

    __slots__ = (
        "answer",
        "closed",
        "command",
        "data",
        "deadline",
        "done",
        "headers",
        "sent",
        "subject",
        "token",
        "wait",
    )

    def __init__(
        self,
        subject: str,
        data: bytes,
        headers: dict[str, str],
        deadline: float,
        done: Any,
    ) -> None:
        self.subject = subject
        self.data = data
        self.headers = headers
        self.deadline = deadline
        """Its ``time.monotonic()`` past which it is given up on."""
        self.done = done
        """The trio side's own (an event to set): the storer does not touch it."""
        self.closed: str | None = None
        """The trio side's own: why it was given up on when the bridge closed."""
        self.answer: Answer = None
        self.sent = False
        """Whether it was written at least once (it may be stored then)."""
        self.token = ""
        self.command = b""
        self.wait = _FIRST_WAIT


class Storer:
    """JetStream publishes of one stream, on one link (see the module's text)."""

    def __init__(self, link: Link, stream: str) -> None:
        self._link = link
        self._stream = stream
        self.prefix = f"_INBOX.{uuid.uuid4().hex}."
        """Where the answers come: one token more per message."""
        self.on_answers: Callable[[list[Storing]], None] = _nobody
        """Run in the trio thread with the messages answered (or given up on)."""
        # trio side -> loop (see hand)
        self._incoming: deque[Storing] = deque()
        self._take_scheduled = False
        # loop side
        self._waiting: dict[str, Storing] = {}  # written, no answer yet, by token
        self._count = 0
        self._answered: list[Storing] = []
        self._tell_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- the trio side ------------------------------------------------------------

    def hand(self, item: Storing) -> None:
        """Hand ``item`` over to be stored (trio side, while the loop runs)."""
        self._incoming.append(item)  # (deque: safe across threads)
        if not self._take_scheduled:
            self._take_scheduled = True
            self._link.soon(self._take)

    # -- the loop's thread --------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the answers, and confirm (in the loop)."""
        nc = self._link.nc
        assert nc is not None
        self._loop = asyncio.get_running_loop()
        await nc.subscribe_taken(self.prefix + "*", self._on_answer)
        self._link.on_reconnected.append(self._write_all)
        await nc.flush(timeout=self._link.flush_timeout)  # type: ignore[arg-type]

    def _take(self) -> None:
        """What the trio side handed over: write it, and set its clock."""
        self._take_scheduled = False  # (before taking: a later hand schedules)
        incoming = self._incoming
        items: list[Storing] = []
        while incoming:
            items.append(incoming.popleft())
        nc = self._link.nc
        assert nc is not None
        limit = nc.max_payload
        stream = self._stream
        prefix = self.prefix
        written: list[Storing] = []
        for item in items:
            self._count += 1
            item.token = token = str(self._count)
            lines = "".join(
                f"{name}: {value}\r\n"
                for name, value in item.headers.items()
                if name != EXPECTED_STREAM  # (the bridge's stream, written below)
            )
            block = f"NATS/1.0\r\n{lines}{EXPECTED_STREAM}: {stream}\r\n\r\n".encode()
            size = len(block) + len(item.data)
            if size > limit:
                self._give(
                    item,
                    f"{size} bytes with its headers, more than the server's "
                    f"max_payload of {limit}",
                )
                continue
            item.command = b"HPUB %s %s%s %d %d\r\n%s%s\r\n" % (
                item.subject.encode(),
                prefix.encode(),
                token.encode(),
                len(block),
                size,
                block,
                item.data,
            )
            self._waiting[token] = item
            written.append(item)
        if written:
            self._write(written)
            self._check_later(written)

    def _write(self, items: list[Storing]) -> None:
        """Write ``items`` to the connection, if connected (else a later try)."""
        nc = self._link.nc
        if nc is None or not nc.plainly_connected:
            return
        nc.put_commands([item.command for item in items])
        for item in items:
            item.sent = True

    def _write_all(self) -> None:
        """Reconnected: what was written before may be lost; write it again."""
        if self._waiting:
            self._write(list(self._waiting.values()))

    def _check_later(self, items: list[Storing]) -> None:
        now = time.monotonic()
        first = min(item.deadline for item in items)
        assert self._loop is not None
        self._loop.call_later(
            max(0.0, min(ATTEMPT_TIMEOUT, first - now)), self._check, items
        )

    def _check(self, items: list[Storing]) -> None:
        """Give up on what is past its deadline; write the rest again."""
        now = time.monotonic()
        waiting = self._waiting
        left = [item for item in items if waiting.get(item.token) is item]
        again = []
        for item in left:
            if item.deadline <= now:
                self._give(item, None)
            else:
                again.append(item)
        if again:
            self._link.warn(
                "resend",
                "JetStream: %d message(s) not acknowledged within %s s, "
                "written again with their ids",
                len(again),
                ATTEMPT_TIMEOUT,
            )
            self._write(again)
            self._check_later(again)

    def _retry(self, item: Storing) -> None:
        """Write ``item`` again after a wait (JetStream was unavailable)."""
        wait = item.wait
        item.wait = min(wait * 2, _LAST_WAIT)
        assert self._loop is not None
        self._loop.call_later(wait, self._again, item)

    def _again(self, item: Storing) -> None:
        # (past its deadline, _check gives up on it)
        if self._waiting.get(item.token) is item:
            self._write([item])

    def _on_answer(self, message: Incoming) -> None:
        """An answer from the server, in nats-py's read loop."""
        subject, _, data, headers = message
        item = self._waiting.get(subject[len(self.prefix) :])
        if item is None:
            return  # a second answer to a message written twice
        if headers is not None and headers.get("Status") == "503":
            self._retry(item)  # no responders: JetStream is not there yet
            return
        answer = _read_answer(data)
        if answer is None:
            self._link.warn(
                "answer",
                "JetStream: an answer that is not a PubAck came for a message on "
                "%r: %r (it is written again)",
                item.subject,
                data[:200],
            )
        elif isinstance(answer, int):
            self._retry(item)  # 503: JetStream is not there yet
        else:
            self._give(item, answer)

    def _give(self, item: Storing, answer: Answer) -> None:
        """``item`` is settled: back to the trio side, with what it became."""
        self._waiting.pop(item.token, None)
        item.answer = answer
        self._answered.append(item)
        if not self._tell_scheduled:
            # Once per turn of the loop: one hop for the lot.
            self._tell_scheduled = True
            assert self._loop is not None
            self._loop.call_soon(self._tell)

    def _tell(self) -> None:
        self._tell_scheduled = False
        answered, self._answered = self._answered, []
        self._link.to_trio(functools.partial(self.on_answers, answered))


def _read_answer(data: bytes) -> tuple[int, bool] | str | int | None:
    """A PubAck's sequence and duplicate flag; a refusal's reason; 503; or None.

    ``None``: it is not an answer JetStream gives.
    """
    try:
        answer = json.loads(data)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    error = answer.get("error")
    if isinstance(error, dict):
        code = error.get("code")
        if code == 503:
            return 503
        description = error.get("description")
        return f"{description if isinstance(description, str) else error!r}"
    sequence = answer.get("seq")
    duplicate = answer.get("duplicate", False)
    if (
        type(sequence) is not int
        or sequence < 0
        or not isinstance(duplicate, bool)
        or error is not None
    ):
        return None
    return sequence, duplicate


def _nobody(items: list[Storing]) -> None:
    raise AssertionError("no on_answers set")  # pragma: no cover
