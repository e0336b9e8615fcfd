"""The outbox: what a JetStream bridge accepted, on disk until the server has it.

One SQLite file (the standard library's ``sqlite3``, WAL journal) holds a row
per message: its id (``Nats-Msg-Id``), subject, encoded payload and headers.
A message is *accepted* once its row is committed; it is removed once the
server's PubAck for it came back. After a crash, what the file holds is sent
again with the same ids, and JetStream drops what it stored already (within
its duplicate window), so the stream holds each message once.

Every call into SQLite runs in a worker thread, one at a time (a
``CapacityLimiter`` of one), never in the trio thread. Rows to add are
gathered while a commit is under way and committed together: one commit, one
``fsync``, for all the publishers that came meanwhile.
"""

from __future__ import annotations

import json
import sqlite3
import typing

import trio

if typing.TYPE_CHECKING:
    from pathlib import Path

# (row id, msg id, subject, data, headers)
Row = tuple[int, str, str, bytes, dict[str, str]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    row INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    data BLOB NOT NULL,
    headers TEXT NOT NULL
)
"""


class _Batch:
    """One commit of the rows that came while the one before was under way."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: sqlite3.Error | None = None


class Outbox:
    """The outbox file, opened by :meth:`open` and closed by :meth:`close`."""

    def __init__(self, path: Path, capacity: int) -> None:
        self.path = path
        self.capacity = capacity
        """The most messages it holds; a publish waits for room beyond."""
        self.pending = 0
        """Messages it holds now (committed, not yet acknowledged)."""
        self._db: sqlite3.Connection | None = None
        self._lock = trio.CapacityLimiter(1)  # one call into SQLite at a time
        self._waiting: list[tuple[str, str, bytes, str]] = []  # rows to commit
        self._batch: _Batch | None = None  # the commit that rows waiting join
        self._room = trio.Event()
        self.added = trio.Event()  # set when rows come in (for the sender)

    async def open(self) -> None:
        """Open (or create) the file; count what it holds from before."""

        def connect() -> int:
            db = sqlite3.connect(
                self.path, check_same_thread=False, isolation_level=None
            )
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(_SCHEMA)
            self._db = db
            (count,) = db.execute("SELECT COUNT(*) FROM outbox").fetchone()
            return int(count)

        self.pending = await self._call(connect)
        if self.pending:
            self.added.set()

    async def _call(self, work: typing.Callable[[], typing.Any]) -> typing.Any:
        async with self._lock:
            return await trio.to_thread.run_sync(work, abandon_on_cancel=False)

    async def add(
        self, msg_id: str, subject: str, data: bytes, headers: dict[str, str]
    ) -> None:
        """Commit a message (waits for room); returns once it is on disk.

        A ``msg_id`` the outbox holds already is not added twice.

        Raises:
            sqlite3.Error: the commit failed (the message is not accepted).
        """
        while self.pending + len(self._waiting) >= self.capacity:
            if self._room.is_set():
                self._room = trio.Event()
            await self._room.wait()
        self._waiting.append((msg_id, subject, data, json.dumps(headers)))
        batch = self._batch
        if batch is None:
            # The first to come commits for all that join before it starts.
            batch = self._batch = _Batch()
            with trio.CancelScope(shield=True):  # (the others wait on it)
                await self._commit_waiting(batch)
        else:
            await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    async def _commit_waiting(self, batch: _Batch) -> None:
        """Commit what waits (more may join until the lock is ours)."""
        try:
            async with self._lock:
                rows, self._waiting = self._waiting, []
                self._batch = None
                db = self._db
                assert db is not None

                def insert() -> int:
                    before = db.total_changes
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        db.executemany(
                            "INSERT OR IGNORE INTO outbox (msg_id, subject, data, "
                            "headers) VALUES (?, ?, ?, ?)",
                            rows,
                        )
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
                    db.execute("COMMIT")
                    return db.total_changes - before

                added = await trio.to_thread.run_sync(insert, abandon_on_cancel=False)
            self.pending += added
            if added:
                self.added.set()
        except sqlite3.Error as error:
            batch.error = error
        finally:
            batch.done.set()

    async def take(self, limit: int) -> list[Row]:
        """The oldest ``limit`` rows it holds, in the order they were added."""
        db = self._db
        assert db is not None

        def select() -> list[Row]:
            found = db.execute(
                "SELECT row, msg_id, subject, data, headers FROM outbox "
                "ORDER BY row LIMIT ?",
                (limit,),
            ).fetchall()
            return [(r, m, s, bytes(d), json.loads(h)) for r, m, s, d, h in found]

        rows: list[Row] = await self._call(select)
        return rows

    async def remove(self, rows: list[int]) -> None:
        """The server has these: delete them (one commit)."""
        db = self._db
        assert db is not None

        def delete() -> int:
            before = db.total_changes
            db.execute("BEGIN IMMEDIATE")
            db.executemany("DELETE FROM outbox WHERE row = ?", [(r,) for r in rows])
            db.execute("COMMIT")
            return db.total_changes - before

        removed: int = await self._call(delete)
        self.pending -= removed
        self._room.set()

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await self._call(db.close)
