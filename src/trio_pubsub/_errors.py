"""The exception hierarchy of trio_pubsub.

Every error the library raises on purpose derives from :class:`BrokerError`, and
also from the builtin or trio exception that generic handlers already catch::

    BrokerError(Exception)
    ├── InvalidSubjectError(BrokerError, ValueError)              bad subject or pattern
    ├── BrokerClosedError(BrokerError, trio.ClosedResourceError)  the broker was closed
    ├── SlowConsumerError(BrokerError, trio.BrokenResourceError)  cut off by DISCONNECT
    └── NoRespondersError(BrokerError)                            nobody took a request
"""

from __future__ import annotations

import trio


class BrokerError(Exception):
    """Base class of every error that trio_pubsub raises on purpose."""


class InvalidSubjectError(BrokerError, ValueError):
    """A subject or pattern breaks the subject grammar.

    Attributes:
        subject: The rejected input, exactly as it was given.
        reason: The rule it breaks, e.g. ``"empty token"``.
    """

    subject: str
    reason: str

    def __init__(self, subject: str, reason: str, *, kind: str = "subject") -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"invalid {kind} {subject!r}: {reason}")


class BrokerClosedError(BrokerError, trio.ClosedResourceError):
    """The broker was closed with :meth:`Broker.aclose`.

    Raised by ``publish``, ``publish_nowait`` and ``subscribe`` on a closed broker,
    and in publishers that were waiting for room in a ``BLOCK`` buffer when it closed.
    """


class SlowConsumerError(BrokerError, trio.BrokenResourceError):
    """The broker cut this subscription off because it fell too far behind.

    Raised by ``receive()`` and ``async for`` on a ``DISCONNECT`` subscription
    once it has drained the messages it held when it was cut off.
    """


class NoRespondersError(BrokerError):
    """A request reached no subscription that could answer it.

    Raised by :meth:`Broker.request` at once when no subscription matches its
    subject (NATS answers "no responders", status 503, in the same case), when
    every one that matches dropped the request by its overflow policy, or when
    a NATS bridge was the only one to take it and the server answered "no
    responders".

    Attributes:
        subject: The subject of the request.
    """

    subject: str

    def __init__(self, subject: str, why: str) -> None:
        self.subject = subject
        super().__init__(f"no responders for a request on {subject!r}: {why}")


class Lagged(BrokerError):
    """Messages were lost here, in the stream of a subscription that reports gaps.

    Raised by ``receive()``, ``receive_nowait()``, ``receive_batch()`` and
    ``async for`` of a subscription entered with ``report_gaps=True``, once,
    exactly where its overflow policy (or ``block_timeout``) dropped messages:
    the subscription stays open, and the next receive goes on after the gap.

    Attributes:
        count: How many messages were lost at this point of the stream.
    """

    count: int

    def __init__(self, name: str, count: int) -> None:
        self.count = count
        super().__init__(
            f"subscription {name!r} lost {count} message(s) here (counted as dropped)"
        )
