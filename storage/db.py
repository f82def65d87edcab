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
import errno
import os
import sqlite3
import stat
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Iterable

from storage.schema import MIGRATIONS, SCHEMA_VERSION


class StorageError(Exception):
    """A problem with the home's files that an operator can act on: the message names the file and
    says what to do. `code` is the exit code: 1 for the machine's state, 2 for a setting to fix."""

    code = 1


class InsecureHome(StorageError):
    code = 2


class BadHome(StorageError):
    """BOTCTL_HOME names something that cannot be a home (a file, a name too long): a setting."""

    code = 2


class NotABook(StorageError):
    """Not a book this botctl can use (not SQLite, empty, truncated, damaged, a newer schema):
    never written to, so that a backup or a newer botctl still finds it as it was."""


class DiskFull(StorageError):
    pass


class ReadOnly(StorageError):
    """A read-only file system, or no permission to write: nothing can be committed there."""


class WrongKind(StorageError):
    """A directory where botctl keeps a file, or a file where it keeps a directory."""


# --------------------------------------------------------------------------- files


def ensure_home(home: Path) -> Path:
    """Create $BOTCTL_HOME 0700; refuse one that group or others can write, or that is no directory."""
    home = Path(home).expanduser()
    _note_home(home)
    try:
        if not home.exists():
            home.mkdir(mode=0o700, parents=True)
            os.chmod(home, 0o700)
        _must_be_directory(home)
        check_private(home)
    except OSError as exc:
        raise translated(exc, home)
    return home


def check_home(home: Path, names: Iterable[str] = ()) -> None:
    """What a reader must refuse as well as a writer: a home, or one of the named files in it (with
    SQLite's -wal and -shm beside them), that group or others can write, and a home that is no
    directory. Creates nothing: a home that does not exist yet is no risk."""
    home = Path(home).expanduser()
    _note_home(home)
    try:
        _must_be_directory(home)
        check_private(home)
        for name in names:
            for suffix in ("", "-wal", "-shm"):
                check_private(home / f"{name}{suffix}")
    except OSError as exc:
        raise translated(exc, home)


def _must_be_directory(home: Path) -> None:
    if home.exists() and not home.is_dir():
        raise BadHome(f"BOTCTL_HOME {home} is a file, not a directory: point BOTCTL_HOME at a directory "
                      "(botctl creates it if it does not exist)")


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
        return open_reader(path, check_version=False)
    if path.is_dir():
        raise _directory(path)
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
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA wal_autocheckpoint = 250")
    return conn


