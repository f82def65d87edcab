"""The composition root: builds the engine from settings, a store, executors and a clock.

Paper mode wires the paper venue (the chain) and its executors; the live
executors will plug into the same `executors` mapping. Nothing else in the
engine knows which it got.

One tick of the paper world, in an order that makes a seeded run replay
exactly: mine a block, mark prices, settle/send orders in flight, request the
exits due, take new opportunities, send what was just reserved.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Callable

from engine import eventlog
from engine.core.book import Limits, Policy
from engine.core.decider import SENT
from engine.core.exits import HALT_CLOSE, ExitRules, closes_after_halt, exits_due
from engine.core.messages import (
    Deposit,
    EntryDenied,
    MarkPrices,
    PositionClosed,
    PositionOpened,
    RecordMarket,
    RequestClose,
    ReserveEntry,
)
from engine.core.reconcile import unlisted_holdings
from engine.core.stages import first_of
from engine.driver import OrderDriver
from engine.persist import load_book
from engine.redact import said
from engine.sequencer import Sequencer
from engine.settings import Settings, SettingsError, Unreachable
from engine.sources import JsonlSource
from engine.stages import stages as shipped_stages
from engine.venues.port import VenueError, VenueUnreachable, World
from storage import Writer, ensure_home
from storage.owner import Ownership, acquire

log = logging.getLogger("botctl.kernel")

DB_NAME = "botctl.db"
HEARTBEAT_MS = 60_000
FLOOR_SYNC_MS = 5_000  # live: how often the chains' pending counts are compared with our nonces
SWEEP_MS = 200  # live: orders in flight are looked up at most this often. A step woken early (a signal
# line, a command) sends what is new at once, but a burst of lines must not cost fifty receipt reads each.


class EngineFailed(Exception):
    """The engine stopped because a step failed; the book is exactly as of the last commit."""


CRASH_POINTS = (
    "after_reserve_commit",        # entry reserved, nothing signed
    "after_submit_commit",         # entry's signed bytes committed, not broadcast
    "after_broadcast",             # the venue answered (accepted it, say), MarkBroadcast not committed
    "before_fill_commit",          # entry's fill known, not committed
    "after_close_commit",          # exit requested, nothing signed
    "exit_after_submit_commit",
    "exit_after_broadcast",
    "exit_before_fill_commit",
    "mid_group_commit",            # inside a batch's transaction, before COMMIT
)
_crash_hits: dict[str, int] = {}


def crash_point(point: str) -> None:
    """Named crash points for tests and drills.

    BOTCTL_CRASH_AT=<point> SIGKILLs this process the (BOTCTL_CRASH_SKIP + 1)-th time
    execution reaches <point>. Nothing runs after SIGKILL: no cleanup, no flush."""
    wanted = os.environ.get("BOTCTL_CRASH_AT")
    if not wanted or wanted != point:
        return
    _crash_hits[point] = _crash_hits.get(point, 0) + 1
    if _crash_hits[point] > int(os.environ.get("BOTCTL_CRASH_SKIP", "0")):
        os.kill(os.getpid(), signal.SIGKILL)


def _driver_point(point: str) -> None:
    name, _, intent = point.partition(":")
    crash_point(f"exit_{name}" if intent == "exit" else name)


def policy_for(settings: Settings, market: dict | None = None, stages: dict | None = None,
               network: str = "paper") -> Policy:
    from engine.venues.choose import market_for

    if market is None:
        recorded = recorded_markets(Path(settings.home) / DB_NAME) if settings.mode != "paper" else None
        market = market_for(settings, recorded)
    chains = {name: _priced(chain.policy(), settings.chains.get(name)) for name, chain in market.items()}
    limits = Limits(
        max_position=settings.max_position_usd,
        default_position=min(settings.default_position_usd, settings.max_position_usd),
        min_position=settings.min_position_usd,
        max_open_positions=settings.max_open_positions,
        max_exposure=settings.max_exposure_usd,
        cooldown_ms=settings.cooldown_s * 1000,
        max_consecutive_losses=settings.max_consecutive_losses,
    )
    live = network == "mainnet" and not settings.dry_run  # real funds move: the stage must allow them
    return Policy(chains, limits, live=live, stages=stages or shipped_stages())


def _priced(policy, chain_settings):
    """The chain's policy with the USD the operator counts one quote unit as (1 unless configured)."""
    from dataclasses import replace

    usd = getattr(chain_settings, "quote_usd", None)
    return replace(policy, quote_usd=usd) if usd is not None else policy


