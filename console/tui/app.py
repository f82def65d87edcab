"""BotctlApp: the live operator console, with the engine embedded in-process.

The app owns the engine: it builds it on mount (taking the book's lock, loading,
reconciling), starts the inbox poller (so `botctl close` from another terminal
is decided here), and runs the engine's tick loop in a worker on its own event
loop. Every operator action is a command on the engine's one queue, exactly
like the CLI's.

Live updates: the sequencer calls `_on_events` after each COMMIT; it only
records what changed (`Changes`) and posts one `BookChanged` (bursts collapse
into one). The handler repaints at most every `min_repaint_s`: positions whose
price or state moved are recomputed and only their rows are touched. The book
read here is the committed one: it changes only between awaits on this loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Callable, Iterable

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer

from console.tui.dialogs import HELP, ConfirmClose, InfoScreen, QuitDialog, TypeToConfirm
from console.tui.format import age, amount, money, price, signed
from console.tui.header import StatusHeader
from console.tui.messages import BookChanged, EngineReady, EngineStopped, OperatorResult, TerminalLost
from console.tui.model import Changes, PositionsModel, header_view, log_line
from console.tui.panels import EventLog, NoncesPanel, OrdersPanel, PositionsPanel, ReservationsPanel
from engine.core.money import from_units

log = logging.getLogger("botctl.tui")

NEEDS_TERMINAL = "botctl tui needs a terminal (use botctl run for a headless engine)"
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)


def on_a_terminal() -> bool:
    """Keys come from stdin and the screen goes to stderr (Textual's choice): both must be a TTY."""
    try:
        return all(stream is not None and stream.isatty() for stream in (sys.__stdin__, sys.__stderr__))
    except (ValueError, OSError):  # a closed stream
        return False


class MainScreen(Screen):
    """Header, the four panels, the event log, and the keys. The operator keys live here (not on
    the app) so that a dialog on top never passes a stray `c` or `p` through."""

    BINDINGS = [
        Binding("c", "app.close_position", "Close"),
        Binding("p", "app.pause", "Pause"),
        Binding("H", "app.halt", "Halt"),
        Binding("a", "app.audit", "Audit"),
        Binding("s", "app.sort", "Sort", show=False),
        Binding("r", "app.rollout", "Rollout"),
        Binding("S", "app.reverse", "Reverse sort", show=False),
        Binding("question_mark", "app.help", "Help"),
        Binding("q", "app.quit", "Quit"),
    ]

    def __init__(self, app: "BotctlApp"):
        super().__init__(id="main")
        self.owner = app

    def compose(self) -> ComposeResult:
        app = self.owner
        yield StatusHeader(id="header")
        yield app.positions
        with Horizontal(id="middle"):
            yield app.reservations
            yield app.orders
        with Horizontal(id="bottom"):
            yield app.nonces
            yield app.events
        yield Footer()

    def on_mount(self) -> None:
        self.owner.positions.table.focus()
        self.owner._show_header()  # the app mounts before this screen: its phase shows from the first frame


class BotctlApp(App):
    """`BotctlApp(settings)` builds and owns an engine; `BotctlApp(engine=...)` attaches to one
    that the caller built (and closes). `run_engine=False` leaves the ticking to the caller
    (tests tick by hand to stay deterministic). `clock()` is "now" in epoch ms for ages."""

    CSS_PATH = "botctl.tcss"
    TITLE = "botctl"
    ENABLE_COMMAND_PALETTE = True

    def __init__(self, settings=None, *, engine=None, signals: str | None = None,
                 clock: Callable[[], int] | None = None, run_engine: bool = True, min_repaint_s: float = 1 / 30,
                 handle_signals: bool = False):
        super().__init__()
        if settings is None:
            if engine is None:
                raise ValueError("BotctlApp needs settings or an engine")
            settings = engine.settings
        self.settings = settings
        self.signals = signals
        self.engine = engine
        self.owns_engine = engine is None
        self.run_engine = run_engine
        self.min_repaint_s = min_repaint_s
        self.handle_signals = handle_signals
        self.clock = clock or self._engine_now
        self.phase = "reconciling" if engine is None else "starting"
        self.error: str | None = None  # why the app could not run (for the CLI's one error line)
        self.error_code = 0  # 1 refused or failed, 2 configuration (the CLI's exit codes)
        self._build_worker = None
        self.model: PositionsModel | None = None
        self.chain_nonces: dict[tuple[str, str], int] = {}
        self._changes = Changes()
        self._backlog: set[int] = set()  # positions whose new price is not yet on their row
        self._drain_timer = None
        self._posted = False
        self._applied_at = 0.0
        self._timer = None
        self._unsubscribe = None
        self._engine_worker = None
        self._fetching = False
        self._refetch = False
        self._quitting = False
        self._engine_closed = False
        self._froze_gc = False
        self.ready = asyncio.Event()
        self.positions = PositionsPanel(self._now, id="positions")
        self.reservations = ReservationsPanel(self._now, id="reservations")
        self.orders = OrdersPanel(self._now, self._height, id="orders")
        self.nonces = NoncesPanel(self._now, id="nonces")
        self.events = EventLog(id="events")

    # ------------------------------------------------------------------ time

    def _engine_now(self) -> int:
        return self.engine.now() if self.engine is not None else int(time.time() * 1000)

    def _now(self) -> int:
        return self.clock()

    def _height(self) -> int | None:
        world = getattr(self.engine, "world", None)
        return getattr(world, "height", None)

    # ------------------------------------------------------------------ lifecycle

    def get_default_screen(self) -> Screen:
        return MainScreen(self)

    @property
    def header(self) -> StatusHeader:
        return self.screen_stack[0].query_one(StatusHeader)

    def run(self, *, before: Callable[[], None] | None = None, **kwargs):
        """Refuses to start without a terminal to read keys from and draw on (stdin and stderr, which
        Textual uses): off a terminal the input thread spins on end-of-file and the engine would own
        the book with nobody to stop it. `before` runs once that is settled, before anything is taken
        (the CLI creates its log file there, so a refused start leaves no trace)."""
        if not kwargs.get("headless") and not os.environ.get("TEXTUAL_DRIVER") and not on_a_terminal():
            self.error, self.error_code = NEEDS_TERMINAL, 2
            return None
        if before is not None:
            before()
        return super().run(**kwargs)

    def get_driver_class(self):
        """Textual's terminal driver, made to let go of a terminal that went away (console/tui/driver.py);
        any other (a headless one, one named in TEXTUAL_DRIVER) as Textual chooses."""
        chosen = super().get_driver_class()
        if (chosen.__module__, chosen.__name__) == ("textual.drivers.linux_driver", "LinuxDriver"):
            from console.tui.driver import TerminalDriver

            return TerminalDriver
        return chosen

    def on_mount(self) -> None:
        self._show_header()
        if self.handle_signals:
            loop = asyncio.get_running_loop()
            for sig in STOP_SIGNALS:
                try:
                    loop.add_signal_handler(sig, self._signalled, sig)
                except (NotImplementedError, RuntimeError, ValueError):
                    pass
        if self.engine is None:
            self._build_worker = self.run_worker(self._build(), name="build", group="engine", exit_on_error=False)
        else:
            self._attach_engine()
        self.set_interval(1.0, self._every_second)

    async def _build(self) -> None:
        from engine.kernel import build
        from engine.settings import SettingsError
        from engine.venues.port import VenueError
        from storage import InsecureHome, StorageError
        from storage.owner import OwnerBusy

        try:
            self.engine = await build(self.settings, self.signals, command="botctl tui")
        except (OwnerBusy, VenueError, FileNotFoundError, SettingsError, InsecureHome, StorageError) as exc:
            self._fail(str(exc), exc.code if isinstance(exc, (SettingsError, InsecureHome)) else 1)
            return
        except Exception as exc:  # a bug: one line for the operator, the traceback in the log
            log.exception("engine build failed")
            self._fail(f"unexpected {type(exc).__name__}: {exc} (the log has the traceback)", 1)
            return
        if self._quitting:  # asked to quit while starting: let go of what was just taken
            await self.engine.close()
            self._engine_closed = True
            return
        self._attach_engine()

    def _fail(self, error: str, code: int) -> None:
        self.error, self.error_code = error, code
        self.exit(return_code=code)

    def _attach_engine(self) -> None:
        engine = self.engine
        if engine.inbox is None:
            engine.start_inbox()
        self._unsubscribe = engine.sequencer.subscribe(self._on_events)
        self.model = PositionsModel(engine.book)
        self.positions.load(self.model)
        book = engine.book
        self.reservations.sync(book)
        self.orders.sync(book)
        self.nonces.sync(book, self.chain_nonces, self._height())
        self.phase = "running"
        self._show_header()
        rec = getattr(engine, "last_reconciliation", None)
        settled = f"{len(rec.resolved)} order(s) settled from the venue" if rec else "nothing to settle"
        differences = f", {len(rec.differences)} difference(s) to review" if rec and rec.differences else ""
        if rec and rec.not_compared:
            differences += f", {', '.join(rec.not_compared)} not compared (an order still in doubt)"
        self.events.add([(f"engine ready: {len(book.positions.base)} open position(s), {settled}{differences}; "
                          f"mode {self.settings.mode}, stage {book.meta.get('stage')}, profile {self.settings.profile}",
                          "bold")])
        self._fetch_chain_nonces()
        # The loaded book and the app are long-lived: keep the collector from re-walking them (a full
        # collection over 10,000 positions stalled the loop for 30-80 ms; after this, ~10).
        gc.collect()
        gc.freeze()
        self._froze_gc = True
        if self.run_engine:
            self._engine_worker = self.run_worker(self._run_engine(), name="engine", group="engine",
                                                  exit_on_error=False)
        self.ready.set()
        self.post_message(EngineReady())

    async def _run_engine(self) -> None:
        from engine.kernel import EngineFailed

        try:
            await self.engine.run(None, on_tick=self._on_tick)
        except EngineFailed as exc:
            self.post_message(EngineStopped(str(exc)))
        except Exception as exc:  # the sequencer stopped under us, a bug: show it, keep the screen
            log.exception("engine loop failed")
            self.post_message(EngineStopped(f"{type(exc).__name__}: {exc}"))

    @on(EngineStopped)
    def _engine_stopped(self, message: EngineStopped) -> None:
        if message.error and not self._quitting:
            self.phase = "stopped"
            self.events.add([(message.error, "bold red")])
            self.notify(message.error, title="engine stopped", severity="error", timeout=30)
            self._show_header()

    async def wait_ready(self) -> None:
        await self.ready.wait()

    # ------------------------------------------------------------------ live updates

    def _on_events(self, events: list) -> None:
        """Called by the sequencer after each commit, on this loop: record, never render here."""
        self._changes.add(events)
        if not self._posted:
            self._posted = True
            self.post_message(BookChanged())

    def _on_tick(self, _engine) -> None:
        self._changes.events += 1  # the block height moved
        if not self._posted:
            self._posted = True
            self.post_message(BookChanged())

    @on(BookChanged)
    def _book_changed(self, _message: BookChanged) -> None:
        wait = self.min_repaint_s - (time.monotonic() - self._applied_at)
        if wait <= 0:
            self.apply_changes()
        elif self._timer is None:
            self._timer = self.set_timer(wait, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self.apply_changes()

    CHUNK = 2_000  # positions recomputed per pass: a full price tick of 10,000 never blocks the loop long

    def apply_changes(self) -> None:
        """Fold everything committed since the last repaint into the panels (also: tests' flush).

        Rows on screen first: when a price tick moves more positions than one pass takes, the
        visible ones are recomputed now and the rest in further passes, each after a yield."""
        self._posted = False
        changes, self._changes = self._changes, Changes()
        self._applied_at = time.monotonic()
        engine, model = self.engine, self.model
        backlog = self._backlog
        if engine is None or model is None or not (changes or backlog):
            return
        book = engine.book
        if changes.log or changes.dropped:
            lines = []
            for event in changes.log:
                line = log_line(book, event, model.where)
                if line is not None:
                    lines.append(line)
            if changes.dropped:
                lines.append((f"… and {changes.dropped} more events", "dim"))
            self.events.add(lines)
        touched = set(changes.positions)  # opened, closing, closed: always now (rows come and go)
        if changes.marks:
            backlog.update(model.ids_for_marks(changes.marks))
        if backlog:
            if len(backlog) <= self.CHUNK:
                touched |= backlog
                backlog.clear()
            else:
                visible = [pid for pid in self.positions.table.visible_keys() if pid in backlog]
                touched.update(visible)
                backlog.difference_update(visible)
                for _ in range(min(len(backlog), self.CHUNK - len(visible))):
                    touched.add(backlog.pop())
        update = model.update
        for pid in touched:
            update(pid)
        self.positions.apply(touched)
        for pid in changes.positions:
            if pid not in book.positions.base:
                model.where.pop(pid, None)
        if changes.orders:
            self.reservations.sync(book)
            self.orders.sync(book)
            self._sync_nonces()
            self._fetch_chain_nonces()
        self._show_header()
        if backlog and self._drain_timer is None:
            self._drain_timer = self.set_timer(0.001, self._drain)

    def _drain(self) -> None:
        self._drain_timer = None
        self.apply_changes()

    def _show_header(self) -> None:
        engine = self.engine
        book = engine.book if engine is not None and self.model is not None else None
        try:
            header = self.header
        except Exception:
            return
        header.view = header_view(self.settings, book, self.model, self.phase, self._height())

    def _sync_nonces(self) -> None:
        if self.engine is not None:
            self.nonces.sync(self.engine.book, self.chain_nonces, self._height())

    def _every_second(self) -> None:
        """Ages and blocks-left move with time: repaint what is on screen (cached rows elsewhere stay)."""
        if self.engine is None or self.model is None:
            return
        self.positions.table.touch_all()
        self.reservations.table.touch_all()
        self.orders.table.touch_all()
        self.positions.maybe_resort()
        if self.engine.book.orders.base:
            self._sync_nonces()
        self._show_header()

    def _fetch_chain_nonces(self) -> None:
        if self._fetching:
            self._refetch = True
            return
        self._fetching = True
        self.run_worker(self._fetch(), name="nonces", group="nonces", exit_on_error=False)

    async def _fetch(self) -> None:
        """The chain's pending nonce per EVM account, as the chain says now (through its port)."""
        try:
            while True:
                self._refetch = False
                engine = self.engine
                ports = getattr(engine, "ports", None)
                if engine is None or not ports:
                    return
                seen = {}
                for name, spec in sorted(engine.book.policy.chains.items()):
                    if spec.kind == "evm" and name in ports:
                        seen[(name, spec.address)] = await ports[name].pending_nonce(spec.address)
                if seen != self.chain_nonces:
                    self.chain_nonces = seen
                    self._sync_nonces()
                if not self._refetch:
                    return
        except Exception:  # the venue closed under us (quitting): nothing to show
            return
        finally:
            self._fetching = False

    async def sync(self) -> None:
        """Tests and benchmarks: fetch the chain's nonces and repaint everything now."""
        self._fetching = False
        await self._fetch()
        self.apply_changes()
        while self._backlog:
            self.apply_changes()
        self._sync_nonces()
        self.positions.maybe_resort()
        self._show_header()

    # ------------------------------------------------------------------ operator actions

    def _selected(self):
        if self.engine is None or self.model is None:
            return None
        pid = self.positions.table.cursor_key
        return None if pid is None else self.engine.book.positions.base.get(pid)

    def action_close_position(self) -> None:
        position = self._selected()
        if position is None:
            self.notify("no open position selected", severity="warning")
            return
        if position.state != "open":
            self.notify(f"position {position.id} is already {position.state}", severity="warning")
            return
        self.push_screen(ConfirmClose(position.id, self.close_preview(position)),
                         lambda ok: ok and self._close(position.id))

    def close_preview(self, position) -> Text:
        book = self.engine.book
        spec = book.policy.chains[position.chain]
        qd, td = spec.quote_decimals, spec.tokens.get(position.token, 18)
        size = amount(from_units(position.size, td))
        cost = from_units(position.cost, qd)
        value_units = self.model.value.get(position.id)
        text = Text()
        text.append(f"Sell {size} {position.token} on {position.chain}", "bold")
        text.append(f" (held {age(self.clock() - position.opened_at)}, cost {money(cost)}).\n")
        if value_units is None:
            text.append("No price mark yet: the venue's quote decides the proceeds.")
        else:
            value = from_units(value_units, qd)
            fee_bps = getattr(getattr(self.settings, "paper", None), "fee_bps", 0) if self.settings.mode == "paper" \
                else 0
            fee = value * Decimal(fee_bps) / Decimal(10_000)
            pnl = value - fee - cost
            mark = book.marks.base.get((position.chain, position.token))
            text.append(f"At ~{price(mark[0]) if mark else '-'}: ~{money(value - fee)} after ~{money(fee, 4)} fees; "
                        "expected pnl ")
            text.append(signed(pnl), "green" if pnl > 0 else "red" if pnl < 0 else "")
            text.append(".")
        text.append("\nThe sale goes through the engine's queue, exactly once; slippage is capped at "
                    f"{self.settings.max_slippage_bps} bps.")
        return text

    @work(group="operator", exit_on_error=False)
    async def _close(self, pid: int) -> None:
        from engine.core.messages import RequestClose

        engine = self.engine
        position = engine.book.positions.base.get(pid)
        if position is None:
            self.post_message(OperatorResult("close", False, f"position {pid} is already closed"))
            return
        fee = await engine.executors[position.chain].fee_reserve()
        result = await self._submit(RequestClose(pid, "operator close (tui)", fee, engine.now(), by="tui"))
        if result is not None:
            self.post_message(OperatorResult(
                "close", result.accepted,
                f"position {pid} closing" if result.accepted else f"close {pid} refused: {result.reason}"))

    async def _submit(self, command):
        from engine.sequencer import SequencerStopped

        try:
            result = await self.engine.sequencer.submit(command)
            self.engine.wake()  # a close is sent now, not at the end of the engine's poll interval
            return result
        except SequencerStopped as exc:
            self.post_message(OperatorResult(type(command).__name__, False, str(exc)))
        except Exception as exc:  # a failed commit: nothing was applied
            self.post_message(OperatorResult(type(command).__name__, False, f"not applied: {exc}"))
        return None

    def action_pause(self) -> None:
        from engine.core.messages import TradingState

        if self.engine is None:
            return
        state = self.engine.book.trading_state
        if state is TradingState.HALTED:
            self.push_screen(TypeToConfirm(
                "RESUME", "Resume from a halt?",
                "Leaving a halt re-enables automatic trading: new entries and automatic exits."),
                lambda ok: ok and self._set_state(TradingState.ACTIVE, "operator resume (tui)", force=True))
        elif state is TradingState.REDUCING:
            self._set_state(TradingState.ACTIVE, "operator resume (tui)")
        else:
            self._set_state(TradingState.REDUCING, "operator pause (tui)")

    def action_halt(self) -> None:
        from engine.core.messages import TradingState

        if self.engine is None:
            return
        if self.engine.book.trading_state is TradingState.HALTED:
            self.notify("already halted", severity="warning")
            return
        self.push_screen(TypeToConfirm(
            "HALT", "Halt trading?",
            "Nothing automatic: no new entries and no automatic exits. Orders in flight still settle; "
            "you can still close positions by hand. Leaving a halt needs RESUME."),
            lambda ok: ok and self._set_state(TradingState.HALTED, "operator halt (tui)"))

    @work(group="operator", exit_on_error=False)
    async def _set_state(self, state, reason: str, force: bool = False) -> None:
        from engine.core.messages import SetTradingState

        result = await self._submit(SetTradingState(state, reason, self.engine.now(), by="tui", force=force))
        if result is not None:
            self.post_message(OperatorResult(
                "trading", result.accepted,
                f"trading {state.value}" if result.accepted else f"refused: {result.reason}"))

    @on(OperatorResult)
    def _operator_result(self, message: OperatorResult) -> None:
        self.notify(message.detail, severity="information" if message.accepted else "error",
                    timeout=4 if message.accepted else 10)
        if not message.accepted:
            self.events.add([(message.detail, "bold red")])

    def action_audit(self) -> None:
        self._report("Audit", "replaying the journal and checking every invariant…", audit_report)

    def action_rollout(self) -> None:
        """The staged-rollout checklist, measured from the database like `botctl rollout check`."""
        self._report("Rollout", "measuring the evidence and running the audit…", rollout_report)

    def _report(self, title: str, waiting: str, compute) -> None:
        """A read-only report on a modal screen, computed in a thread on its own connection."""
        if self.engine is None:
            return
        screen = InfoScreen(title, waiting)
        self.push_screen(screen)
        self._fill(screen, title, compute)

    @work(group="report", exclusive=True, exit_on_error=False)
    async def _fill(self, screen: InfoScreen, title: str, compute) -> None:
        from engine.kernel import DB_NAME

        db = Path(self.settings.home) / DB_NAME
        book = self.engine.book
        try:
            heading, body, danger, line = await asyncio.to_thread(compute, db, book.policy, book.meta.get("stage"),
                                                                  self.settings)
        except Exception as exc:
            screen.show(f"{title} failed", f"{type(exc).__name__}: {exc}", danger=True)
            return
        screen.show(heading, body, danger=danger)
        if line is not None:
            self.events.add([line])

    def action_help(self) -> None:
        self.push_screen(InfoScreen("Keys", HELP))

    def action_sort(self) -> None:
        column = self.positions.cycle_sort()
        self.notify(f"positions sorted by {column}", timeout=2)

    def action_reverse(self) -> None:
        self.positions.reverse_sort()

    # ------------------------------------------------------------------ quitting

    async def action_quit(self) -> None:
        if self._quitting:
            return
        engine = self.engine
        in_flight = len(engine.book.orders.base) if engine is not None and not self._engine_closed else 0
        if in_flight:
            self.push_screen(QuitDialog(in_flight), self._quit_choice)
        else:
            self._begin_quitting(settle=False)

    def _quit_choice(self, choice: str | None) -> None:
        if choice in ("settle", "now"):
            self._begin_quitting(settle=choice == "settle")

    def action_quit_now(self) -> None:
        self._begin_quitting(settle=False)

    def _signalled(self, sig: int) -> None:
        """SIGTERM, SIGHUP (the terminal went away), SIGINT: "quit now", whatever screen is up."""
        log.info("%s: stopping the engine and quitting", signal.Signals(sig).name)
        self.call_later(self.action_quit_now)

    @on(TerminalLost)
    def _terminal_lost(self, _message: TerminalLost) -> None:
        log.warning("the terminal went away: stopping the engine and quitting")
        self.action_quit_now()

    def _begin_quitting(self, settle: bool) -> None:
        """Once: a second way out (a signal over the quit dialog, SIGHUP and the lost terminal together)
        must not restart, and so cancel, a quit that is already closing the engine."""
        if self._quitting:
            return
        self._quitting = True
        self.phase = "stopping"
        self._show_header()
        self._stop_and_exit(settle)

    @work(group="quit", exit_on_error=False)
    async def _stop_and_exit(self, settle: bool) -> None:
        """Stop at a tick boundary (nothing half-done), optionally settle, close, exit."""
        if self._build_worker is not None and self._build_worker.is_running:
            try:
                await self._build_worker.wait()  # it closes what it built (see _build)
            except Exception:
                pass
        engine = self.engine
        if engine is not None and not self._engine_closed:
            engine.stop()
            worker = self._engine_worker
            if worker is not None:
                try:
                    await worker.wait()
                except Exception:
                    pass
            if settle:
                self.notify("settling the orders in flight…", timeout=30)
                engine.automatic = False
                try:
                    done = await engine.settle()
                except Exception as exc:
                    done = False
                    log.warning("settle before quitting failed: %s", exc)
                if not done:
                    log.warning("quit with orders still in flight: they are settled on the next start")
            await self._release()
        self.exit()

    async def _release(self) -> None:
        if self._unsubscribe is not None:
            try:
                self._unsubscribe()
            except ValueError:
                pass
            self._unsubscribe = None
        if self.owns_engine and self.engine is not None and not self._engine_closed:
            self._engine_closed = True
            await self.engine.close()

    async def on_unmount(self) -> None:
        """However the app ends, an engine it built is closed (the lock released)."""
        if self.engine is not None and not self._engine_closed:
            self.engine.stop()
            await self._release()
        if self._froze_gc:
            gc.unfreeze()  # back to the collector: whatever the app leaves behind is freed normally
            self._froze_gc = False

    # ------------------------------------------------------------------ command palette

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield SystemCommand("Close position", "Close the selected position (asks first)", self.action_close_position)
        yield SystemCommand("Pause / resume", "Pause trading (exits only) or resume it", self.action_pause)
        yield SystemCommand("Halt", "Halt trading: nothing automatic (type HALT to confirm)", self.action_halt)
        yield SystemCommand("Audit", "Replay the journal and check every invariant", self.action_audit)
        yield SystemCommand("Rollout checklist", "The stage's promotion checklist, measured from the database",
                            self.action_rollout)
        yield SystemCommand("Sort positions", "Sort the positions by the next column", self.action_sort)
        yield SystemCommand("Help", "The keys", self.action_help)
        yield from super().get_system_commands(screen)


def audit_report(db: Path, policy, _stage: str, _settings) -> tuple[str, Text | str, bool, tuple | None]:
    """The audit on a read-only connection, in one read transaction (runs in a thread)."""
    from engine.audit import audit_file

    started = time.monotonic()
    problems, events = audit_file(db, policy)
    if problems:
        body = Text()
        for line in problems:
            body.append(f"violation: {line}\n", "red")
        return (f"Audit: {len(problems)} violation(s)", body, True,
                (f"audit: {len(problems)} violation(s)", "bold red"))
    took = time.monotonic() - started
    return ("Audit clean", f"{events} journal events replayed in {took:.1f} s; every invariant holds.", False,
            (f"audit clean: {events} journal events replayed", "green"))


def rollout_report(db: Path, policy, stage_name: str, settings) -> tuple[str, Text, bool, None]:
    """The checklist as the screen shows it (runs in a thread: it reads and audits)."""
    from engine.core.evidence import checklist
    from engine.rollout import evidence_of
    current = policy.stages[stage_name]
    ev = evidence_of(db, policy, current.name)
    items = checklist(current, ev, settings.rollout.min_hours, settings.rollout.min_trades)
    body = Text()
    if current.next is None:
        body.append("The last stage: nothing to promote to.\n")
        return f"Rollout: stage {current.name}", body, False, None
    done = sum(1 for i in items if i.ok)
    for item in items:
        body.append(" ok  " if item.ok else " MISS ", "green" if item.ok else "bold red")
        body.append(f"{item.label}: {item.have}")
        if not item.ok:
            body.append(f"  (needs {item.need})", "dim")
        body.append("\n")
    body.append(f"\nEvidence counts on {ev.network} only. Attest with `botctl rollout attest KEY`; "
                f"run drills with `botctl drill KIND` (with the console closed); promote with "
                f"`botctl rollout promote`.", "dim")
    return f"Rollout: {current.name} -> {current.next}, {done}/{len(items)} done", body, False, None
