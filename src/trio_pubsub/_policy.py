"""Overflow policies and the one function that decides what a full buffer does.

:func:`decide` is pure: it looks at a buffer's fill and its recent drops and says
what to do with one new message. The subscription carries the decision out, so
the rules of every policy live here and can be tested without tasks.
"""

from __future__ import annotations

import enum


class OverflowPolicy(enum.Enum):
    """What a subscription does with a new message when its buffer is full."""

    DROP_NEWEST = "drop_newest"
    """Refuse the new message and count it as dropped. The default."""

    DROP_OLDEST = "drop_oldest"
    """Discard the oldest pending message (counted as dropped) and keep the new one."""

    BLOCK = "block"
    """Make ``publish`` wait for room; ``publish_nowait`` raises ``trio.WouldBlock``."""

    DISCONNECT = "disconnect"
    """Refuse the new message; after ``disconnect_after`` consecutive refusals, cut
    the subscription off with :class:`SlowConsumerError`."""


class Action(enum.Enum):
    """What to do with one new message."""

    DELIVER = enum.auto()
    """There is room: put it in the buffer."""
    DROP = enum.auto()
    """Refuse it and count a drop."""
    EVICT_OLDEST = enum.auto()
    """Discard the oldest pending message (a drop), then put it in the buffer."""
    WAIT = enum.auto()
    """Wait for room (or refuse with ``WouldBlock`` when waiting is not allowed)."""
    DISCONNECT = enum.auto()
    """Refuse it, count a drop, and cut the subscription off."""


def decide(
    policy: OverflowPolicy,
    *,
    pending: int,
    max_buffer_size: int,
    consecutive_drops: int,
    disconnect_after: int,
) -> Action:
    """Decide what happens to a new message offered to a subscription.

    Args:
        policy: The subscription's overflow policy.
        pending: Messages in its buffer now.
        max_buffer_size: Its buffer's capacity.
        consecutive_drops: Drops since the last message it accepted.
        disconnect_after: Consecutive drops that cut off a ``DISCONNECT`` one.

    Returns:
        The action to carry out.
    """
    if pending < max_buffer_size:
        return Action.DELIVER
    if policy is OverflowPolicy.DROP_NEWEST:
        return Action.DROP
    if policy is OverflowPolicy.DROP_OLDEST:
        return Action.EVICT_OLDEST
    if policy is OverflowPolicy.BLOCK:
        return Action.WAIT
    if consecutive_drops + 1 >= disconnect_after:
        return Action.DISCONNECT
    return Action.DROP