def recorded_markets(db: Path) -> dict:
    """The live chains' markets as the book last recorded them (read-only; {} without a book)."""
    import sqlite3

    from engine.venues.choose import policy_from_json
    from storage import StorageError, open_reader

    if not db.exists():
        return {}
    try:
        conn = open_reader(db)  # a file, SQLite, this botctl's schema, not truncated; read-only
        try:
            rows = conn.execute("SELECT key, value FROM meta WHERE key LIKE 'market:%'").fetchall()
        finally:
            conn.close()
    except (StorageError, sqlite3.Error):
        return {}  # the command that reads the book says what is wrong with it
    return {key.split(":", 1)[1]: policy_from_json(key.split(":", 1)[1], value) for key, value in rows}


@dataclass
class Reconciliation:
    resolved: list[tuple[int, str, str, str]]  # (order id, intent, state before, what happened)
    differences: tuple[tuple[str, str, int, int], ...]
    not_compared: tuple[str, ...] = ()  # chains with an order still in doubt: compared once it settles


@dataclass
class Stats:
    ticks: int = 0
    opened: int = 0
    closed: int = 0
    denied: int = 0
    started: float = field(default_factory=time.monotonic)

    def on_events(self, events: list) -> None:
        for event in events:
            kind = type(event)
            if kind is PositionOpened:
                self.opened += 1
            elif kind is PositionClosed:
                self.closed += 1
            elif kind is EntryDenied:
                self.denied += 1


def due(last: int | None, now: int, every_ms: float) -> bool:
    """A periodic live job is due `every_ms` after it last ran, or at once if the wall clock went back
    (an NTP step, a VM resumed): waiting for the clock to catch up would leave orders unread and
    positions unpriced (no stop-loss) for as long as it was stepped back."""
    return last is None or now < last or now - last >= every_ms


