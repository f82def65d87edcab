"""Drills: rehearse the failures that lose money, on the real engine, and record the result.

Each drill owns the book for its duration (like any engine start: the lock,
then reconciliation), drives real orders through the same queue and
executors, checks what must be true afterwards, runs the audit, and records a
DrillRecorded event (passed or not, with the reason) as promotion evidence:

- failure: entries whose broadcast the executor refuses after the funds were
  reserved: every reservation must be rolled back, quote cash exactly restored.
- crash: a child engine is SIGKILLed right after broadcasting an entry (the
  outcome unknown to the book); the restart must settle it from the venue,
  find no balance difference, and audit clean.
- halt: the emergency stop (the same commands as `botctl halt --close-all`)
  must close every position and refuse new entries; trading is then restored
  to what it was.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from engine.core.messages import (
    EntryReserved,
    OrderFailed,
    OrderFilled,
    PositionClosed,
    RecordDrill,
    RequestClose,
    ReserveEntry,
    SetTradingState,
    TradingState,
)
from engine.core.money import from_units, to_units
from engine.venues.port import Rejected

CHILD_TIMEOUT_S = 60


@dataclass
class DrillResult:
    kind: str
    passed: bool
    detail: str
    steps: list[str]


class DrillFailed(Exception):
    """A check inside a drill did not hold (the drill is recorded as failed with this reason)."""


class CannotDrill(Exception):
    """The book is not in a state to drill (not recorded: nothing was tested)."""


CANNOT_DRILL_EXIT = 3  # the crash drill's child could not start its trade


def free_tokens(book, now: int) -> list[tuple[str, str]]:
    """(chain, token) pairs an entry could take now: no slot, not cooling down (pure)."""
    out = []
    for name, chain in sorted(book.policy.chains.items()):
        for token in sorted(chain.tokens):
            until = book.cooldowns.get((name, token))
            if (name, token) not in book.slots and (until is None or until <= now):
                out.append((name, token))
    return out


async def _free(engine, say=lambda line: None) -> list[tuple[str, str]]:
    """Free tokens, waiting out cooldowns by the engine's clock (a paper block is a simulated second,
    a live step 0.2 s of the wall clock); the world ticks, the engine decides nothing itself."""
    began = engine.now()
    while True:
        now = engine.now()
        free = free_tokens(engine.book, now)
        if free:
            if now > began:
                say(f"waited {(now - began) / 1000:g} s for a token to come off its cooldown")
            return free
        if now - began > engine.book.policy.limits.cooldown_ms + 10_000:
            book = engine.book
            held = sorted(f"{c}/{t}" for (c, t), _ in book.slots.items())
            cooling = sorted(f"{c}/{t}" for (c, t), until in book.cooldowns.items() if until > now)
            raise CannotDrill("no free token to drill with: "
                              + "; ".join(filter(None, [
                                  f"{', '.join(held)} hold a position or an order" if held else "",
                                  f"{', '.join(cooling)} cooling down" if cooling else ""]))
                              + " (close one with botctl close ID, or run `botctl drill halt`, which closes them all)")
        await engine.tick()


def _quote_cash(book) -> dict[str, int]:
    return {name: book.balance(name, "quote", "cash") for name in book.policy.chains}


async def _reserve(engine, chain: str, token: str, amount_usd) -> EntryReserved:
    spec = engine.book.policy.chains[chain]
    fee = await engine.executors[chain].fee_reserve()
    result = await engine.sequencer.submit(ReserveEntry(chain, token, to_units(amount_usd, spec.quote_decimals),
                                                        fee, engine.now(), source="drill"))
    if not result.accepted:
        raise DrillFailed(f"could not reserve a drill entry on {chain}/{token}: {result.reason}")
    return result.first(EntryReserved)


def _need_active(engine) -> None:
    state = engine.book.trading_state
    if state is not TradingState.ACTIVE:
        raise CannotDrill(f"trading is {state.value}: drills need active trading (botctl resume first)")


async def _audit(engine) -> int:
    from engine.audit import audit_file
    from engine.kernel import DB_NAME

    problems, events = await asyncio.to_thread(audit_file, Path(engine.settings.home) / DB_NAME,
                                               engine.book.policy)
    if problems:
        raise DrillFailed(f"audit: {problems[0]}")
    return events


async def _record(engine, kind: str, passed: bool, detail: str, by: str) -> None:
    await engine.sequencer.submit(RecordDrill(kind, passed, detail, engine.network, engine.now(), by))


class _Refusing:
    """The executor in front of the failure drill's own orders: their broadcast is refused before
    anything is sent, a definite failure by construction, whatever executor stands behind (paper
    now, EVM and Solana later: the same protocol). Every other call goes to the real one."""

    def __init__(self, inner, orders: set[int]):
        self.inner, self.orders = inner, orders

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def broadcast(self, order):
        if order.id in self.orders and order.state == "signed":
            return Rejected("refused by the failure drill (never sent)")
        return await self.inner.broadcast(order)


class _Watch:
    """Collects the drill's own orders' outcomes from the sequencer's published events."""

    def __init__(self, engine):
        self.failed: dict[int, str] = {}
        self.filled: set[int] = set()
        self.closed: set[int] = set()
        self._off = engine.sequencer.subscribe(self._on)

    def _on(self, events) -> None:
        for e in events:
            if isinstance(e, OrderFailed):
                self.failed[e.order_id] = e.reason
            elif isinstance(e, OrderFilled):
                self.filled.add(e.order_id)
            elif isinstance(e, PositionClosed):
                self.closed.add(e.position_id)

    def stop(self) -> None:
        self._off()


