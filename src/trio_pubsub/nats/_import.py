"""The way in: messages and requests from NATS into the broker.

One trio task per lane (an inbound pattern, or the answers to the broker's
own requests; see ``_link.Lane``) takes what the link's thread has queued and
publishes it past every export of the broker (its pipeline's ``inject``), in order;
only that lane waits for a full ``BLOCK`` subscriber. A request from NATS is
published as a request, if its reply subject is one the bridge answers and
fewer than ``max_requests`` wait, and one task per request waits for the first
local answer, which the exporter sends.

Every message the link hands over ends in one counter: ``imported``, or
``lost`` (with the link's own: ``inbound_dropped``), ``refused`` among them
for the requests not published.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

import trio

from .. import Broker, BrokerClosedError, InvalidSubjectError, _port, validate_subject
from .._log import RateLimitedWarning
from ._link import logger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from .. import Message
    from ._client import Incoming
    from ._link import Lane, Link

T = TypeVar("T")

_NO_RESPONDERS = "503"
"""The status NATS sends to a reply subject when nobody subscribes to the request."""


class Importer(Generic[T]):
    """The import tasks, one per lane, and the requests from NATS they publish."""

    def __init__(
        self,
        broker: Broker[T],
        link: Link,
        *,
        decode: Callable[[bytes], T],
        head: str,
        inbound: list[str],
        request_timeout: float,
        max_requests: int,
        reply_prefixes: list[str],
        send_answer: Callable[[Message[T], str], Awaitable[None]],
    ) -> None:
        self._broker = broker
        self._pipeline = _port.pipeline(broker)
        self._link = link
        self._decode = decode
        self._head = head
        self._replies = _port.reply_prefix(broker)
        self._imports = [tuple(pattern.split(_port.SEPARATOR)) for pattern in inbound]
        self._request_timeout = request_timeout
        self._max_requests = max_requests
        self._reply_prefixes = tuple(p + _port.SEPARATOR for p in reply_prefixes)
        self._send_answer = send_answer
        self.nursery: trio.Nursery | None = None
        """Where the tasks waiting for local answers run."""
        self.answering: set[trio.CancelScope] = set()
        """The cancel scopes of the tasks waiting to answer requests from NATS."""
        self.stopped = False
        """Set as the bridge closes: no task that starts then waits."""
        self.importing = 0  # import tasks in the middle of a batch
        self.waiting = 0  # requests from NATS waiting for a local answer
        self._busy: list[str] = []  # reply subjects to tell "no responders"
        # counters
        self.imported = 0
        self.lost = 0  # decode, grammar, type, closed broker, left at close
        self.refused = 0  # requests from NATS (in lost too)
        # one rate-limited warning per cause, so that each cause is named
        self._warn_decode = RateLimitedWarning(log=logger)
        self._warn_import = RateLimitedWarning(log=logger)
        self._warn_answer = RateLimitedWarning(log=logger)
        self._warn_reserved = RateLimitedWarning(log=logger)
        self._warn_request = RateLimitedWarning(log=logger)
        self._warn_busy = RateLimitedWarning(log=logger)

    async def run(self, lane: Lane, scope: trio.CancelScope) -> None:
        """Publish what comes in on ``lane`` into the broker, in order."""
        link = self._link
        if lane.answers:
            one: Callable[[Incoming], _port.Pending[T] | None] = self._import_answer
        elif lane.screened:
            one = self._import_screened
        else:
            one = self._import_one
        with scope:
            while True:
                # incoming() waits only when nothing is there: a checkpoint per
                # batch keeps a steady stream from starving the other tasks.
                await trio.lowlevel.checkpoint()
                batch = await link.incoming(lane)
                self.importing += 1
                try:
                    for index, item in enumerate(batch):
                        try:
                            pending = one(item)
                            if pending is not None:
                                self._tell_busy()
                                await self._import_rest(pending)
                        except BaseException:
                            self.lost += len(batch) - index
                            raise
                    self._tell_busy()
                finally:
                    self.importing -= 1

    def _tell_busy(self) -> None:
        """Send "no responders" to the requests refused for want of room."""
        if self._busy:
            assert self._link is not None
            self._link.no_responders(self._busy)
            self._busy = []

    async def _import_rest(self, pending: _port.Pending[T]) -> None:
        try:
            await self._pipeline.finish(pending)
        except BrokerClosedError as error:
            self.lost += 1
            self._warn_import(
                "NATS bridge: a message on %r was not imported: %s",
                pending.message.subject,
                error,
            )
        else:
            self.imported += 1

    def _import_screened(self, item: Incoming) -> _port.Pending[T] | None:
        """:meth:`_import_one`, but never to a subject under ``_INBOX.``.

        For the patterns whose first token is a wildcard: only they match
        reply subjects.
        """
        remote = item[0]
        subject = remote[len(self._head) :]
        if _port.is_reserved(subject):
            # Answers to the broker's requests come on the answers' lane only.
            self.lost += 1
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
            self.lost += 1
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
                pending, reply = self._pipeline.inject_request(
                    subject, payload, headers
                )
            else:
                pending = self._pipeline.inject(subject, payload, headers)
        except (InvalidSubjectError, TypeError, BrokerClosedError) as error:
            self.lost += 1
            self._warn_import(
                "NATS bridge: a message on %r was not imported: %s",
                remote,
                error,
            )
            return None
        if reply is not None:
            assert self.nursery is not None
            self.waiting += 1
            self.nursery.start_soon(self._answer, reply, answer_to)
        if pending is None:
            self.imported += 1
        return pending

    def _may_ask(self, remote: str, to: str) -> bool:
        """Whether a request from NATS, answered to ``to``, may be published.

        If not, it is counted as refused (and told "no responders" if it is
        refused for want of room).
        """
        why = self._unanswerable(to)
        if why is None and self.waiting < self._max_requests:
            return True
        self.lost += 1
        self.refused += 1
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
            self._pipeline.decline(subject)
            return
        try:
            payload = self._decode(data)
        except Exception as error:
            self.lost += 1
            self._warn_decode(
                "NATS bridge: an answer on %r was not imported: decode failed: %s: %s",
                subject,
                type(error).__name__,
                error,
            )
            return
        try:
            self._pipeline.inject(subject, payload, headers)
        except (TypeError, BrokerClosedError) as error:
            self.lost += 1
            self._warn_import(
                "NATS bridge: an answer on %r was not imported: %s", subject, error
            )
            return
        self.imported += 1

    async def _answer(self, reply: _port.Reply[T], to: str) -> None:
        """Wait for the local answer to a request from NATS; send it to ``to``."""
        with trio.CancelScope() as scope:
            self.answering.add(scope)
            if self.stopped:
                scope.cancel()
            try:
                with trio.move_on_after(self._request_timeout):
                    answer = await reply.wait()
                    await self._send_answer(answer, to)
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
                self.waiting -= 1
                reply.close()
                self.answering.discard(scope)
