"""Random sequences of operations keep every counter equal to a plain model."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

import pytest
import trio
from hypothesis import given, strategies as st

from tests.model import (
    Model,
    ModelSub,
    model_patterns,
    model_subjects,
    receive_and_compare,
)
from trio_pubsub import (
    Broker,
    BrokerClosedError,
    OverflowPolicy,
    Subscription,
)
from trio_pubsub._inbox import _NO_BUFFER


@pytest.mark.parametrize("cache_size", [0, 2, 8192], ids=["no-cache", "tiny", "cache"])
@given(data=st.data())
async def test_random_operations_match_the_model(
    cache_size: int, data: st.DataObject
) -> None:
    """subscribe/publish_nowait/receive_nowait/leave/close/aclose vs the model."""
    await run_against_model(cache_size, data, queues=[None, None, None, "g", "h"])


@pytest.mark.parametrize("cache_size", [0, 8192], ids=["no-cache", "cache"])
@given(data=st.data())
async def test_queue_groups_match_the_model(
    cache_size: int, data: st.DataObject
) -> None:
    """The same, with most subscriptions in queue groups.

    Which member each message goes to, and every counter, as the model says.
    """
    await run_against_model(cache_size, data, queues=[None, "g", "g", "g", "h"])


async def run_against_model(
    cache_size: int, data: st.DataObject, queues: list[str | None]
) -> None:
    broker = Broker(int, match_cache_size=cache_size)
    model = Model()
    real: list[
        tuple[Subscription[int], AbstractAsyncContextManager[Subscription[int]]]
    ] = []
    payload = 0
    for _ in range(data.draw(st.integers(1, 60), label="steps")):
        op = data.draw(
            st.sampled_from(
                [
                    *("subscribe", "publish", "publish", "publish"),
                    *("receive", "receive", "leave", "close", "aclose"),
                ]
            ),
            label="op",
        )
        if op == "subscribe":
            pattern = data.draw(model_patterns, label="pattern")
            policy = data.draw(st.sampled_from(list(OverflowPolicy)), label="policy")
            size = data.draw(st.integers(1, 3), label="size")
            after = data.draw(st.integers(1, 3), label="after")
            queue = data.draw(st.sampled_from(queues), label="queue")
            if model.closed:
                with pytest.raises(BrokerClosedError):
                    broker.subscribe(pattern)
                continue
            scope = broker.subscribe(
                pattern,
                queue=queue,
                max_buffer_size=size,
                policy=policy,
                disconnect_after=after,
            )
            real.append((await scope.__aenter__(), scope))
            model.add(ModelSub(pattern, policy, size, after, queue=queue))
        elif op == "publish":
            subject = data.draw(model_subjects, label="subject")
            payload += 1
            if model.closed:
                with pytest.raises(BrokerClosedError):
                    broker.publish_nowait(subject, payload)
            else:
                expected = model.publish(subject, payload)
                if expected is None:
                    with pytest.raises(trio.WouldBlock):
                        broker.publish_nowait(subject, payload)
                else:
                    assert broker.publish_nowait(subject, payload) == expected
        elif op in ("receive", "leave", "close") and real:
            index = data.draw(st.integers(0, len(real) - 1), label="index")
            sub, scope = real[index]
            msub = model.subs[index]
            if op == "receive":
                receive_and_compare(sub, msub)
            else:
                if msub.state != "closed":
                    msub.dropped += len(msub.buffer)
                    msub.buffer.clear()
                    msub.state = "closed"
                    model.forget_empty_groups()
                if op == "leave":
                    await scope.__aexit__(None, None, None)
                else:
                    sub.close()
        elif op == "aclose":
            await broker.aclose()
            model.closed = True
            for msub in model.subs:
                if msub.state == "open":
                    msub.state = "ended"
        for (sub, _), msub in zip(real, model.subs, strict=True):
            assert sub.statistics() == msub.stats()
        model.check(broker.statistics(), cache_size)
        assert not _NO_BUFFER  # the placeholder of idle subscriptions stays empty
