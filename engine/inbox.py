"""Operator commands from any process, through the one queue.

A process that does not own the book writes a row to the `inbox` table (who,
when, what) and nudges the owner through a Unix datagram socket in
$BOTCTL_HOME; the owner's poller turns the row into engine commands, submits
them to the sequencer, and the row's result is written IN THE SAME
TRANSACTION as the last of them, so a crash can neither lose the answer nor
apply a command twice. A one-second fallback poll covers a lost nudge.

`plan` is pure: it builds the engine commands for a row against the current
book, and is idempotent (a row re-run after a crash skips what already
happened).
"""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import os
import socket
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from engine.core.messages import AnswerInbox, FromInbox
from engine.core.operator import COMMANDS, needs_venue, outcome, plan
from engine.redact import said
from engine.sequencer import SequencerStopped
from storage import StorageError

log = logging.getLogger("botctl.inbox")

SOCKET_NAME = "inbox.sock"


def who() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


# --------------------------------------------------------------------------- sending side


class BookBusy(StorageError):
    """Another process held the book's write lock past the wait (an engine stopped with Ctrl-Z
    in the middle of a commit, a long maintenance transaction): nothing was written."""


BUSY_WAIT_S = 10.0


def busy_wait_s() -> float:
    """How long a command waits for another process's write lock: BOTCTL_LOCK_WAIT_S seconds (0.1 to
    3600) if set to one, else 10. A commit holds it for milliseconds; only a stopped process holds
    it longer, and then the command says so instead of waiting for ever."""
    try:
        value = float(os.environ.get("BOTCTL_LOCK_WAIT_S", BUSY_WAIT_S))
    except ValueError:
        return BUSY_WAIT_S
    return value if 0.1 <= value <= 3600 else BUSY_WAIT_S


def _write(db: Path, sql: str, params: tuple) -> sqlite3.Cursor:
    """One statement in a short transaction of its own, on a connection of its own."""
    wait = busy_wait_s()
    conn = sqlite3.connect(db, isolation_level=None, timeout=wait)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute(sql, params)
        conn.execute("COMMIT")
        return cur
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        raise BookBusy(f"another process has held the book's write lock ({db}) for over {wait:g}s "
                       "(an engine stopped mid-commit?): nothing was written") from None
    finally:
        conn.close()


def post(db: Path, command: str, args: dict, sender: str | None = None) -> int:
    """Write one command row (a short transaction of its own) and nudge the owner."""
    if command not in COMMANDS:
        raise ValueError(f"unknown operator command {command!r}")
    ident = _write(db, "INSERT INTO inbox (command, args, who, created_at, state) VALUES (?, ?, ?, ?, 'pending')",
                   (command, json.dumps(args, sort_keys=True), sender or who(), int(time.time() * 1000))).lastrowid
    nudge(db.parent)
    return ident


def nudge(home: Path) -> None:
    path = Path(home) / SOCKET_NAME
    if not path.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"!", str(path))
        except OSError:  # nobody listening: the fallback poll (or a one-off owner) picks it up
            pass


def read(db: Path, ident: int) -> dict | None:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    try:
        row = conn.execute("SELECT id, command, args, who, created_at, state, result, decided_at FROM inbox "
                           "WHERE id = ?", (ident,)).fetchone()
    finally:
        conn.close()
    if row is None:
        return None
    keys = ("id", "command", "args", "who", "created_at", "state", "result", "decided_at")
    out = dict(zip(keys, row))
    out["args"] = json.loads(out["args"])
    out["result"] = json.loads(out["result"]) if out["result"] else None
    return out


OPEN = "(state = 'pending' OR state = 'taken')"  # posted, not yet answered (taken: an owner is deciding it)


class Unowned(Exception):
    """The row is still open and no process owns the book: the waiter must decide it itself."""


