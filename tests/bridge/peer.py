"""A plain nats-py client on an asyncio loop in a thread, driven from trio.

It stands for another program on the NATS server: it makes requests with
``nc.request`` and answers them with ``msg.respond``, as a NATS user would.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Self, TypeVar

import nats
import trio
from nats.aio.client import Client
from nats.aio.msg import Msg

GUARD = 20  # seconds: a guard against hanging, never a measure

R = TypeVar("R")


class Peer:
    """``async with Peer(url) as peer:`` connects; leaving closes and joins."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.nc: Client | None = None
        self.answered: list[bytes] = []  # requests it answered, by their data

    async def call(self, coroutine: Coroutine[Any, Any, R]) -> R:
        """Run ``coroutine`` on the peer's loop; wait for it in a worker thread."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return await trio.to_thread.run_sync(future.result, GUARD)

    async def __aenter__(self) -> Self:
        self.thread.start()
        self.nc = await self.call(nats.connect(self.url))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.nc is not None:
            await self.call(self.nc.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        await trio.to_thread.run_sync(self.thread.join, GUARD)
        self.loop.close()

    async def respond_on(
        self, subject: str, answer: Callable[[bytes], bytes | None]
    ) -> None:
        """Answer every request on ``subject`` with ``answer(data)`` (None: not)."""
        assert self.nc is not None

        async def on_request(msg: Msg) -> None:
            data = answer(msg.data)
            if data is not None:
                self.answered.append(msg.data)
                await msg.respond(data)

        async def subscribe() -> None:
            assert self.nc is not None
            await self.nc.subscribe(subject, cb=on_request)
            await self.nc.flush()

        await self.call(subscribe())

    async def request(
        self,
        subject: str,
        data: bytes,
        timeout: float,  # noqa: ASYNC109 (nats-py's, on its own loop)
        headers: dict[str, str] | None = None,
    ) -> Msg:
        """``nc.request``: the first answer, or nats-py's own error."""
        assert self.nc is not None
        return await self.call(
            self.nc.request(subject, data, timeout=timeout, headers=headers)
        )
