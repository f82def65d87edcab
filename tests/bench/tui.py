"""TUI responsiveness under load (a script, not a test).

Targets (issue 5): with 10,000 open positions and 200 events/s for 10 s, the
p99 time from an event to its panel repaint and from a key press to its effect
are both under 100 ms.

The state is built through the real engine like tests/bench/recovery.py (its
functions are reused): a paper market of ~5,600 tokens per chain, one position
per token, entries reserved, signed, broadcast and filled through the sequencer
and the order driver. Then `BotctlApp` runs headless (Textual's own test
driver: the compositor renders every frame, nothing is written to a terminal)
with the engine embedded, at 120x40, and the load starts:

  - 200 events/s: MarkPrices commands through the sequencer, each moving the
    price of 4 held tokens, one of them a position on screen (so every event
    has a row to repaint), the others anywhere in the book. Sent on an absolute
    schedule and not awaited one by one, so a slow commit cannot slow the rate.
  - `--ticks-per-s N` (default 1) full engine ticks on top: a block mined, every
    one of the ~11,000 prices marked (10,000 rows change), orders advanced, exits
    checked -- the cost of the engine itself running on the app's loop.
  - key presses every 100 ms posted as the terminal driver posts them: up/down
    (effect: the new cursor row painted) and, every 2 s, `p` (pause/resume:
    a command through the queue; effect: the header painted in the new state).

Measured on the app's loop with perf_counter:
  event -> repaint: from the sequencer publishing the event (after COMMIT) to
      the first paint of its row computed from a model updated after the event;
  key -> effect: from posting the key to the paint that shows its effect.

    python tests/bench/tui.py [--quick] [--positions N] [--seconds S] [--rate R] [--ticks-per-s N]

`--quick`: 1,000 positions for 3 s (CI smoke test, a few seconds). Always
exits 0 (PASS or MISS is printed); a failure to build the state is an error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import recovery  # noqa: E402  (the state builders)

import engine.kernel as kernel  # noqa: E402
from engine.core.messages import MarkPrices, PricesMarked  # noqa: E402

TARGET_MS = 100.0
TOKENS_PER_EVENT = 4
KEY_EVERY_S = 0.1
PAUSE_EVERY_S = 2.0


def say(*parts) -> None:
    print(*parts, flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(name: str, values: list[float]) -> str:
    if not values:
        return f"{name}: no samples"
    return (f"{name}: median {statistics.median(values):.1f} ms, p99 {pct(values, 0.99):.1f} ms, "
            f"max {max(values):.1f} ms ({len(values):,} samples)")


async def build_state(home: Path, positions: int):
    market = recovery.make_market(positions // 2 + 600)
    settings = recovery.make_settings(home)
    engine = await kernel.build(settings, market=market, stages=recovery.UNBOUNDED)
    recovery.speed_up_venue_reads(engine)  # exact, write-invalidated caches of the venue's reads
    await recovery.open_positions(engine, market, positions)
    return engine, market


async def measure(engine, seconds: float, rate: float, ticks_per_s: float) -> dict:
    from textual import events

    from console.tui.app import BotctlApp
    from engine.core.messages import TradingState

    app = BotctlApp(engine=engine, run_engine=False)
    book = engine.book
    event_ms: list[float] = []
    key_ms: dict[str, list[float]] = {"cursor": [], "pause": []}
    loop_lag: list[float] = []
    pending: dict[int, list[float]] = {}  # position id -> times of events not yet shown
    updated: dict[int, float] = {}  # position id -> when the model last recomputed it
    expect: dict = {}  # what the pressed key must show, and since when
    counts = {"events": 0, "submitted": 0, "ticks": 0, "tick_s": 0.0}

    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        table, model = app.positions.table, app.model

        # ---- instrumentation: stamp events as they are published, and paints as they happen
        real_update = model.update

        def update(pid):
            updated[pid] = time.perf_counter()
            return real_update(pid)

        model.update = update

        def on_events(published):
            now = time.perf_counter()
            visible = None
            slots = book.slots.base
            for event in published:
                if type(event) is not PricesMarked:
                    continue
                counts["events"] += 1
                if visible is None:
                    visible = set(table.visible_keys())
                for token, _price in event.prices:
                    slot = slots.get((event.chain, token))
                    if slot and slot[0] == "p":
                        pid = int(slot[1:])
                        if pid in visible:
                            pending.setdefault(pid, []).append(now)

        engine.sequencer.subscribe(on_events)

        def on_row_painted(key):
            now = time.perf_counter()
            waiting = pending.get(key)
            if waiting:
                shown = updated.get(key, 0.0)
                keep = []
                for t in waiting:
                    (event_ms.append((now - t) * 1000) if t <= shown else keep.append(t))
                if keep:
                    pending[key] = keep
                else:
                    del pending[key]
            want = expect.get("cursor")
            if want is not None and key == want[0] and table.cursor_key == key:
                key_ms["cursor"].append((now - want[1]) * 1000)
                expect.pop("cursor", None)

        table.on_row_painted = on_row_painted

        def on_header_painted(view):
            want = expect.get("pause")
            if want is not None and view is not None and view.state == want[0]:
                key_ms["pause"].append((time.perf_counter() - want[1]) * 1000)
                expect.pop("pause", None)

        app.header.on_painted = on_header_painted

        # ---- the load
        held: dict[str, list[tuple[str, Decimal]]] = {}
        for p in book.positions.base.values():
            held.setdefault(p.chain, []).append((p.token, book.marks.base[(p.chain, p.token)][0]))
        chains = sorted(held)
        draw = random.Random(5)
        submit = engine.sequencer.submit
        inflight: set = set()
        stop_at = time.perf_counter() + seconds

        def moved(price: Decimal) -> Decimal:
            return (price * (10_000 + draw.randint(-40, 40)) / 10_000).quantize(Decimal("1e-12")).normalize()

        async def paced(period_s: float, first: int = 0):
            """Yields 1, 2, ... at `first`, `first + 1`, ... periods from now, until stop_at."""
            start = time.perf_counter()
            n = 0
            while True:
                due = start + (n + first) * period_s
                if due >= stop_at:
                    return
                now = time.perf_counter()
                if due > now:
                    await asyncio.sleep(due - now)
                n += 1
                yield n

        async def producer():
            async for _n in paced(1 / rate):
                on_screen = table.visible_keys()
                pid = draw.choice(on_screen) if on_screen else None
                position = book.positions.base.get(pid) if pid is not None else None
                chain = position.chain if position else draw.choice(chains)
                tokens = {draw.choice(held[chain]) for _ in range(TOKENS_PER_EVENT - 1)}
                if position:
                    tokens.add((position.token, book.marks.base[(chain, position.token)][0]))
                prices = tuple(sorted((tok, moved(price)) for tok, price in tokens))
                task = asyncio.ensure_future(submit(MarkPrices(chain, prices, engine.now())))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
                counts["submitted"] += 1

        async def ticker():
            if ticks_per_s <= 0:
                return
            async for _n in paced(1 / ticks_per_s):
                t = time.perf_counter()
                await engine.tick()
                counts["ticks"] += 1
                counts["tick_s"] += time.perf_counter() - t

        async def keys():
            paused = False
            async for n in paced(KEY_EVERY_S, first=1):
                if n % int(PAUSE_EVERY_S / KEY_EVERY_S) == 0:
                    paused = not paused
                    expect["pause"] = ("PAUSED" if paused else "RUNNING", time.perf_counter())
                    app.post_message(events.Key("p", "p"))
                    continue
                keys_now = table.keys
                i = table.index_of(table.cursor_key) or 0
                key = "down" if (n // 8) % 2 == 0 else "up"
                target = min(len(keys_now) - 1, i + 1) if key == "down" else max(0, i - 1)
                if keys_now[target] == table.cursor_key:
                    continue
                expect["cursor"] = (keys_now[target], time.perf_counter())
                app.post_message(events.Key(key, None))

        async def lag():
            while time.perf_counter() < stop_at:
                t = time.perf_counter()
                await asyncio.sleep(0.01)
                loop_lag.append((time.perf_counter() - t - 0.01) * 1000)

        started = time.perf_counter()
        cpu0 = time.process_time()
        await asyncio.gather(producer(), ticker(), keys(), lag())
        if inflight:
            await asyncio.gather(*inflight)
        await app.sync()
        await pilot.pause()
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        missed = sum(len(v) for v in pending.values())
        if book.trading_state is not TradingState.ACTIVE:
            await engine.sequencer.submit(__import__("engine.core.messages", fromlist=["SetTradingState"]).SetTradingState(
                TradingState.ACTIVE, "bench", engine.now()))
    return {"event_ms": event_ms, "key_ms": key_ms, "loop_lag": loop_lag, "elapsed": elapsed, "cpu": cpu,
            "unshown": missed, **counts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 positions for 3 s (CI smoke test)")
    parser.add_argument("--positions", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--ticks-per-s", type=float, default=1.0, help="full engine ticks per second on top")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile the loop thread while measuring")
    args = parser.parse_args()
    positions = args.positions or (1_000 if args.quick else 10_000)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    root = Path(tempfile.mkdtemp(prefix="botctl-tui-bench-"))
    say(f"tui benchmark{' (quick)' if args.quick else ''}: {positions:,} open positions, {args.rate:g} events/s "
        f"+ {args.ticks_per_s:g} engine tick(s)/s for {seconds:g} s at 120x40; python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cpu")

    async def go():
        t = time.perf_counter()
        engine, _market = await build_state(root / "home", positions)
        say(f"state built in {time.perf_counter() - t:.1f} s: {len(engine.book.positions.base):,} open positions")
        try:
            if not args.profile:
                return await measure(engine, seconds, args.rate, args.ticks_per_s)
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            try:
                return await measure(engine, seconds, args.rate, args.ticks_per_s)
            finally:
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        finally:
            await engine.close()

    try:
        r = asyncio.run(go())
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    say(f"load: {r['submitted']:,} MarkPrices sent, {r['events']:,} price events published in {r['elapsed']:.1f} s "
        f"({r['events'] / r['elapsed']:.0f}/s incl. engine ticks), {r['ticks']} engine ticks "
        f"(avg {r['tick_s'] / max(1, r['ticks']) * 1000:.0f} ms each), CPU {r['cpu'] / r['elapsed'] * 100:.0f}% "
        f"of one core")
    say("  " + summary("event -> repaint (row on screen)", r["event_ms"]))
    say("  " + summary("key -> effect, cursor up/down", r["key_ms"]["cursor"]))
    say("  " + summary("key -> effect, p (pause/resume via the queue)", r["key_ms"]["pause"]))
    keys_all = r["key_ms"]["cursor"] + r["key_ms"]["pause"]
    say("  " + summary("key -> effect, all keys", keys_all))
    say("  " + summary("event loop lag (10 ms sleeps)", r["loop_lag"]))
    if r["unshown"]:
        say(f"  {r['unshown']} event(s) for rows that scrolled away before a repaint (not counted)")
    e99, k99 = pct(r["event_ms"], 0.99), pct(keys_all, 0.99)
    verdict = "PASS" if e99 < TARGET_MS and k99 < TARGET_MS else "MISS"
    say(f"RESULT {verdict}: p99 event->repaint {e99:.1f} ms, p99 key->effect {k99:.1f} ms "
        f"(target < {TARGET_MS:.0f} ms; {positions:,} positions, {args.rate:g} events/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
