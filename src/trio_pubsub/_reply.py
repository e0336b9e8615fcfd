"""Replies: where the answer to a request goes, and nothing else.

Each waiting request owns one ``Reply``, registered in the broker under its
reply subject (``_INBOX.<broker>.<random>``) in a dict of its own, never in the
trie or the match cache, so nothing of a request outlives it. A publish on a
reply subject finds it there (or nothing, once the request has ended) and
offers the message to it as to any target; the first answer ends the reply,
which leaves the dict at once, so a second answer reaches nobody and counts
nowhere as a drop. An answer is a publish (counted in ``published``), not a
copy in a subscription's buffer (so not in ``delivered``, which stays the sum
over the subscriptions).

A reply subject is never cached, so an answer always takes the pipeline's
steps (``Delivery.prepare`` finds the ``Reply`` here, ``Delivery.offer`` calls
:meth:`Reply.offer`). Its methods are called only from the pipeline's, which
are protected from ``KeyboardInterrupt``, and so are they.
"""

from __future__ import annotations

import math
import secrets
import typing
from typing import Generic, TypeVar

import trio

from ._errors import InvalidSubjectError, NoRespondersError
from ._subject import REPLY_ROOT

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from ._message import Message

T = TypeVar("T")


class Replies(Generic[T]):
    """The broker's waiting requests, by reply subject."""

    __slots__ = ("prefix", "waiting")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        """``_INBOX.<random>.``: the start of this broker's reply subjects."""
        self.waiting: dict[str, Reply[T]] = {}

    def __len__(self) -> int:
        return len(self.waiting)

    def check(self, subject: str) -> None:
        """Refuse to publish on a reserved subject that is none of ours.

        Raises:
            InvalidSubjectError: ``subject`` lies under ``_INBOX`` and does not
                start with this broker's prefix.
        """
        if not subject.startswith(self.prefix):
            raise InvalidSubjectError(
                subject,
                f"subjects under {REPLY_ROOT}. are reserved for reply subjects; "
                "publish only on a Message.reply of this broker (or use "
                "Message.respond())",
            )

    def targets(self, subject: str) -> tuple[Reply[T], ...]:
        """What a publish on ``subject`` (checked, ours) reaches: its reply, if any."""
        reply = self.waiting.get(subject)
        return () if reply is None else (reply,)

    def open(self, asked: str, deadline: float = math.inf) -> Reply[T]:
        """Register the reply of a request on ``asked``, under a new subject.

        The subject's last token is 96 random bits, not a count: a peer that
        sees one reply subject on the wire (through a NATS bridge) cannot
        guess the next, to answer a request it never saw. ``deadline`` is
        the request's, on the trio clock.
        """
        subject = self.prefix + secrets.token_urlsafe(12)
        reply = Reply(subject, asked, self, deadline)
        self.waiting[subject] = reply
        return reply

    def fail_all(self, error: Callable[[], BaseException]) -> None:
        """End every waiting request with an ``error()`` (the broker closed)."""
        for reply in list(self.waiting.values()):
            reply.fail(error())


class Reply(Generic[T]):
    """One request's reply slot: the first answer wins, then it leaves."""

    __slots__ = (
        "_event",
        "_replies",
        "asked",
        "deadline",
        "declined",
        "error",
        "message",
        "open",
        "publishing",
        "subject",
        "takers",
    )

    def __init__(
        self, subject: str, asked: str, replies: Replies[T], deadline: float
    ) -> None:
        self.subject = subject
        self.asked = asked
        """The subject of the request."""
        self.deadline = deadline
        """When the request gives up (trio clock; ``math.inf``: never)."""
        self.takers = 0
        """Subscriptions that took the request, less those that declined it."""
        self.declined = 0
        self.publishing = True
        """Whether the request is still being published (takers may grow)."""
        self.message: Message[T] | None = None
        self.error: BaseException | None = None
        self.open = True
        """Whether the request still waits for its answer."""
        self._replies = replies
        self._event = trio.Event()

    def would_block(self) -> bool:
        return False

    def offer(self, message: Message[T]) -> bool:
        """Take ``message`` as the answer.

        Only a waiting reply is ever offered one: a publish finds it in the
        waiting table and offers it at once, without a checkpoint between.
        """
        assert self.open, "an ended reply is in no publish's targets"
        self.message = message
        self._end()
        return True

    async def put(self, message: Message[T]) -> bool:  # pragma: no cover
        """Never called: :meth:`offer` never raises ``WouldBlock`` (for Target)."""
        raise AssertionError("a reply never makes a publish wait")

    def fail(self, error: BaseException) -> None:
        """End the waiting request with ``error``."""
        assert self.open, "only waiting replies are failed"
        self.error = error
        self._end()

    def decline(self) -> None:
        """One taker has no responder behind it (a bridge heard "no responders").

        When every taker has declined and the request is published, it ends
        with :class:`NoRespondersError`, as it would have at once had no
        subscription matched.
        """
        self.takers -= 1
        self.declined += 1
        if self.takers <= 0 and not self.publishing:
            self.fail(NoRespondersError(self.asked, self.why_nobody(self.declined)))

    def why_nobody(self, reached: int) -> str:
        """Why no subscription of the ``reached`` can answer (``takers`` is 0)."""
        if self.declined:
            return (
                f"of the {reached} subscription(s) it reached, none has a "
                f"responder behind it ({self.declined} answered no responders)"
            )
        return f"each of the {reached} subscription(s) it reached dropped it (full)"

    def close(self) -> None:
        """The request is over (answered, timed out, cancelled): leave."""
        if self.open:
            self.open = False
            del self._replies.waiting[self.subject]

    def _end(self) -> None:
        self.close()
        self._event.set()

    async def wait(self) -> Message[T]:
        """Wait for the answer and return it, or raise what ended the request."""
        await self._event.wait()
        if self.message is None:
            assert self.error is not None
            raise self.error
        return self.message