class Engine:
    def __init__(self, settings: Settings, writer: Writer, sequencer: Sequencer, world: World, source,
                 ownership: Ownership | None = None):
        self.settings = settings
        self.ownership = ownership
        self.writer = writer
        self.sequencer = sequencer
        self.world = world
        self.ports = world.ports
        self.executors = {name: port.executor for name, port in sorted(world.ports.items())}
        self.source = source
        self.rules = ExitRules(settings.stop_loss_bps, settings.take_profit_bps, settings.max_hold_s * 1000)
        self.driver = OrderDriver(sequencer, self.executors, settings.max_slippage_bps, self.now, _driver_point)
        self.stats = Stats()
        self.automatic = True  # False: a one-off owner settles what is in flight, decides nothing itself
        self.inbox = None
        self.run_id = f"{os.getpid()}-{int(time.time() * 1000)}"
        self.network = "paper"  # where this engine trades (paper | testnet | mainnet): rollout evidence
        self._last_beat: int | None = None
        self._floors_at: int | None = None
        self._silent: set[str] = set()  # live chains whose node did not answer the last periodic read
        self._marked_at: dict[str, int] = {}  # live: when each chain's open positions were last priced
        self._swept_at: int | None = None  # live: when every order in flight was last looked up
        sequencer.subscribe(self.stats.on_events)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()  # live: act now, not at the next poll (a signal line, a command)

    @property
    def book(self):
        return self.sequencer.book

    def now(self) -> int:
        return self.world.now_ms()

    async def fund(self) -> None:
        """Deposit what the world says we start with into the book, once (refs are taken once)."""
        for opening in await self.world.openings():
            if opening.ref not in self.book.deposits:
                await self.sequencer.submit(Deposit(opening.chain, opening.asset, opening.amount, opening.ref,
                                                    self.now()))

    async def reconcile(self, by: str = "engine") -> "Reconciliation":
        """Settle every order the book is unsure of from the venue, then compare balances."""
        from engine.core.messages import RecordReconciliation
        from engine.core.reconcile import differences

        resolved = []
        for order in self.book.live_orders():
            if order.state in SENT:
                outcome = await self.driver.advance(order)
                now = self.book.orders.get(order.id)
                if now is not None and now.state != order.state and now.state in ("submitted", "unknown"):
                    # sent (again) just now: its receipt may already be there (a chain that mined it before
                    # the crash answers a resend with "nonce too low"): look it up once before comparing
                    outcome = await self.driver.advance(now)
                resolved.append((order.id, order.intent, order.state, outcome))
        # A chain with an order still in doubt is not compared: a transaction mined but not yet recorded
        # would show as a difference that is none (and count against the stage's evidence for good).
        in_doubt = tuple(sorted({o.chain for o in self.book.live_orders() if o.state in SENT}))
        venue = {chain: await port.balances() for chain, port in sorted(self.ports.items()) if chain not in in_doubt}
        found = differences(self.book, venue)
        await self.sequencer.submit(RecordReconciliation(found, len(resolved), self.now(), by))
        return Reconciliation(resolved, found, in_doubt)

    async def sync_floors(self) -> None:
        """The chain's pending count is a floor (DESIGN 8): a count beyond every nonce we handed out
        is a transaction from our key that botctl did not send. Reported, and never collided with:
        our next nonces go above it."""
        from engine.core.book import NonceState
        from engine.core.messages import RaiseNonceFloor

        for name, port in sorted(self.ports.items()):
            spec = self.book.policy.chains.get(name)
            if spec is None or not spec.uses_nonces:
                continue
            try:
                pending = await port.pending_nonce(spec.address)
            except Exception as exc:
                if self.world.height is not None:
                    raise
                self._unreachable(name, "reading the pending nonce", exc)
                continue
            state = self.book.nonces.get((name, spec.address)) or NonceState()
            ours = max(state.next, state.floor)
            if pending is not None and pending > ours:
                await self.sequencer.submit(RaiseNonceFloor(name, spec.address, pending, self.now(), pending - ours))
        self._floors_at = self.now()

    async def start_run(self, command: str, purpose: str = "trade") -> None:
        """Journal who runs the book, where it trades, and in which stage (rollout evidence)."""
        from engine.core.messages import StartRun

        now = self.now()
        await self.sequencer.submit(StartRun(self.run_id, self.settings.mode, self.network, command, now, purpose))
        self._last_beat = now

    async def _beat(self, now: int, last: bool = False) -> None:
        """A heartbeat every engine minute: hours run in a stage are measured from these."""
        from engine.core.messages import Beat

        if self._last_beat is not None and (now - self._last_beat >= HEARTBEAT_MS or (last and now > self._last_beat)):
            self._last_beat = now
            await self.sequencer.submit(Beat(self.run_id, now))

    async def tick(self) -> None:
        height = await self.world.step(self._wake)
        now = self.now()
        submit = self.sequencer.submit
        await self._beat(now)
        live = self.world.height is None
        for chain, port in sorted(self.ports.items()):
            held = sorted({p.token for p in self.book.open_positions() if p.chain == chain})
            if live:  # priced every marks_every_s (a router quote per held token), not every step; a position
                # that opens after a while with nothing held is priced at once, not an interval later
                every_ms = self.settings.chains[chain].marks_every_s * 1000
                if not held or not due(self._marked_at.get(chain), now, every_ms):
                    continue
                self._marked_at[chain] = now
            try:
                prices = await port.marks(held)
            except Exception as exc:
                if not live:  # the paper venue is a local file: its failure is the machine's, and stops us
                    raise
                self._unreachable(chain, "reading marks", exc)
                continue
            self._answered(chain)
            if prices:
                await submit(MarkPrices(chain, tuple(sorted(prices.items())), now))
        if live and due(self._floors_at, now, FLOOR_SYNC_MS):  # live: another hand on our key?
            await self.sync_floors()
        if not live or due(self._swept_at, now, SWEEP_MS):
            self._swept_at = now
            await self.driver.advance_all(self.world.concurrency)
            if self.driver.reconcile_after:
                await self._reconcile_when_settled()
        refusals: dict[str, str | None] = {}  # per chain, asked once a tick, only when something would be sent
        for position_id in closes_after_halt(self.book):  # any owner: the operator asked for it
            position = self.book.positions.get(position_id)
            if await self._refusal(position.chain, refusals):
                continue
            fee = await self.executors[position.chain].fee_reserve()
            await submit(RequestClose(position_id, HALT_CLOSE, fee, now, by="halt"))
        if not self.automatic:
            return
        for position_id, reason in exits_due(self.book, now, self.rules):
            position = self.book.positions.get(position_id)
            if await self._refusal(position.chain, refusals):
                continue  # the exit stays due: asked again next tick, when the chain may take it
            fee = await self.executors[position.chain].fee_reserve()
            if (await submit(RequestClose(position_id, reason, fee, now))).accepted:
                crash_point("after_close_commit")
        entries = []
        for opportunity in self.source.poll(height, now) if self.source is not None else ():
            fee = await self.executors[opportunity.chain].fee_reserve()
            entries.append(ReserveEntry(opportunity.chain, opportunity.token, opportunity.amount, fee, now,
                                        signal_id=opportunity.id, source=type(self.source).__name__,
                                        refused=await self._refusal(opportunity.chain, refusals)))
        # Queued together, decided one by one in this order (the sequencer's risk checks see each
        # entry after the one before), committed in one transaction rather than one per signal.
        for result in await asyncio.gather(*map(submit, entries)):
            if result.accepted:
                crash_point("after_reserve_commit")
        await self.driver.advance_all(self.world.concurrency, only_new=True)
        self.stats.ticks += 1

    async def _reconcile_when_settled(self) -> None:
        """After a send error nobody could classify (DESIGN 8), the balances are compared once that
        chain has no order left in doubt: an answer we do not understand may hide a spend we do not
        know of, and a difference then stops new entries until the operator has looked."""
        busy = {o.chain for o in self.book.live_orders() if o.state in SENT}
        settled = self.driver.reconcile_after - busy
        if not settled:
            return
        self.driver.reconcile_after -= settled
        log.warning("chain %s: reconciling after a send error nobody could classify", ", ".join(sorted(settled)))
        self.last_reconciliation = await self.reconcile("engine")

    async def _refusal(self, chain: str, asked: dict[str, str | None]) -> str | None:
        """Can `chain` take a transaction now? (EVM: a base fee above the cap cannot; paper always can.)"""
        if chain not in asked:
            refusal = getattr(self.executors[chain], "refusal", None)
            asked[chain] = await refusal() if refusal is not None else None
        return asked[chain]

    def _unreachable(self, chain: str, what: str, exc: BaseException) -> None:
        """A live chain's node did not answer a periodic read: skipped this time, said once per outage.
        Orders in flight keep their funds held; everything settles when it answers again."""
        if chain not in self._silent:
            self._silent.add(chain)
            log.warning("chain %s: %s failed (%s); retried every tick, funds stay held", chain, what, said(exc))

    def _answered(self, chain: str) -> None:
        if chain in self._silent:
            self._silent.discard(chain)
            log.warning("chain %s answers again", chain)

    def stop(self) -> None:
        self._stop.set()

    def wake(self) -> None:
        """Something arrived that the next step acts on (an operator's command, a signal line): a
        live engine takes that step now instead of at the end of its poll interval."""
        self._wake.set()

    def waker(self) -> Callable[[], None]:
        """`wake` for another thread (a signal reader): safe to call after the loop has closed."""
        loop = asyncio.get_running_loop()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop closed: nobody is left to wake
                pass
        return wake

    def start_inbox(self, fallback_s: float = 1.0):
        """Take operator commands from other processes (the owner's job)."""
        from engine.inbox import InboxPoller

        self.inbox = InboxPoller(self, fallback_s).start()
        return self.inbox

    async def settle(self, max_blocks: int = 1000, within_s: float | None = None) -> bool:
        """Tick until nothing is in flight (one-off owners use this): at most `max_blocks` steps and,
        live, `within_s` seconds if given. A live chain that does not settle an order by then (not
        mined, a node that refuses) leaves it in flight, its bytes stored and its funds held, for the
        next engine: a one-off command answers in the time it was given, not 1,000 steps of 0.2 s
        later. Paper settles on the spot, in simulated blocks."""
        live = self.world.height is None
        deadline = time.monotonic() + within_s if live and within_s is not None else None
        for _ in range(max_blocks):
            if not self.book.orders.base:
                return True
            if deadline is not None and time.monotonic() >= deadline:
                break
            await self.tick()
        return not self.book.orders.base

    async def run(self, duration_s: float | None = None, on_tick: Callable[["Engine"], None] | None = None) -> None:
        """Tick until stopped or for `duration_s`: on paper a number of blocks (a simulated second each,
        unless the venue was made with another `paper.block_ms`), paced at `paper.speed` blocks per
        second; live, seconds of the wall clock (where the world's step paces)."""
        paper = self.world.height is not None
        speed = self.settings.paper.speed if paper else 0
        start = time.monotonic()
        ticks = 0
        while not self._stop.is_set():
            if duration_s is not None and (ticks >= duration_s if paper else time.monotonic() - start >= duration_s):
                break
            try:
                await self.tick()
            except Exception as exc:
                log.exception("tick failed; stopping")
                raise EngineFailed(
                    f"engine stopped: {said(exc)} (nothing was half-written: the book is as of "
                    "the last commit; fix the cause and start again to reconcile and continue)") from exc
            ticks += 1
            if on_tick is not None:
                on_tick(self)
            if speed > 0:
                due = start + float(Decimal(ticks) / speed)
                delay = due - time.monotonic()
                if delay > 0:
                    try:
                        await asyncio.wait_for(self._stop.wait(), delay)
                    except asyncio.TimeoutError:
                        pass
            else:
                await asyncio.sleep(0)
        await self._beat(self.now(), last=True)  # a clean stop: the hours run up to now count

    async def close(self) -> None:
        try:
            if self.inbox is not None:
                await self.inbox.stop()
            await self.sequencer.stop()
            await self.writer.close()
            await self.world.close()
        finally:
            if self.ownership is not None:
                self.ownership.release()
            close_source = getattr(self.source, "close", None)
            if close_source is not None:
                close_source()