async def wait(db: Path, ident: int, timeout: float, home: Path | None = None) -> dict:
    """Poll the row until it is decided (the CLI's side: short-lived, so polling is fine).

    With `home`, raise Unowned as soon as the row is open while nobody owns the book (the owner
    that was to decide it has exited or died): rows must never wait for an owner that may never come."""
    from storage.owner import current_owner

    deadline = time.monotonic() + timeout
    delay, next_check = 0.005, 0.0
    while True:
        row = read(db, ident)
        if row is not None and row["state"] not in ("pending", "taken"):
            return row
        now = time.monotonic()
        if home is not None and now >= next_check:
            next_check = now + 0.1
            if current_owner(home) is None and read(db, ident)["state"] in ("pending", "taken"):
                raise Unowned(ident)
        if now >= deadline:
            raise TimeoutError(f"command {ident} was not decided within {timeout:g}s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)


def withdraw(db: Path, ident: int, why: str) -> bool:
    """Take back a row that no owner has taken, in one transaction: True means it will never run.

    False: an owner took it (or answered it) first, and its answer is the truth. BookBusy: the
    book's write lock could not be had, so nobody knows yet."""
    answer = json.dumps({"ok": [], "refused": [f"withdrawn by its sender: {why}"], "closing": []})
    return _write(db, "UPDATE inbox SET state = 'withdrawn', result = ?, decided_at = ? WHERE id = ? AND "
                      "state = 'pending'", (answer, int(time.time() * 1000), ident)).rowcount == 1


# --------------------------------------------------------------------------- owner side


async def promotion_args(engine, args: dict) -> dict:
    """The owner measures the evidence itself (a sender's word is not evidence), just before
    deciding; the decider refuses a promotion with anything missing."""
    from engine.core.evidence import checklist
    from engine.rollout import as_json, evidence_of
    book = engine.book
    current = book.policy.stages[book.meta.get("stage")]
    db = Path(engine.settings.home) / "botctl.db"
    ev = await asyncio.to_thread(evidence_of, db, book.policy, current.name)
    rollout = engine.settings.rollout
    items = checklist(current, ev, rollout.min_hours, rollout.min_trades)
    summary = as_json(current, ev, items)
    missing = [i.missing() for i in items if not i.ok] if current.next else ["this is the last stage"]
    return {**args, "to": args.get("to") or current.next or current.name, "_missing": missing,
            "_evidence": json.dumps(summary["evidence"], sort_keys=True)}


async def _fees(engine) -> dict[str, int | str]:
    """Each chain's fee reserve for a close, or why none can be priced now (no venue is open here,
    the executor could not tell): such a close is refused with that reason, nothing reserved."""
    fees: dict[str, int | str] = {}
    for name in engine.book.policy.chains:
        executor = engine.executors.get(name)
        if executor is None:
            fees[name] = getattr(engine, "no_venue", f"no venue for {name} is open")
            continue
        try:
            fees[name] = await executor.fee_reserve()
        except Exception as exc:
            fees[name] = f"its network fee cannot be priced now ({said(exc)})"
    return fees


def _args(text: str) -> dict:
    """A row's arguments for choosing it (a malformed row is chosen as if it had none, and then
    answered as bad by _decide_row)."""
    try:
        args = json.loads(text)
    except ValueError:
        return {}
    return args if isinstance(args, dict) else {}


class InboxPoller:
    """The owner's half: wakes on a nudge (or every `fallback_s`), feeds rows to the sequencer."""

    def __init__(self, engine, fallback_s: float = 1.0):
        self.engine = engine
        self.fallback_s = fallback_s
        self.home = Path(engine.settings.home)
        self._wake = asyncio.Event()
        self._sock: socket.socket | None = None
        self._task: asyncio.Task | None = None
        self.handled = 0

    def start(self) -> "InboxPoller":
        path = self.home / SOCKET_NAME
        try:
            path.unlink()  # only the lock owner gets here: a leftover socket is stale
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        old = os.umask(0o077)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_nudge)
        self._wake.set()  # rows that arrived while nobody owned the book
        self._task = asyncio.create_task(self._loop(), name="botctl-inbox")
        return self

    def _on_nudge(self) -> None:
        try:
            while True:
                self._sock.recv(64)
        except (BlockingIOError, OSError):
            pass
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.fallback_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            try:
                if await self.drain():
                    wake = getattr(self.engine, "wake", None)  # a close to send, a halt to act on: now
                    if wake is not None:
                        wake()
            except Exception:
                log.exception("inbox drain failed")

    async def drain(self, only: Callable[[str, dict], bool] | None = None) -> int:
        """Decide every open row (those `only(command, args)` accepts, if given), oldest first, until
        none is left: rows posted while this drains are decided too, before the caller lets go of the book.

        Each row is taken first (pending -> taken, one transaction): a sender that gave up can
        withdraw only a row nobody has taken, so a row either runs or is withdrawn, never both.
        A 'taken' row found here was left by an owner that died while deciding it: it is decided
        again (plan() skips what already happened)."""
        writer = self.engine.writer
        seen: set[int] = set()
        while True:
            rows = await writer.run(writer.query, f"SELECT id, command, args, who FROM inbox WHERE {OPEN} ORDER BY id")
            rows = [row for row in rows if row[0] not in seen and (only is None or only(row[1], _args(row[2])))]
            if not rows:
                break
            for ident, command, args_text, sender in rows:
                seen.add(ident)
                if not await writer.run(writer.execute_write,
                                        f"UPDATE inbox SET state = 'taken' WHERE id = ? AND {OPEN}", (ident,)):
                    continue  # withdrawn by its sender meanwhile
                await self._decide_row(ident, command, args_text, sender)
        self.handled += len(seen)
        return len(seen)

    async def _decide_row(self, ident: int, command: str, args_text: str, sender: str) -> None:
        try:
            args = json.loads(args_text)
            if not isinstance(args, dict):
                raise ValueError("arguments are not a JSON object")
        except ValueError as exc:
            await self._answer(ident, "failed", f"bad command: {exc}", sender)
            return
        try:
            await self._handle(ident, command, args, sender)
        except SequencerStopped:
            raise
        except Exception as exc:  # never leave a row taken and unanswered behind a bug
            log.exception("inbox row %s (%s) failed", ident, command)
            await self._answer(ident, "failed", said(exc), sender)

    async def _answer(self, ident: int, state: str, refused: str, sender: str = "") -> None:
        answer = {"ok": [], "refused": [refused], "closing": []}
        await self.engine.sequencer.submit(AnswerInbox(ident, state, json.dumps(answer), int(time.time() * 1000),
                                                       sender))

    async def _handle(self, ident: int, command: str, args: dict, sender: str) -> None:
        engine = self.engine
        fees = await _fees(engine) if needs_venue(command, args) else {}
        submit, now = engine.sequencer.submit, engine.now()
        try:
            if command == "promote":
                args = await promotion_args(engine, args)
        except Exception as exc:  # the evidence could not be measured: answer, never block the rows behind
            log.exception("measuring the promotion evidence failed")
            await self._answer(ident, "failed", f"could not measure the evidence: {said(exc)}",
                               sender)
            return
        try:
            steps = plan(engine.book, command, args, now, sender, fees, int(time.time() * 1000))
        except (KeyError, ValueError, TypeError) as exc:
            await self._answer(ident, "failed", f"bad command: {exc}", sender)
            return
        if not steps:
            answer = {"ok": ["nothing to do"], "refused": [], "closing": []}
            await submit(AnswerInbox(ident, "done", json.dumps(answer), int(time.time() * 1000), sender))
            return
        result = None
        for index, step in enumerate(steps):
            last = index == len(steps) - 1
            prior = json.dumps(result) if result is not None else ""
            decided = await submit(FromInbox(ident, step, prior, last, int(time.time() * 1000)))
            result = outcome(result, list(decided.events))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            try:
                (self.home / SOCKET_NAME).unlink()
            except FileNotFoundError:
                pass
