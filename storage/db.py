"""SQLite access: the one writer, read-only readers, migrations, file permissions.

The writer owns a stdlib sqlite3 connection on a thread of its own. A
transaction is collected in memory and run as ONE function on that thread
(BEGIN IMMEDIATE, every statement, COMMIT), so a batch costs one thread hop,
not one per statement; anything that fails inside rolls the whole batch back.
Readers use aiosqlite on `mode=ro` connections and read one snapshot per
BEGIN ... COMMIT.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Iterable

from storage.schema import MIGRATIONS, SCHEMA_VERSION


class StorageError(Exception):
    """A problem with the database an operator can act on (message says how)."""


class InsecureHome(StorageError):
    pass


# --------------------------------------------------------------------------- files


def ensure_home(home: Path) -> Path:
    """Create $BOTCTL_HOME 0700; refuse one that group or others can write."""
    home = Path(home).expanduser()
    if not home.exists():
        home.mkdir(mode=0o700, parents=True)
        os.chmod(home, 0o700)
    check_private(home)
    return home


def check_home(home: Path, names: Iterable[str] = ()) -> None:
    """What a reader must refuse as well as a writer: a home, or one of the named files in it (with
    SQLite's -wal and -shm beside them), that group or others can write. Creates nothing: a home
    that does not exist yet is no risk."""
    home = Path(home).expanduser()
    check_private(home)
    for name in names:
        for suffix in ("", "-wal", "-shm"):
            check_private(home / f"{name}{suffix}")


def check_private(path: Path) -> None:
    path = Path(path)
    if not path.exists():
        return
    mode = path.stat().st_mode
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        kind = "directory" if path.is_dir() else "file"
        raise InsecureHome(
            f"{kind} {path} is writable by group or others; whoever can write it can command the bot "
            f"(fix: chmod {'700' if path.is_dir() else '600'} {path})"
        )


def _private_file(path: Path) -> None:
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists():
            os.chmod(candidate, 0o600)


def connect(path: Path, synchronous: str = "FULL", readonly: bool = False) -> sqlite3.Connection:
    """A configured stdlib connection (autocommit mode: we issue BEGIN ourselves)."""
    path = Path(path)
    check_private(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None,
                               check_same_thread=False)
    else:
        fresh = not path.exists()
        old = os.umask(0o077)
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        finally:
            os.umask(old)
        if fresh:
            _private_file(path)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA foreign_keys = ON")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA wal_autocheckpoint = 250")
    return conn


def migrate(conn: sqlite3.Connection, migrations: list[str] = MIGRATIONS) -> int:
    """Apply forward migrations past `PRAGMA user_version`, each in its own transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(migrations):
        raise StorageError(
            f"database schema version {version} is newer than this botctl understands ({len(migrations)}); "
            "upgrade botctl"
        )
    for number in range(version, len(migrations)):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split(migrations[number]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(migrations)


def _split(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


# --------------------------------------------------------------------------- the writer


class Tx:
    """Statements of one transaction, collected in memory and run in one hop."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[tuple[str, Any, bool]] = []

    def execute(self, sql: str, params: Iterable[Any] = ()) -> None:
        self.ops.append((sql, params, False))

    def executemany(self, sql: str, rows: list) -> None:
        if rows:
            self.ops.append((sql, rows, True))


class Writer:
    """The only connection that writes the book. Not thread-safe by design: one owner."""

    def __init__(self, path: Path, synchronous: str = "FULL"):
        self.path = Path(path)
        self.synchronous = synchronous
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="botctl-writer")
        self._conn: sqlite3.Connection | None = None
        # Test seam: called on the writer thread after the statements, before COMMIT.
        self.before_commit: Callable[[sqlite3.Connection], None] | None = None

    async def open(self) -> "Writer":
        await self.run(self._open)
        return self

    def _open(self) -> None:
        self._conn = connect(self.path, self.synchronous)
        migrate(self._conn)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, fn, *args)

    def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """For code that already runs outside the event loop (tests, tools)."""
        return self._pool.submit(fn, *args).result()

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        """Read on the writer thread (used by load at start, never in the hot path)."""
        return self._conn.execute(sql, tuple(params)).fetchall()

    def execute_write(self, sql: str, params: Iterable[Any] = ()) -> int:
        """One statement in a transaction of its own; its row count. For the inbox's mailbox
        protocol (taking a row before deciding it), never for the book."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            count = conn.execute(sql, tuple(params)).rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return count

    def commit_ops(self, ops: list[tuple[str, Any, bool]]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, params, many in ops:
                if many:
                    conn.executemany(sql, params)
                else:
                    conn.execute(sql, params)
            if self.before_commit is not None:
                self.before_commit(conn)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    async def commit(self, tx: Tx) -> None:
        """Run the transaction on the writer thread. Cancel-safe: the thread finishes what it
        started, so on cancellation this waits for the outcome; CancelledError then means the
        transaction COMMITTED (a failure raises its own exception instead)."""
        done = asyncio.ensure_future(self.run(self.commit_ops, tx.ops))
        try:
            await asyncio.shield(done)
        except asyncio.CancelledError:
            await asyncio.wait([done])
            done.result()
            raise

    @asynccontextmanager
    async def transaction(self):
        """BEGIN IMMEDIATE ... COMMIT around what the body adds; nothing runs if the body raises."""
        tx = Tx()
        yield tx
        await self.commit(tx)

    async def close(self) -> None:
        if self._conn is not None:
            await self.run(self._conn.close)
            self._conn = None
        self._pool.shutdown(wait=True)


# --------------------------------------------------------------------------- readers


@asynccontextmanager
async def read_snapshot(path: Path):
    """A read-only aiosqlite connection inside one read transaction: a consistent view."""
    import aiosqlite

    path = Path(path)
    if not path.exists():
        raise StorageError(f"no database at {path} (run `botctl run` first)")
    check_private(path)
    conn = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        await conn.execute("PRAGMA busy_timeout = 5000")
        version = (await (await conn.execute("PRAGMA user_version")).fetchone())[0]
        if version != SCHEMA_VERSION:
            raise StorageError(
                f"database schema version {version}, this botctl reads {SCHEMA_VERSION}"
                + (" (start the engine once to migrate)" if version < SCHEMA_VERSION else "")
            )
        await conn.execute("BEGIN")
        try:
            yield conn
        finally:
            await conn.execute("COMMIT")
    finally:
        await conn.close()


async def fetch_all(conn, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
    cursor = await conn.execute(sql, tuple(params))
    try:
        return list(await cursor.fetchall())
    finally:
        await cursor.close()
