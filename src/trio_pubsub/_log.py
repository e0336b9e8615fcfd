"""The ``trio_pubsub`` logger and its rate-limited warnings.

Drops can come by the thousand per second; a warning per drop would bury the
log and cost more than the drop. Each source of warnings (a subscription, a
cause in the NATS bridge) owns a :class:`RateLimitedWarning`, so every source
is named at least once, and what falls between two lines is counted in the
next one.
"""

from __future__ import annotations

import logging
import math
import time
import typing

import trio

logger: typing.Final = logging.getLogger("trio_pubsub")

LOG_INTERVAL: typing.Final = 1.0
"""Seconds between two warnings of one source."""


def _now() -> float:
    try:
        return trio.current_time()
    except RuntimeError:  # outside trio.run
        return time.monotonic()


class RateLimitedWarning:
    """Logs at most one WARNING per ``interval`` seconds of trio's clock.

    Warnings that fall inside the interval are counted, and the count is added
    to the next one that is logged, so a flood of drops costs a few lines per
    second.
    """

    __slots__ = ("_interval", "_logger", "_next", "_suppressed")

    def __init__(
        self, interval: float = LOG_INTERVAL, log: logging.Logger = logger
    ) -> None:
        self._interval = interval
        self._logger = log
        self._next = -math.inf
        self._suppressed = 0

    def __call__(
        self, fmt: str, *args: object, extra: typing.Mapping[str, object] | None = None
    ) -> None:
        if not self._logger.isEnabledFor(logging.WARNING):
            return
        now = _now()
        if now < self._next:
            self._suppressed += 1
            return
        if self._suppressed:
            fmt += " (%d similar warnings suppressed since the last one)"
            args = (*args, self._suppressed)
        self._logger.warning(fmt, *args, extra=extra)
        self._next = now + self._interval
        self._suppressed = 0