async def failure(engine, say) -> str:
    """Forced executor failures after reservation: all rolled back."""
    _need_active(engine)
    book = engine.book
    chosen = {}
    for chain, token in await _free(engine, say):
        chosen.setdefault(chain, token)
    before = _quote_cash(book)
    watch = _Watch(engine)
    orders: list[int] = []
    refused: set[int] = set()
    real = dict(engine.executors)
    engine.executors.update({name: _Refusing(executor, refused) for name, executor in real.items()})
    try:
        for chain, token in sorted(chosen.items()):
            reserved = await _reserve(engine, chain, token, book.policy.limits.min_position)
            refused.add(reserved.order_id)
            orders.append(reserved.order_id)
            say(f"reserved {from_units(reserved.amount, book.policy.chains[chain].quote_decimals)} "
                f"on {chain}/{token} (order {reserved.order_id}); its broadcast will be refused")
    finally:
        # Whatever happened above, the drill's own orders are settled while still refused: none of
        # them may be left for a later owner to send for real.
        settled = await engine.settle()
        watch.stop()
        engine.executors.update(real)
    if not settled:
        raise DrillFailed("orders still in flight after 200 blocks")
    for order_id in orders:
        if order_id not in watch.failed:
            raise DrillFailed(f"order {order_id} was not rolled back (filled: {order_id in watch.filled})")
    say(f"{len(orders)} order(s) refused and rolled back: " + "; ".join(watch.failed[o] for o in orders))
    held = [r.id for r in book.held_reservations() if r.order_id in orders]
    if held:
        raise DrillFailed(f"reservations {held} still held after the rollback")
    after = _quote_cash(book)
    for chain, units in before.items():
        if after[chain] != units:
            raise DrillFailed(f"{chain} quote cash {after[chain]} != {units} before the drill")
    say("every reservation released; quote cash exactly as before")
    return f"{len(orders)} refused entries rolled back, cash restored"


async def halt(engine, say) -> str:
    """The emergency stop closes everything and blocks entries; then trading is restored."""
    from engine.core.operator import plan

    book = engine.book
    prior = book.trading_state
    if prior is TradingState.HALTED:
        raise CannotDrill("trading is already halted: resume first (botctl resume --force)")
    if not book.open_positions():
        _need_active(engine)
        chain, token = (await _free(engine, say))[0]
        await _reserve(engine, chain, token, book.policy.limits.min_position)
        await engine.settle()
        say(f"opened a position on {chain}/{token} to have something to close")
    ids = [p.id for p in book.open_positions() if p.state == "open"]
    watch = _Watch(engine)
    try:
        fees = {name: await ex.fee_reserve() for name, ex in engine.executors.items()}
        steps = plan(book, "halt", {"close_all": True, "reason": "drill: emergency stop"}, engine.now(),
                     "drill", fees, int(time.time() * 1000))
        for step in steps:
            await engine.sequencer.submit(step)
        say(f"halted; closing {len(ids)} position(s)")
        if not await engine.settle(max_blocks=400):
            raise DrillFailed("exits still in flight after 400 blocks")
    finally:
        watch.stop()
    still = [p.id for p in book.open_positions()]
    if still:
        raise DrillFailed(f"positions {still} still open after the emergency stop")
    say(f"every position closed ({len(watch.closed)} closed)")
    chain = sorted(book.policy.chains)[0]
    token = sorted(book.policy.chains[chain].tokens)[0]
    fee = await engine.executors[chain].fee_reserve()
    result = await engine.sequencer.submit(ReserveEntry(chain, token, None, fee, engine.now(), source="drill"))
    if result.accepted or not (result.reason or "").startswith("trading is halted"):
        raise DrillFailed(f"a new entry while halted was not refused for the halt: {result.reason or 'accepted'}")
    say(f"a new entry is refused: {result.reason}")
    if book.trading_state is not prior:
        await engine.sequencer.submit(SetTradingState(prior, "drill over: trading restored", engine.now(),
                                                      by="drill", force=True))
        say(f"trading restored to {prior.value}")
    return f"halt closed {len(ids)} position(s) and refused entries"


async def crash_child(engine) -> None:
    """In the child: reserve one entry and drive it; BOTCTL_CRASH_AT kills us after its broadcast."""
    _need_active(engine)
    engine.automatic = False
    chain, token = (await _free(engine))[0]
    await _reserve(engine, chain, token, engine.book.policy.limits.min_position)
    for _ in range(100):
        await engine.tick()
    raise DrillFailed("the crash point was never reached")