async def build(settings: Settings, signals: str | None = None, command: str = "botctl run",
                market: dict | None = None, stages: dict | None = None, purpose: str = "trade") -> Engine:
    """The engine, owning the book (raises storage.owner.OwnerBusy if another process does).

    `market` replaces the simulated market's chains and tokens, and `stages` the shipped stages
    (load benchmarks use thousands of tokens and positions; nothing else sets these)."""
    from engine.core.stages import StageError, check_settings

    network = "paper"
    if settings.mode != "paper":
        from engine.guards import live_mode

        network = await live_mode(settings)  # raises SettingsError with the first reason it cannot start
    from engine.venues.choose import load_markets, open_world, own_opportunities, policy_json

    try:
        market = market or await load_markets(settings)
    except VenueError as exc:
        raise _cannot_start(exc) from None
    policy = policy_for(settings, market, stages, network)
    source = JsonlSource(signals, market) if signals else None  # a bad path fails before anything is taken
    try:
        home, ownership, writer, book = await _own(settings, command, policy)
    except BaseException:
        if source is not None:
            source.close()
        raise
    try:
        try:
            check_settings(settings, book.meta.get("stage"), policy.stages)  # under the lock: the stage is still
        except StageError as exc:
            raise SettingsError(str(exc)) from None
        unlisted = unlisted_holdings(book)
        if unlisted:
            raise SettingsError(first_of(unlisted))
        try:  # a book that has recorded this world's opening funds has met it: it must still be there (a
            # paper venue's are `genesis:`, a live chain's `opening:`: a book that traded live may start paper)
            met = "genesis:" if settings.mode == "paper" else "opening:"
            world = await open_world(settings, home, market,
                                     must_exist=any(str(ref).startswith(met) for ref, _ in book.deposits.items()))
        except VenueError as exc:
            raise _cannot_start(exc) from None
    except BaseException:
        await writer.close()
        ownership.release()
        if source is not None:
            source.close()
        raise
    source = source or own_opportunities(settings, world, market)
    if os.environ.get("BOTCTL_CRASH_AT") == "mid_group_commit":
        writer.before_commit = lambda _conn: crash_point("mid_group_commit")
    sequencer = Sequencer(book, writer).start()
    eventlog.subscribe(sequencer, settings)  # before the first command: every committed event is logged
    engine = Engine(settings, writer, sequencer, world, source, ownership)
    engine.network = network
    watch = getattr(source, "watch", None)
    if watch is not None and world.height is None:  # live: a line is read as it lands, not at the next poll
        watch(engine.waker())
    try:
        if settings.mode != "paper":  # what the chain said its tokens are: read amounts by it from now on
            for name, chain in sorted(market.items()):
                await sequencer.submit(RecordMarket(name, policy_json(chain.policy()), engine.now()))
        await engine.fund()
        if settings.mode != "paper":
            await engine.sync_floors()  # a transaction sent from our key while we were away
        engine.last_reconciliation = await engine.reconcile()  # before any new entry
        await engine.start_run(command, purpose)
    except BaseException:
        await engine.close()  # the book is as of the last commit; the lock is let go
        raise
    return engine