def migrate(conn: sqlite3.Connection, migrations: list[str] = MIGRATIONS, path: Path | None = None) -> int:
    """Apply forward migrations past `PRAGMA user_version`, each in its own transaction."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > len(migrations):
        raise _newer(path or "the database", version, len(migrations))
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
        migrate(self._conn, path=self.path)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)` on the writer thread. A failure of the machine (full disk, read-only, not a
        database...) comes back as the StorageError that names the book and says what to do."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn, *args)
        except (sqlite3.Error, OSError) as exc:
            raise translated(exc, self.path)

    def run_sync(self, fn: Callable[..., Any], *args: Any) -> Any:
        """For code that already runs outside the event loop (tests, tools)."""
        try:
            return self._pool.submit(fn, *args).result()
        except (sqlite3.Error, OSError) as exc:
            raise translated(exc, self.path)

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


def open_reader(path: Path, check_version: bool = True) -> sqlite3.Connection:
    """A read-only stdlib connection to a book, checked before anyone reads it: a file (not a
    directory), SQLite, this botctl's schema (`check_version`), not truncated. On a read-only file
    system (a disk remounted read-only after errors) the book is still read, as immutable: nothing
    can write it there. Every failure is a StorageError naming the file."""
    path = Path(path)
    if not path.exists():
        raise StorageError(f"no database at {path} (run `botctl run` first)")
    check_private(path)
    if path.is_dir():
        raise _directory(path)
    conn = None
    try:
        conn = _reader(path)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.OperationalError:
            if not _frozen(path):
                raise
            conn.close()
            conn = _reader(path, immutable=True)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        problem = (_schema_problem(path, version) if check_version else None) or _truncated(path)
        if problem is not None:
            raise problem
        return conn
    except BaseException as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, (sqlite3.Error, OSError)):
            raise translated(exc, path)
        raise


def check_book(path: Path) -> None:
    """Refuse, with the file named and what to do, a book no read can use (see open_reader)."""
    open_reader(path).close()


def _reader(path: Path, immutable: bool = False) -> sqlite3.Connection:
    flags = "mode=ro&immutable=1" if immutable else "mode=ro"
    return sqlite3.connect(f"file:{path}?{flags}", uri=True, isolation_level=None, check_same_thread=False,
                           timeout=5)


def _frozen(path: Path) -> bool:
    """Can the book be read as immutable? Only on a read-only file system (nobody writes it there)
    and with no write-ahead log holding commits the file itself does not have yet."""
    wal = Path(f"{path}-wal")
    return _read_only_fs(path.parent) and not (wal.exists() and wal.stat().st_size > 0)


def _schema_problem(path: Path, version: int) -> StorageError | None:
    if version == SCHEMA_VERSION:
        return None
    if version > SCHEMA_VERSION:
        return _newer(path, version, SCHEMA_VERSION)
    if version == 0 and path.stat().st_size == 0:
        return NotABook(f"{path} is empty (0 bytes): there is no book in it; if one was there, restore it "
                        "from a backup, otherwise `botctl run` starts a new book in it")
    return StorageError(f"{path} has schema version {version}, this botctl reads {SCHEMA_VERSION}: start the "
                        "engine once to migrate it (`botctl run`)")


def _newer(path, version: int, known: int) -> NotABook:
    return NotABook(f"{path} has schema version {version}, newer than this botctl knows ({known}): upgrade "
                    "botctl (this one does not touch it)")


@asynccontextmanager
async def read_snapshot(path: Path):
    """A read-only aiosqlite connection inside one read transaction: a consistent view. The
    connection is opened and checked here first (open_reader): aiosqlite's own connect, failing,
    leaves its thread to report to an event loop that is closed by then."""
    import aiosqlite

    path = Path(path)
    raw = open_reader(path)
    conn = aiosqlite.Connection(lambda: raw, 64)
    try:
        await conn
    except BaseException:
        raw.close()
        raise
    try:
        await conn.execute("BEGIN")
        try:
            yield conn
        finally:
            await conn.execute("COMMIT")
    except (sqlite3.Error, OSError) as exc:
        raise translated(exc, path)
    finally:
        await conn.close()


async def fetch_all(conn, sql: str, params: Iterable[Any] = ()) -> list[tuple]:
    cursor = await conn.execute(sql, tuple(params))
    try:
        return list(await cursor.fetchall())
    finally:
        await cursor.close()


# --------------------------------------------------------------------------- failures of the machine
#
# One place turns what sqlite3 and the OS raise into what an operator can act on: a full disk, a
# read-only file system, no permission, a file that is not a book, a directory where a file
# belongs. Anything else is a bug and stays itself (the caller shows it as one).

_home: Path | None = None  # the home this process works in: where a failure naming no file happened


def _note_home(home: Path) -> None:
    global _home
    _home = Path(home)


def translated(exc: BaseException, path: Path | str | None = None) -> BaseException:
    """`exc` as the StorageError it means (with `exc` as its cause), or `exc` itself: raise the result."""
    known = failure(exc, path)
    if known is None or known is exc:
        return exc
    known.__cause__ = exc
    return known


def failure(exc: BaseException, path: Path | str | None = None) -> StorageError | None:
    """What an sqlite3 or OS error means for the operator, naming the file and what to do; None when
    it is none of the machine's expected failures. `path`: the file the failing call worked on
    (an OSError names its own); without one, the home this process works in."""
    if isinstance(exc, StorageError):
        return exc
    path = Path(path) if path is not None else None
    if isinstance(exc, OSError):
        return _os_failure(exc, Path(os.fsdecode(exc.filename)) if exc.filename else path)
    if isinstance(exc, sqlite3.Error):
        return _sqlite_failure(exc, path)
    return None


def _os_failure(exc: OSError, path: Path | None) -> StorageError | None:
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return DiskFull(_full(path))
    if code == errno.ENAMETOOLONG:
        return _too_long(_home or path)
    if path is None:
        return None
    if code == errno.EROFS:
        return ReadOnly(_read_only(path))
    if code in (errno.EACCES, errno.EPERM):
        return ReadOnly(_no_permission(path))
    if code == errno.EISDIR:
        return _directory(path)
    if code == errno.ENOTDIR:
        return _not_directory(path)
    if code == errno.EIO:
        return StorageError(_io(path, exc))
    return None


def _sqlite_failure(exc: sqlite3.Error, path: Path | None) -> StorageError | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return None
    primary = code & 0xFF
    if primary == sqlite3.SQLITE_FULL:
        return DiskFull(_full(path))
    if primary in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT):
        return _damaged(path, exc)
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StorageError(f"{path or 'the book'} is busy: another process held its write lock for more than "
                            "5 s; try again")
    if primary not in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR,
                       sqlite3.SQLITE_PERM):
        return None
    try:  # what stands in the way, from the file system itself
        if path is not None and path.is_dir() and path != _home:
            return _directory(path)
        folder = path.parent if path is not None else _home
        if folder is None:
            return None
        if not folder.is_dir():
            return _not_directory(folder)
        if _read_only_fs(folder):
            return ReadOnly(_read_only(path or folder))
        if _no_room(folder):
            return DiskFull(_full(path))
        if not os.access(folder, os.W_OK) or (path is not None and path.exists()
                                              and not os.access(path, os.R_OK | os.W_OK)):
            return ReadOnly(_no_permission(path if path is not None and path.exists() else folder))
    except OSError:
        return None
    if primary == sqlite3.SQLITE_IOERR:
        return StorageError(_io(path or folder, exc))
    return None


def _where(path: Path | None) -> Path | None:
    """The home a file belongs to (the folder holding it when no home is known)."""
    if _home is not None:
        return _home
    return path.parent if path is not None else None


def _full(path: Path | None) -> str:
    return (f"no space left on the disk holding {_where(path) or 'the home'}: nothing was half-written; "
            "free space and start again")


def _read_only(path: Path) -> str:
    home = _where(path) or path
    return (f"{home} is on a read-only file system: nothing can be written there (the lock, the book, the "
            "logs); remount it read-write (read commands still work)")


def _no_permission(path: Path) -> str:
    for folder in path.parents:  # the outermost folder this user cannot enter is what stands in the way
        if os.path.isdir(folder) and not os.access(folder, os.X_OK):
            path = folder
    try:
        info = path.stat()
        owner = f" (owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o})"
    except OSError:
        owner = ""
    home = _where(path)
    if home is not None and (path == home or home in path.parents):
        return (f"no permission to use {path}{owner}: run botctl as the user that owns {home}, or give that "
                "user the home back")
    return f"no permission to use {path}{owner}: give the user running botctl access to it"


def _directory(path: Path) -> WrongKind:
    return WrongKind(f"{path} is a directory where botctl keeps a file: move it aside (botctl does not "
                     "remove it)")


def _not_directory(path: Path) -> StorageError:
    """ENOTDIR: the first part of the path that is a file, not a directory."""
    culprit = next((p for p in [path, *path.parents] if os.path.lexists(p) and not p.is_dir()), path)
    home = _home
    if home is not None and (culprit == home or culprit in home.parents):
        return BadHome(f"BOTCTL_HOME {home}: {culprit} is a file, not a directory; point BOTCTL_HOME at a "
                       "directory (botctl creates it if it does not exist)")
    return WrongKind(f"{culprit} is a file where botctl keeps a directory: move it aside (botctl does not "
                     "remove it)")


def _too_long(path: Path | None) -> BadHome:
    text = str(path or "")
    longest = max((len(part) for part in Path(text).parts), default=0)
    shown = text if len(text) <= 80 else f"{text[:50]}...{text[-20:]}"
    why = (f"has a name of {longest} characters, more than the file system allows (255)" if longest > 255
           else f"is {len(text)} characters long, more than the file system allows")
    return BadHome(f"BOTCTL_HOME {shown} {why}: choose a shorter BOTCTL_HOME")


def _io(path: Path | None, exc: BaseException) -> str:
    return (f"the disk failed reading or writing {path or 'the book'} ({exc}): check the disk (dmesg); the "
            "book is as of the last commit")


def _damaged(path: Path | None, exc: BaseException) -> NotABook:
    """Not a database, truncated or damaged: which, from the file itself (its size and header)."""
    candidates = [path] if path is not None else sorted(_home.glob("*.db")) if _home is not None else []
    for candidate in candidates:
        why = _damage(candidate)
        if why is not None:
            return NotABook(f"{candidate} {why}: it is not a book botctl can use; restore it from a backup, "
                            "or move it aside to start a new one (botctl does not write to it)")
    where = path or (f"a database in {_home}" if _home is not None else "the database")
    return NotABook(f"{where} is damaged ({exc}): restore it from a backup, or move it aside to start a new "
                    "one (botctl does not write to it)")


SQLITE_MAGIC = b"SQLite format 3\x00"


def _damage(path: Path) -> str | None:
    """What is wrong with a database file, read from its first 100 bytes; None if nothing shows."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            header = fh.read(100)
    except OSError:
        return None
    if size == 0:
        return None  # SQLite reads an empty file as an empty database
    if not header.startswith(SQLITE_MAGIC):
        return "is not a SQLite database (its first bytes are not SQLite's header)"
    if len(header) < 100:
        return f"is truncated ({size} bytes)"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] == header[92:96] and pages and size < pages * page_size:
        return f"is truncated ({size} bytes of the {pages * page_size} its header gives)"
    return "is damaged (database disk image is malformed)"


def _truncated(path: Path) -> NotABook | None:
    """A file shorter than its header says. Only judged with no write-ahead log in use: a checkpoint
    writes the header before the pages that grow the file."""
    wal = Path(f"{path}-wal")
    why = None if wal.exists() and wal.stat().st_size > 0 else _damage(path)
    if why is None or "truncated" not in why:
        return None
    return NotABook(f"{path} {why}: it is not a book botctl can use; restore it from a backup, or move it "
                    "aside to start a new one (botctl does not write to it)")


def _read_only_fs(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _no_room(folder: Path) -> bool:
    try:
        info = os.statvfs(folder)
    except OSError:
        return False
    return info.f_bavail * info.f_frsize < 64 * 1024
