"""Small helpers shared by the unit tests."""

from __future__ import annotations

from typing import TypeVar

import trio

from trio_pubsub import SlowConsumerError, Subscription

T = TypeVar("T")


def drain(sub: Subscription[T]) -> list[T]:
    """Receive every pending message without waiting, up to the end of the stream."""
    out: list[T] = []
    while True:
        try:
            out.append(sub.receive_nowait().payload)
        except (trio.WouldBlock, trio.EndOfChannel, SlowConsumerError):
            return out