def _cannot_start(exc: VenueError) -> SettingsError:
    """Why the venue cannot be opened, as the CLI says it: a node that did not answer is a failure
    the same command may get past later (exit 1), anything else a setting to fix (2)."""
    return (Unreachable if isinstance(exc, VenueUnreachable) else SettingsError)(str(exc))


class BookOwner:
    """Owns the book with no venue and no executors: for commands that move no funds (a stage
    change, an attestation), which must work in any stage - a demotion most of all, even when the
    stage's own engine cannot start. Its clock is the paper venue's when there is one (so evidence
    spans one clock), else the wall clock."""

    def __init__(self, settings: Settings, writer: Writer, sequencer: Sequencer, ownership: Ownership):
        self.settings = settings
        self.writer = writer
        self.sequencer = sequencer
        self.ownership = ownership
        self.executors: dict = {}
        self.no_venue = "the chains' venues are not open"  # why a close decided here is refused

    @property
    def book(self):
        return self.sequencer.book

    def now(self) -> int:
        from engine.venues.choose import stored_now_ms

        stored = stored_now_ms(self.settings)
        return stored if stored is not None else int(time.time() * 1000)

    async def close(self) -> None:
        try:
            await self.sequencer.stop()
            await self.writer.close()
        finally:
            self.ownership.release()


async def open_book(settings: Settings, command: str) -> BookOwner:
    """Take the lock and load the book, nothing else (raises OwnerBusy if another process owns it)."""
    _home, ownership, writer, book = await _own(settings, command, policy_for(settings))
    sequencer = Sequencer(book, writer).start()
    eventlog.subscribe(sequencer, settings)
    return BookOwner(settings, writer, sequencer, ownership)


async def _own(settings: Settings, command: str, policy: Policy):
    """The lock, the writer, the loaded book: all three or none (whatever fails lets go of the rest)."""
    home = ensure_home(settings.home)
    ownership = acquire(home, command)
    try:
        writer = await Writer(home / DB_NAME, settings.synchronous).open()
    except BaseException:
        ownership.release()
        raise
    try:
        book = await writer.run(load_book, writer.query, policy)
    except BaseException:
        await writer.close()
        ownership.release()
        raise
    return home, ownership, writer, book
