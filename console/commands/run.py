"""`botctl run`: the headless engine, with progress on stderr."""

from __future__ import annotations

import signal
import sys
import time

import typer

from console.commands.common import command_line, confirm_live
from console.errors import Usage
from console.output import money


def _progress(engine, every_s: float = 2.0):
    last = [0.0]

    def show(eng) -> None:
        now = time.monotonic()
        if now - last[0] < every_s:
            return
        last[0] = now
        book = eng.book
        cash = "  ".join(
            f"{name} {money(_whole(book.balance(name, 'quote', 'cash'), spec.quote_decimals))}"
            for name, spec in sorted(book.policy.chains.items()))
        block = f"block {eng.world.height}  " if eng.world.height is not None else ""
        sys.stderr.write(
            f"{block}opened {eng.stats.opened}  closed {eng.stats.closed}  "
            f"open {len(book.positions.base)}  in flight {len(book.orders.base)}  "
            f"state {book.trading_state.value}  cash: {cash}\n")
        sys.stderr.flush()

    return show


def _whole(units: int, decimals: int):
    from engine.core.money import from_units

    return from_units(units, decimals)


def run_command(
    profile: str = typer.Option(None, "--profile", help="Profile to run (default: BOTCTL_PROFILE or paper)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the simulated market (paper mode)."),
    duration: float = typer.Option(None, "--duration", min=0, help="Stop after this many seconds (paper: simulated seconds, one block each by default)."),
    signals: str = typer.Option(None, "--signals", help="Read entries from a JSONL file (- for stdin)."),
) -> None:
    """Run the engine headless until Ctrl-C or --duration."""
    import asyncio

    from engine.settings import load_settings

    if seed is not None and not -(2**63) <= seed < 2**63:
        raise Usage(f"--seed {seed} is out of range: a seed is a 64-bit integer")
    overrides = {"profile": profile}
    settings = load_settings(**overrides)
    if seed is not None:
        settings = settings.model_copy(update={"paper": settings.paper.model_copy(update={"seed": seed})})
    confirm_live(settings)
    asyncio.run(_run(settings, duration, signals))


async def _run(settings, duration, signals) -> None:
    import asyncio

    from console.errors import Failed
    from engine import logs
    from engine.kernel import EngineFailed, build
    from engine.venues.port import VenueError
    from storage import StorageError, ensure_home, translated
    from storage.owner import OwnerBusy

    logs.setup(ensure_home(settings.home))
    loop = asyncio.get_running_loop()
    stopped: list[int] = []

    def stop_starting(sig: int) -> None:
        """A signal during the start (reconciling may take a while) stops the engine as soon as the
        start is over. The start itself is not cancelled: web3's HTTP session cache takes a lock on a
        worker thread, which a cancellation can leave held for ever (the process would not exit)."""
        if not stopped:
            sys.stderr.write("botctl: stopping as soon as the start is over\n")
        stopped.append(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_starting, sig)
    try:
        engine = await build(settings, signals, command=command_line())
    except VenueError as exc:
        raise Failed(str(exc)) from None
    except FileNotFoundError as exc:
        raise Failed(str(exc)) from None
    except OwnerBusy as exc:
        raise Failed(str(exc)) from None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, engine.stop)
    if stopped:  # stop at once, cleanly: no step is taken
        engine.stop()
    engine.start_inbox()
    sys.stderr.write(f"botctl: {settings.mode} mode, stage {settings.profile}, {engine.world.describe()}, "
                     f"home {settings.home} (Ctrl-C stops)\n")
    try:
        await engine.run(duration, _progress(engine))
    except EngineFailed as exc:
        # a failure of the machine (a full disk...) is said as itself: what happened and what to do
        known = translated(exc.__cause__) if exc.__cause__ is not None else exc
        if isinstance(known, StorageError):
            raise known from known.__cause__
        raise Failed(str(exc)) from None
    finally:
        stats, book = engine.stats, engine.book
        await engine.close()
        steps = "blocks" if engine.world.height is not None else "steps"
        sys.stderr.write(f"stopped: {stats.ticks} {steps}, {stats.opened} opened, {stats.closed} closed, "
                         f"{len(book.positions.base)} open, {len(book.orders.base)} orders in flight\n")
