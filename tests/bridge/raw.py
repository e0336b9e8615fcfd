"""A NATS client written with a bare TCP socket, for peers that break the rules.

It speaks just enough of the protocol (CONNECT, PUB, HPUB, PING) to send what
a well-behaved client library would refuse to: subjects that are not UTF-8,
control characters, header blocks that are cut short.
"""

from __future__ import annotations

import trio

GUARD = 20  # seconds: a guard against hanging, never a measure


class RawClient:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.received = bytearray()

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = cls(stream)
        await client.expect(b"INFO ")
        # headers: the server sends HMSG only to clients that announce them
        await client.send(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\n'
        )
        return client

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def pub(self, subject: bytes, payload: bytes) -> None:
        await self.send(b"PUB %s %d\r\n%s\r\n" % (subject, len(payload), payload))

    async def hpub(self, subject: bytes, header_block: bytes, payload: bytes) -> None:
        total = len(header_block) + len(payload)
        await self.send(
            b"HPUB %s %d %d\r\n%s%s\r\n"
            % (subject, len(header_block), total, header_block, payload)
        )

    async def flush(self) -> None:
        """PING and wait for the PONG: the server has processed all sent before."""
        await self.send(b"PING\r\n")
        await self.expect(b"PONG\r\n")

    async def expect(self, marker: bytes) -> None:
        with trio.fail_after(GUARD):
            while marker not in self.received:
                data = await self.stream.receive_some()
                if not data:
                    raise ConnectionError(
                        f"closed before {marker!r}: {self.received!r}"
                    )
                self.received += data
        del self.received[: self.received.index(marker) + len(marker)]

    async def aclose(self) -> None:
        await self.stream.aclose()
