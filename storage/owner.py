"""One owner of the book at a time: an OS lock on $BOTCTL_HOME/botctl.lock.

flock is released by the kernel when the process dies, however it dies, so a
lock left by a `kill -9` never blocks a restart. The file says who holds it
(pid and command) for the error message and `botctl status`; the lock, not
the text, is the truth.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from storage.db import translated

LOCK_NAME = "botctl.lock"


class OwnerBusy(Exception):
    def __init__(self, owner: dict | None):
        self.owner = owner or {}
        who = f"pid {self.owner.get('pid', '?')} ({self.owner.get('command', '?')})"
        super().__init__(f"the book is owned by {who}; stop it first or send commands through it")


class Ownership:
    def __init__(self, fd: int, path: Path):
        self._fd = fd
        self.path = path

    def release(self) -> None:
        if self._fd >= 0:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = -1


def _read(path: Path) -> dict | None:
    try:
        text = path.read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def acquire(home: Path, command: str, tries: int = 5) -> Ownership:
    """Take the lock or raise OwnerBusy naming the holder (a StorageError if the file cannot be
    written: a read-only or full disk, no permission, a directory in its place)."""
    path = Path(home) / LOCK_NAME
    try:
        return _acquire(path, command, tries)
    except OSError as exc:
        raise translated(exc, path)


def _acquire(path: Path, command: str, tries: int) -> Ownership:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    for attempt in range(tries):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if attempt == tries - 1:
                os.close(fd)
                raise OwnerBusy(_read(path)) from None
            time.sleep(0.02)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": command, "since": int(time.time())}).encode())
        os.fsync(fd)
    except BaseException:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        raise
    return Ownership(fd, path)


def current_owner(home: Path) -> dict | None:
    """Who owns the book now, or None (a probe that never blocks the owner for long)."""
    path = Path(home) / LOCK_NAME
    if not path.exists():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise translated(exc, path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(path) or {"pid": None, "command": None}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