def spawn_crash_child(settings) -> int:
    """Run a child engine that SIGKILLs itself mid-trade; returns its exit status."""
    env = dict(os.environ, BOTCTL_HOME=str(settings.home), BOTCTL_PROFILE=settings.profile,
               BOTCTL_CRASH_AT="after_broadcast", BOTCTL_CRASH_SKIP="0")
    proc = subprocess.run([sys.executable, "-m", "engine.drills", "crash-child"], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=CHILD_TIMEOUT_S)
    if proc.returncode != -signal.SIGKILL:
        tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        if proc.returncode == CANNOT_DRILL_EXIT:
            raise CannotDrill(tail[0].removeprefix("error: "))
        raise DrillFailed(f"the child engine exited {proc.returncode}, not killed mid-trade: {tail[0]}")
    return proc.returncode


async def run(kind: str, settings, command: str, say=lambda line: None, by: str = "drill") -> DrillResult:
    """Run one drill as the owner of the book and record it. Raises OwnerBusy if someone owns it,
    CannotDrill (nothing recorded) if the book is not in a state to drill."""
    from engine.kernel import build

    steps: list[str] = []

    def note(line: str) -> None:
        steps.append(line)
        say(line)

    if kind not in ("failure", "crash", "halt"):
        raise ValueError(f"unknown drill {kind!r} (failure, crash, halt)")
    if kind == "crash":
        engine = await build(settings, command=command, purpose="drill")  # settle before the child runs
        engine.automatic = False
        try:
            await engine.settle()
            _need_active(engine)
            await _free(engine)
            first_new = engine.book.meta.get("next_position")
        finally:
            await engine.close()
        try:
            await asyncio.to_thread(spawn_crash_child, settings)
            note("the child engine broadcast an entry and was killed (SIGKILL) before recording its outcome")
        except (DrillFailed, subprocess.TimeoutExpired) as exc:
            child_error = str(exc)
        else:
            child_error = None
    engine = await build(settings, command=command, purpose="drill")
    engine.automatic = False
    try:
        try:
            if kind == "failure":
                detail = await failure(engine, note)
            elif kind == "halt":
                detail = await halt(engine, note)
            else:
                if child_error:
                    raise DrillFailed(child_error)
                detail = await _recovered(engine, note, first_new)
            events = await _audit(engine)
            note(f"audit clean: {events} journal events replayed")
            passed = True
        except DrillFailed as exc:
            detail, passed = str(exc), False
            note(f"FAILED: {detail}")
        await _record(engine, kind, passed, detail, by)
    finally:
        await engine.close()
    return DrillResult(kind, passed, detail, steps)


async def _recovered(engine, say, first_new: int) -> str:
    rec = engine.last_reconciliation
    if not rec.resolved:
        raise DrillFailed("the restart found no order to settle: the crash did not happen mid-trade")
    for order_id, intent, before, outcome in rec.resolved:
        say(f"restart settled order {order_id} ({intent}, was {before}): {outcome}")
    if rec.differences:
        raise DrillFailed(f"balance difference after the restart: {rec.differences[0]}")
    if not rec.not_compared:
        say("venue and book balances agree")
    if not await engine.settle():  # (paper: 1,000 blocks; live: 1,000 steps of 0.2 s)
        flying = [f"{o.id} ({o.state})" for o in engine.book.live_orders()]
        raise DrillFailed(f"orders still in flight after the restart settled what it could: {', '.join(flying)}")
    if rec.not_compared:  # a chain with an order in doubt at the restart: compared now that all settled
        again = await engine.reconcile("drill")
        if again.differences:
            raise DrillFailed(f"balance difference once the restart's orders settled: {again.differences[0]}")
        say(f"{', '.join(rec.not_compared)}: balances agree once the restart's orders settled")
    drilled = [p for p in engine.book.open_positions() if p.state == "open" and p.id >= first_new]
    for position in drilled:  # the drill's entry landed: close it again
        fee = await engine.executors[position.chain].fee_reserve()
        await engine.sequencer.submit(RequestClose(position.id, "drill: crash recovered", fee, engine.now(),
                                                   by="drill"))
        await engine.settle()
        say(f"closed the drill's position {position.id}")
    return f"killed after broadcast; restart settled {len(rec.resolved)} order(s), balances agree"


def _child_main() -> int:
    from engine import logs
    from engine.kernel import build
    from engine.settings import load_settings

    async def go() -> None:
        settings = load_settings()
        logs.setup(Path(settings.home))
        engine = await build(settings, command="botctl drill crash (child)", purpose="drill")
        try:
            await crash_child(engine)
        finally:
            await engine.close()

    try:
        asyncio.run(go())
    except CannotDrill as exc:
        sys.stderr.write(f"error: {exc}\n")
        return CANNOT_DRILL_EXIT
    except Exception as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["crash-child"]:
        sys.exit(_child_main())
    sys.exit(2)
