"""decide(): the rules of every overflow policy, without tasks."""

from __future__ import annotations

import pytest

from trio_pubsub import OverflowPolicy
from trio_pubsub._policy import Action, decide


@pytest.mark.parametrize("policy", list(OverflowPolicy))
def test_room_means_deliver(policy: OverflowPolicy) -> None:
    """Every policy delivers while the buffer has room."""
    action = decide(
        policy, pending=2, max_buffer_size=3, consecutive_drops=5, disconnect_after=1
    )
    assert action is Action.DELIVER


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (OverflowPolicy.DROP_NEWEST, Action.DROP),
        (OverflowPolicy.DROP_OLDEST, Action.EVICT_OLDEST),
        (OverflowPolicy.BLOCK, Action.WAIT),
    ],
)
def test_full_buffer(policy: OverflowPolicy, expected: Action) -> None:
    """A full buffer does what the policy says."""
    action = decide(
        policy, pending=3, max_buffer_size=3, consecutive_drops=0, disconnect_after=1
    )
    assert action is expected


@pytest.mark.parametrize(
    ("consecutive_drops", "disconnect_after", "expected"),
    [
        (0, 1, Action.DISCONNECT),
        (0, 3, Action.DROP),
        (1, 3, Action.DROP),
        (2, 3, Action.DISCONNECT),
    ],
)
def test_disconnect_after_consecutive_drops(
    consecutive_drops: int, disconnect_after: int, expected: Action
) -> None:
    """DISCONNECT cuts off on the drop that makes disconnect_after in a row."""
    action = decide(
        OverflowPolicy.DISCONNECT,
        pending=1,
        max_buffer_size=1,
        consecutive_drops=consecutive_drops,
        disconnect_after=disconnect_after,
    )
    assert action is expected
