"""Drops and disconnects are logged at WARNING, rate-limited."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trio_pubsub import Broker, OverflowPolicy
from trio_pubsub._log import RateLimitedWarning


def records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "trio_pubsub"]


async def test_drop_flood_is_rate_limited(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    """A thousand drops in a burst make one line; the next one reports the rest."""
    caplog.set_level(logging.WARNING, logger="trio_pubsub")
    broker = Broker(int, max_buffer_size=1)
    async with broker.subscribe("metrics.>") as sub:
        for i in range(1001):
            broker.publish_nowait("metrics.cpu", i)
        assert sub.statistics().dropped == 1000
        [first] = records(caplog)
        assert first.levelno == logging.WARNING
        message = first.getMessage()
        assert "'metrics.>'" in message
        assert "DROP_NEWEST" in message
        assert "'metrics.cpu'" in message
        await trio.sleep(1.5)
        broker.publish_nowait("metrics.cpu", -1)
        _, second = records(caplog)
        assert "999 similar warnings suppressed" in second.getMessage()
        assert "1001 dropped so far" in second.getMessage()


async def test_disconnect_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Cutting a slow consumer off logs a WARNING naming its pattern."""
    caplog.set_level(logging.WARNING, logger="trio_pubsub")
    broker = Broker(int, max_buffer_size=1, policy=OverflowPolicy.DISCONNECT)
    async with broker.subscribe("feed.live"):
        broker.publish_nowait("feed.live", 1)
        broker.publish_nowait("feed.live", 2)
    messages = [r.getMessage() for r in records(caplog)]
    assert any(
        "'feed.live' was disconnected as a slow consumer" in m for m in messages
    ), messages


async def test_evictions_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    """DROP_OLDEST evictions are drops too, and are logged as such."""
    caplog.set_level(logging.WARNING, logger="trio_pubsub")
    broker = Broker(int, max_buffer_size=1, policy=OverflowPolicy.DROP_OLDEST)
    async with broker.subscribe("a"):
        broker.publish_nowait("a", 1)
        broker.publish_nowait("a", 2)
    [record] = records(caplog)
    assert "discarded its oldest pending message" in record.getMessage()


async def test_nothing_is_formatted_when_warnings_are_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the logger above WARNING, drops are counted but not logged."""
    caplog.set_level(logging.ERROR, logger="trio_pubsub")
    broker = Broker(int, max_buffer_size=1)
    async with broker.subscribe("a") as sub:
        broker.publish_nowait("a", 1)
        broker.publish_nowait("a", 2)
        assert sub.statistics().dropped == 1
    assert records(caplog) == []


def test_rate_limit_outside_trio_uses_the_system_clock(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Outside a trio run the limiter still works, on the monotonic clock."""
    caplog.set_level(logging.WARNING, logger="trio_pubsub")
    warn = RateLimitedWarning(3600.0)
    for i in range(10):
        warn("drop %d", i)
    assert [r.getMessage() for r in records(caplog)] == ["drop 0"]
