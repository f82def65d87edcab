"""Operator commands: close, pause, resume, halt. From any terminal, through the one queue.

Each command is written to the inbox (who, when, what). If a `botctl run` or
`botctl tui` owns the book, it decides the command; if nobody does, this
process takes the lock, starts the engine for just this command (reconciling
first, as on any start), settles what it sent, and exits. Obvious mistakes
(an unknown or closed position) are refused before anything is written.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from console.commands.common import command_line, context
from console.errors import Failed, Interrupted, Usage
from console.output import emit_json, money, price

JSON = typer.Option(False, "--json", help="One JSON object on stdout.")
NO_WAIT = typer.Option(False, "--no-wait", help="Print the command id and return at once.")
TIMEOUT = typer.Option(30.0, "--timeout", min=0.1, help="Seconds to wait for the result.")
ID_MAX = 2**63 - 1  # SQLite's largest integer: no id is beyond it


def _tty() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


async def _position(db: Path, policy, ident: int) -> dict | None:
    from engine import views

    rows = await views.positions(db, policy, include_closed=True, ids=[ident])
    return rows[0] if rows else None


def _check_closable(position: dict | None, ident: int) -> None:
    if position is None:
        raise Failed(f"no position {ident}")
    if position["state"] == "closed":
        raise Failed(f"position {ident} is already closed")
    if position["state"] == "closing":
        raise Failed(f"position {ident} is already closing")


def _preview(position: dict, fee_bps: int) -> str:
    value = position["value"]
    if value is None:
        return f"position {position['id']}: {position['size']} {position['token']} on {position['chain']} (no mark yet)"
    from decimal import Decimal

    fee = value * Decimal(fee_bps) / Decimal(10_000)
    pnl = value - fee - position["cost"]
    return (f"close position {position['id']}: sell {position['size']} {position['token']} on {position['chain']} "
            f"at ~{price(position['mark_price'])} -> ~{money(value - fee)} after ~{money(fee, 4)} fees; "
            f"expected pnl {money(pnl)} (cost {money(position['cost'])})")


async def _dispatch(settings, db: Path, command: str, args: dict, no_wait: bool, timeout: float) -> dict:
    """Post the command; make sure an owner decides it; return the decided row.

    A command is decided now or never: with nobody owning the book, this process takes it FIRST
    and posts only then (a command is never left queued by a process that could not decide it);
    while waiting, a book left without an owner is taken and every open row decided here; and a
    sender that gives up withdraws its row (a halt excepted: halting is always safe, so it stays
    queued and says so)."""
    import asyncio

    from engine import inbox
    from storage.owner import current_owner

    if no_wait:
        ident = inbox.post(db, command, args)
        return {"id": ident, "state": "pending"}
    posted: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        if current_owner(settings.home) is None:
            await _decide_here(settings, db, command, args, posted, timeout)
        if not posted:
            posted.append(inbox.post(db, command, args))
        while True:
            try:
                return await inbox.wait(db, posted[0], max(deadline - time.monotonic(), 0), home=settings.home)
            except inbox.Unowned:
                await _decide_here(settings, db, command, args, None, max(deadline - time.monotonic(), 1.0))
    except (TimeoutError, KeyboardInterrupt, asyncio.CancelledError, Exception) as exc:
        if not posted:  # refused before anything was queued
            raise
        return await _give_up(db, posted[0], command, timeout, exc)


async def _give_up(db: Path, ident: int, command: str, timeout: float, exc: BaseException) -> dict:
    """Nothing the sender was told failed may run later: withdraw the row unless an owner took it."""
    import asyncio

    from engine import inbox

    why = f"not decided within {timeout:g}s" if isinstance(exc, TimeoutError) else "interrupted"
    if command == "halt":
        if isinstance(exc, TimeoutError):
            raise Failed(f"halt (command {ident}) not confirmed within {timeout:g}s: it stays queued and the "
                         "owner applies it when it gets to it; `botctl status` shows the trading state")
        raise exc
    try:
        withdrawn = inbox.withdraw(db, ident, why)
    except inbox.BookBusy:
        raise Failed(f"command {ident} was {why} and could not be withdrawn: another process has held the book's "
                     f"write lock for over {inbox.busy_wait_s():g}s (an engine stopped mid-commit?). It may still "
                     "run when that process resumes: `botctl history --commands` shows its answer") from None
    if withdrawn:
        if isinstance(exc, TimeoutError):
            raise Failed(f"command {ident} was {why}: withdrawn, it will not run (is the engine busy? "
                         "see `botctl status`)")
        if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
            raise Interrupted(f"interrupted: command {ident} withdrawn, it will not run") from None
        raise exc
    try:  # taken by an owner: its answer is the truth, and it comes soon
        return await inbox.wait(db, ident, max(timeout, 10.0))
    except TimeoutError:
        raise Failed(f"command {ident} is being decided by the engine but was not answered in time; "
                     "`botctl history --commands` shows its answer") from None


async def _decide_here(settings, db: Path, command: str, args: dict, posted: list | None = None,
                       within_s: float | None = None) -> None:
    """Own the book for a moment: post the command (if `posted` is given; its id goes there), decide
    every open row, settle what was sent, and let go only when no row is left. Nothing is posted
    if another process owns the book (it will decide).

    A stage command opens the book alone. The others open the engine (reconciling first, as any
    start does); when it cannot start (a node down, a key that cannot be opened, a profile with no
    chains), a command that moves no funds (pause, resume, halt) is still decided, on the book
    alone: the operator's brakes must not depend on what failed. A `halt --close-all` then halts
    and refuses each close saying why. Rows that need the engine stay queued for the next one.
    What was sent is settled within `within_s` (the command's --timeout); what a live chain has not
    settled by then stays in flight, held, for the next engine."""
    from engine import inbox
    from engine.core.operator import STAGE_COMMANDS, needs_venue
    from engine.settings import SettingsError
    from storage.owner import OwnerBusy
    from wallet.keystore import KeystoreError

    book_only = command in STAGE_COMMANDS
    only = (lambda c, _a: c in STAGE_COMMANDS) if book_only else None
    try:
        if book_only:
            owner = await _own_book(settings)
        else:
            try:
                owner = await _own_engine(settings)
            except (SettingsError, KeystoreError) as exc:
                if needs_venue(command, args) and command != "halt":
                    raise
                owner = await _own_book(settings)
                owner.no_venue = f"the engine cannot start ({exc})"
                book_only = True
                only = lambda c, a: not needs_venue(c, a) or c == "halt"  # noqa: E731
    except OwnerBusy:  # someone started meanwhile: they decide it
        return
    ident = None
    try:
        if posted is not None:
            ident = inbox.post(db, command, args)
            posted.append(ident)
        poller = inbox.InboxPoller(owner)
        while await _uninterrupted(poller.drain(only=only)) and not book_only:
            await owner.settle(within_s=within_s)  # rows that came meanwhile are decided in the next round
    except BaseException:
        if ident is not None:  # failed before deciding it: it must not run later either
            inbox.withdraw(db, ident, "the engine stopped before deciding it")
        raise
    finally:
        await owner.close()


async def _uninterrupted(work):
    """Run `work` to its end even if this task is cancelled (Ctrl-C), then let the cancellation
    through: a row this owner took is always answered before it lets go of the book, never left
    taken for a later owner to carry out."""
    import asyncio
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        task.result()
        raise


async def _own_book(settings):
    """A stage command moves no funds: the book alone (no venue), so that a demotion works even
    when the stage's own engine cannot start."""
    from engine import logs
    from engine.kernel import open_book
    from storage import ensure_home

    logs.setup(ensure_home(settings.home))
    return await open_book(settings, command_line())


async def _own_engine(settings):
    """The engine for just this command (reconciling first, as on any start), deciding nothing else."""
    from engine import logs
    from engine.kernel import build
    from storage import ensure_home

    logs.setup(ensure_home(settings.home))
    engine = await build(settings, command=command_line())
    engine.automatic = False
    return engine


async def _await_closed(settings, db: Path, policy, ids: list[int], timeout: float,
                        everything: bool = False) -> list[dict]:
    """Wait until every position is closed, or none is closing any more (its exit gave up), or no
    engine is left to move them, or the time is up. `everything` (a halt that closes all): also
    until no entry is in flight, and report every position not closed, those opened since too."""
    import asyncio

    from engine import views
    from storage.owner import current_owner

    deadline = time.monotonic() + timeout
    while True:
        # the owner first: one that finished and left after this read has already written its work
        driven = current_owner(settings.home) is not None
        waiting = False
        if everything:
            entries, unclosed = await views.unsettled(db)
            ids = sorted(set(ids) | {pid for pid, _state, _tried in unclosed})
            waiting = entries > 0 or any(state == "open" and not tried for _pid, state, tried in unclosed)
        rows = await views.positions(db, policy, include_closed=True, ids=ids)
        busy = waiting or any(r["state"] == "closing" for r in rows)
        if not busy or not driven or time.monotonic() >= deadline:
            exits = await views.last_exits(db, [r["id"] for r in rows if r["state"] != "closed"])
            return [{**r, "exit": exits.get(r["id"]), "driven": driven} for r in rows]
        await asyncio.sleep(0.02)


def _not_closed(p: dict) -> str:
    """Why a position the operator asked to close is not closed, in a few words."""
    exit_ = p.get("exit") or {}
    if p["state"] == "closing":
        where = ("`botctl positions` shows when it settles" if p.get("driven") else
                 "no engine is running to send it: `botctl run` does")
        return f"position {p['id']} is still closing: exit order {exit_.get('order')} is " \
               f"{exit_.get('state', 'in flight')} ({where})"
    if not exit_:
        when = "the engine closes it" if p.get("driven") else "`botctl run` closes it while the halt holds"
        return f"position {p['id']} is still open: no exit was sent yet ({when})"
    tried = exit_.get("tried", 0)
    why = f": {exit_['reason']}" if exit_.get("reason") else ""
    return f"position {p['id']} is still open: its exit failed after {tried} attempt{'s' if tried != 1 else ''}{why}"


def _report(row: dict, json_out: bool, closed: list[dict] | None = None) -> None:
    """Print what happened; exit 1 (Failed) for a refusal and for any position asked to close that did not."""
    result = row.get("result") or {}
    still = [p for p in closed or [] if p["state"] != "closed"]
    if json_out:
        out = {"command_id": row["id"], "state": row["state"], "result": result}
        if closed is not None:
            out["positions"] = [{"id": p["id"], "state": p["state"], "realized_pnl": p["pnl"],
                                 "exit_price": p["exit_price"],
                                 **({"why": _not_closed(p)} if p["state"] != "closed" else {})} for p in closed]
        emit_json(out)
    else:
        if row["state"] == "pending":
            print(f"command {row['id']} queued")
        for line in result.get("ok", []):
            print(line)
        for p in closed or []:
            if p["state"] == "closed":
                print(f"position {p['id']} closed: realized pnl {money(p['pnl'])} at {price(p['exit_price'])}")
            else:
                print(_not_closed(p))
    if row["state"] in ("refused", "failed", "withdrawn"):
        raise Failed("; ".join(result.get("refused") or ["refused"]))
    if len(still) == 1:
        raise Failed(_not_closed(still[0]))
    if still:
        raise Failed(f"{len(still)} of {len(closed)} positions not closed: "
                     f"{', '.join(str(p['id']) for p in still)} (why: above, or in --json)")


def close(
    ident: int = typer.Argument(None, metavar="ID", help="Position id (see `botctl positions`)."),
    all_: bool = typer.Option(False, "--all", help="Close every open position."),
    reason: str = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    no_wait: bool = NO_WAIT,
    timeout: float = TIMEOUT,
    json_out: bool = JSON,
) -> None:
    """Close a position (or --all): sell it through the one queue; exactly once."""
    import asyncio
    if ident is None and not all_:
        raise Usage("close needs a position ID or --all")
    if ident is not None and all_:
        raise Usage("give a position ID or --all, not both")
    if ident is not None and not 0 < ident <= ID_MAX:
        raise Usage(f"position ids are integers from 1 to {ID_MAX}, not {ident}")
    settings, db, policy = context()
    args: dict = {"reason": reason} if reason else {}
    if all_:
        command = "close_all"
    else:
        command = "close"
        args["id"] = ident
        position = asyncio.run(_position(db, policy, ident))
        _check_closable(position, ident)
        if _tty() and not yes and not json_out:
            print(_preview(position, settings.paper.fee_bps))
            if not typer.confirm("close it?", default=False):
                raise Failed("not closed: cancelled by the operator")

    async def go():
        from engine import views

        row = await _dispatch(settings, db, command, args, no_wait, timeout)
        closed = None
        if row["state"] == "done" and not no_wait:
            ids = (row.get("result") or {}).get("closing", [])
            if all_:  # "all" is all: a position already closing is reported too, until it is closed
                ids = sorted(set(ids) | {p["id"] for p in await views.positions(db, policy) if p["state"] == "closing"})
            closed = await _await_closed(settings, db, policy, ids, timeout) if ids else []
        return row, closed

    row, closed = asyncio.run(go())
    _report(row, json_out, closed)


def pause(no_wait: bool = NO_WAIT, timeout: float = TIMEOUT, json_out: bool = JSON) -> None:
    """Reduce only: no new entries; exits, monitoring and reconciliation continue."""
    import asyncio
    settings, db, _policy = context()
    _report(asyncio.run(_dispatch(settings, db, "pause", {}, no_wait, timeout)), json_out)


def resume(
    force: bool = typer.Option(False, "--force", help="Required to leave a halt."),
    no_wait: bool = NO_WAIT,
    timeout: float = TIMEOUT,
    json_out: bool = JSON,
) -> None:
    """Back to active trading (after pause; after halt only with --force)."""
    import asyncio
    settings, db, _policy = context()
    if force and _tty() and not json_out:
        typed = typer.prompt("leaving a halt re-enables automatic trading; type RESUME to confirm")
        if typed.strip() != "RESUME":
            raise Failed("not resumed: confirmation not typed")
    _report(asyncio.run(_dispatch(settings, db, "resume", {"force": force}, no_wait, timeout)), json_out)


def halt(
    close_all: bool = typer.Option(False, "--close-all", help="Also close every open position."),
    reason: str = typer.Option(None, "--reason", help="Why (kept in the audit trail)."),
    no_wait: bool = NO_WAIT,
    timeout: float = TIMEOUT,
    json_out: bool = JSON,
) -> None:
    """Emergency stop: no new entries, no automatic exits; only operator closes and settling."""
    import asyncio
    settings, db, policy = context()
    args = {"close_all": close_all, **({"reason": reason} if reason else {})}

    async def go():
        row = await _dispatch(settings, db, "halt", args, no_wait, timeout)
        ids = (row.get("result") or {}).get("closing", [])
        closed = None
        if row["state"] == "done" and not no_wait and (ids or close_all):
            closed = await _await_closed(settings, db, policy, ids, timeout, everything=close_all)
        return row, closed

    row, closed = asyncio.run(go())
    _report(row, json_out, closed)


COMMANDS = {"close": close, "pause": pause, "resume": resume, "halt": halt}
