"""Restart-to-ready time of a big book (a script, not a test).

Target (the issue): a book with 1,000,000 journal events, 10,000 open positions
and 1,000 orders of unknown outcome restarts and is ready -- book loaded and
every SIGNED/SUBMITTED/UNKNOWN order reconciled against the venue, which is
what `engine.kernel.build` does before it returns -- in under 2 s.

The state is built through the real engine in a temporary BOTCTL_HOME, on a
paper market of ~5,600 tokens per chain (one position per token):
  1. positions: ReserveEntry through the sequencer, then the order driver signs,
     commits and broadcasts, the venue mines blocks (the engine marks every
     price each block, as `Engine.tick` does), the driver settles the fills;
     entries that fail (slippage) are simply tried again on a free token;
  2. unknown orders: every executor's faults set to Faults(0, 10_000, expiry):
     each broadcast is lost, about half before the venue saw it (lost request),
     half after (lost response); then the venue mines a few blocks (the engine
     is "down"), so the lost responses land while the book still holds them
     UNKNOWN;
  3. padding to the journal target with genuine PricesMarked events of held
     tokens: by default MarkPrices commands through the sequencer from many
     concurrent producers (`--pad direct` appends encoded events with
     engine.persist.encode_event + JOURNAL_SQL through sqlite3 instead, keeping
     seq contiguous and the marks and meta 'seq' rows consistent).
Only the build phase reads the venue through an exact, write-invalidated cache
(the venue re-reads all 5,600 prices and balances for every quote and swap);
the measured restarts run the engine and venue unpatched.

The restart is measured in a fresh process (`--restart HOME`), from spawn to
`await build(...)` returned: interpreter start, imports, settings, market,
lock, migrations, load_book, venue, fund, reconcile. Once with the home's
database files dropped from the page cache (posix_fadvise, best effort: the
"cold" figure, judged against the target), once warm on a copy. `engine.audit`
then replays the whole journal once (information only). If the target is
missed (or with `--profile`), a third copy is restarted under cProfile.

    python tests/bench/recovery.py [--quick] [--pad sequencer|direct] [--profile] [--keep]

Always exits 0 on PASS and MISS; a failure to build the state is an error.
`--quick` is 10x smaller everywhere (CI smoke test, a few seconds).
"""

from __future__ import annotations

import time

_T0 = time.time()  # first thing: the restart child's import time is measured from here

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import Counter  # noqa: E402
from decimal import Decimal  # noqa: E402
from pathlib import Path  # noqa: E402

import engine.kernel as kernel  # noqa: E402
from engine.core.messages import MarkPrices, PricesMarked, ReserveEntry  # noqa: E402
from engine.venues.paper.executor import Faults, VenueLink  # noqa: E402
from engine.venues.paper.market import BASE, SOLANA, PaperChain, PaperToken, _address  # noqa: E402
from engine.settings import Settings  # noqa: E402
from engine.stages import unbounded  # noqa: E402

_T_IMPORTED = time.time()

TARGET_S = 2.0
FULL = {"positions": 10_000, "unknown": 1_000, "events": 1_000_000, "tokens": 5_600}
QUICK = {k: v // 10 for k, v in FULL.items()}
ROUND = 2_500  # entries reserved concurrently per round
LAND_BLOCKS = 3  # blocks mined while the engine is "down" after the unknown orders
MARK_TOKENS = 4  # tokens per padding PricesMarked event
PRODUCERS = 256  # concurrent MarkPrices producers when padding through the sequencer


def say(*parts) -> None:
    print(*parts, flush=True)


# --------------------------------------------------------------------------- the world


def make_market(tokens_per_chain: int) -> dict[str, PaperChain]:
    """SOLANA and BASE with `tokens_per_chain` seeded tokens each (same market in every process)."""
    market = {}
    for spec, decimals in ((SOLANA, (6, 9)), (BASE, (18, 6))):
        draw = random.Random(f"recovery-bench:{spec.name}")
        tokens = []
        for i in range(tokens_per_chain):
            symbol = f"{spec.name[:3].upper()}{i:05d}"
            price = Decimal(f"{10 ** draw.uniform(-5, 1):.6g}")
            address = _address(spec.kind, f"{spec.name}:{symbol}")
            tokens.append(PaperToken(symbol, draw.choice(decimals), price, address))
        market[spec.name] = PaperChain(spec.name, spec.kind, spec.native, spec.native_decimals, spec.quote_decimals,
                                       spec.address, tuple(tokens))
    return market


# A load benchmark opens 10,000 positions: far beyond any stage's ceiling, by design. Its settings
# are built without a profile, and the engine is given stages without ceilings.
UNBOUNDED = unbounded()


def make_settings(home: Path):
    return Settings(
        home=home,
        max_position_usd=Decimal(50),
        default_position_usd=Decimal(25),
        max_exposure_usd=Decimal(10**12),
        max_open_positions=10**9,
        max_hold_s=0,
        stop_loss_bps=0,
        take_profit_bps=0,
        cooldown_s=0,
        max_consecutive_losses=0,
        max_slippage_bps=300,  # fewer slippage failures while building (they are retried anyway)
        paper={"speed": 0, "seed": 1, "deposit_usd": "100000000", "native_deposit": "100000",
               "opportunity_rate_bps": 0},
    )


# --------------------------------------------------------------------------- build-phase venue cache


class _CachedConn:
    """The venue's connection, watching writes to prices and balances to keep the caches exact."""

    def __init__(self, conn: sqlite3.Connection, prices: dict, balances: dict):
        self._conn, self._prices, self._balances = conn, prices, balances

    def execute(self, sql, params=()):
        if sql.startswith("UPDATE prices"):
            self._prices.pop(params[1], None)
        elif sql.startswith("INSERT INTO balances"):  # _credit: (chain, address, asset, amount)
            cached = self._balances.get((params[0], params[1]))
            if cached is not None:
                cached[params[2]] = int(params[3])
        elif "balances" in sql:
            self._balances.clear()
        return self._conn.execute(sql, params)

    def executemany(self, sql, rows):
        if "prices" in sql:
            self._prices.clear()
        if "balances" in sql:
            self._balances.clear()
        return self._conn.executemany(sql, rows)

    def __getattr__(self, name):
        return getattr(self._conn, name)


class _Spec:
    """A PaperChain whose policy() is built once (PaperExecutor.quote builds it per quote)."""

    def __init__(self, chain: PaperChain):
        self._chain, self._policy = chain, chain.policy()

    def policy(self):
        return self._policy

    def __getattr__(self, name):
        return getattr(self._chain, name)


def speed_up_venue_reads(engine) -> None:
    venue = engine.world.venue
    prices_cache: dict = {}
    balances_cache: dict = {}
    real_prices, real_balances = venue.prices, venue.balances

    def prices(chain):
        got = prices_cache.get(chain)
        if got is None:
            got = prices_cache[chain] = real_prices(chain)
        return dict(got)

    def balances(chain, address=None):
        key = (chain, address or venue.chains[chain].address)
        got = balances_cache.get(key)
        if got is None:
            got = balances_cache[key] = real_balances(chain, address)
        return dict(got)

    venue.prices, venue.balances = prices, balances
    venue._conn = _CachedConn(venue._conn, prices_cache, balances_cache)
    for executor in engine.executors.values():
        executor.spec = _Spec(executor.spec)


# --------------------------------------------------------------------------- building the state


async def mine(engine) -> None:
    """One block, and the engine marks every price of every chain (as Engine.tick does)."""
    await engine.world.link.call(engine.world.venue.advance)
    now = engine.now()
    for chain in sorted(engine.executors):
        prices = await engine.world.link.call(engine.world.venue.prices, chain)
        await engine.sequencer.submit(MarkPrices(chain, tuple(sorted(prices.items())), now))


async def advance_orders(engine, states=("new", "signed", "submitted", "unknown")) -> Counter:
    orders = [o for o in engine.book.live_orders() if o.state in states]
    outcomes = await asyncio.gather(*(engine.driver.advance(o) for o in orders))
    return Counter(outcome.split(":")[0] for outcome in outcomes)


def free_tokens(engine, market: dict, count: int) -> list[tuple[str, str]]:
    """`count` (chain, token) with no position or reservation, alternating chains."""
    slots = engine.book.slots
    per_chain = [[(name, t.symbol) for t in chain.tokens if (name, t.symbol) not in slots]
                 for name, chain in sorted(market.items())]
    picked = []
    for i in range(max(map(len, per_chain))):
        for tokens in per_chain:
            if i < len(tokens):
                picked.append(tokens[i])
    if len(picked) < count:
        raise SystemExit(f"not enough free tokens: need {count}, have {len(picked)} (raise tokens per chain)")
    return picked[:count]


async def reserve(engine, picks: list[tuple[str, str]]) -> int:
    fees = {name: await ex.fee_reserve() for name, ex in engine.executors.items()}
    now = engine.now()
    results = await asyncio.gather(*(engine.sequencer.submit(ReserveEntry(chain, token, None, fees[chain], now,
                                                                          source="recovery-bench"))
                                     for chain, token in picks))
    denied = [r.reason for r in results if not r.accepted]
    if denied:
        raise SystemExit(f"{len(denied)} entries denied, e.g.: {denied[0]}")
    return len(results)


async def open_positions(engine, market: dict, target: int) -> None:
    started = time.perf_counter()
    rounds = 0
    while len(engine.book.positions.base) < target:
        rounds += 1
        want = min(ROUND, target - len(engine.book.positions.base))
        await reserve(engine, free_tokens(engine, market, want))
        await advance_orders(engine, ("new",))
        blocks = 0
        while any(o.state in ("signed", "submitted", "unknown", "new") for o in engine.book.orders.base.values()):
            await mine(engine)
            await advance_orders(engine)
            blocks += 1
            if blocks > 50:
                raise SystemExit("orders did not settle in 50 blocks")
        say(f"  round {rounds}: {len(engine.book.positions.base):,}/{target:,} open positions "
            f"({blocks} blocks, {time.perf_counter() - started:.1f}s)")


async def make_unknown(engine, market: dict, count: int) -> Counter:
    expiry = engine.settings.paper.expiry_blocks
    for executor in engine.executors.values():
        executor.faults = Faults(0, 10_000, expiry)  # every broadcast lost
    await reserve(engine, free_tokens(engine, market, count))
    await advance_orders(engine, ("new",))
    lost = Counter()
    for executor in engine.executors.values():
        executor.faults = Faults(0, 0, expiry)
    for order in engine.book.live_orders():
        if order.state == "unknown":
            seen = await engine.world.link.call(engine.world.venue.lookup, order.tx_id)
            lost["lost response (venue has it)" if seen else "lost request (venue never saw it)"] += 1
    # the engine is down; the chain goes on: lost responses land (EVM ones only behind their nonce gap)
    for _ in range(LAND_BLOCKS):
        await engine.world.link.call(engine.world.venue.advance)
    return lost


async def pad_through_sequencer(engine, target: int) -> int:
    """MarkPrices of a few held tokens from PRODUCERS concurrent producers, until seq == target."""
    need = target - engine.book.meta.get("seq")
    if need <= 0:
        return 0
    held = sorted((p.chain, p.token, p.entry_price) for p in engine.book.positions.base.values())
    by_chain: dict[str, list] = {}
    for chain, token, price in held:
        by_chain.setdefault(chain, []).append((token, price))
    chains = sorted(by_chain)
    remaining = [need]
    done = [0]
    now = engine.now()
    submit = engine.sequencer.submit
    started = time.perf_counter()

    async def producer(pid: int) -> None:
        draw = random.Random(pid)
        while remaining[0] > 0:
            remaining[0] -= 1
            chain = chains[draw.randrange(len(chains))]
            tokens = by_chain[chain]
            start = draw.randrange(len(tokens))
            picks = [tokens[(start + k * 97) % len(tokens)] for k in range(MARK_TOKENS)]
            prices = tuple(sorted({tok: (price * (10_000 + draw.randint(-40, 40)) / 10_000).quantize(
                Decimal("1e-12")).normalize() for tok, price in picks}.items()))
            result = await submit(MarkPrices(chain, prices, now))
            if not result.accepted:
                raise SystemExit(f"MarkPrices refused: {result.reason}")
            done[0] += 1
            if done[0] % 200_000 == 0:
                say(f"  padding: {done[0]:,}/{need:,} ({time.perf_counter() - started:.1f}s)")

    await asyncio.gather(*(producer(p) for p in range(PRODUCERS)))
    return need


def pad_direct(db: Path, target: int) -> int:
    """Append encoded PricesMarked events (contiguous seq) and keep marks and meta 'seq' consistent."""
    from engine.persist import JOURNAL_SQL, UPSERT, encode_event
    from storage import connect

    conn = connect(db, "NORMAL")
    try:
        seq = int(conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
        last = conn.execute("SELECT max(seq) FROM journal").fetchone()[0]
        assert last == seq, (last, seq)
        at = conn.execute("SELECT max(at) FROM journal").fetchone()[0]
        held: dict[str, list] = {}
        for chain, token, price in conn.execute("SELECT chain, token, entry_price FROM positions "
                                                "WHERE state != 'closed' ORDER BY chain, token"):
            held.setdefault(chain, []).append((token, Decimal(price)))
        chains = sorted(held)
        need = target - seq
        draw = random.Random(7)
        marks = {}
        chunk = 50_000
        done = 0
        while done < need:
            rows = []
            for _ in range(min(chunk, need - done)):
                seq += 1
                chain = chains[draw.randrange(len(chains))]
                tokens = held[chain]
                start = draw.randrange(len(tokens))
                picks = [tokens[(start + k * 97) % len(tokens)] for k in range(MARK_TOKENS)]
                prices = tuple(sorted({tok: (price * (10_000 + draw.randint(-40, 40)) / 10_000).quantize(
                    Decimal("1e-12")).normalize() for tok, price in picks}.items()))
                event = PricesMarked(chain, prices, at)
                kind, data = encode_event(event)
                rows.append((seq, at, kind, data))
                for token, price in prices:
                    marks[(chain, token)] = (str(price), at)
            done += len(rows)
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(JOURNAL_SQL, rows)
            if done == need:
                conn.executemany(UPSERT["marks"], [(c, t, p, a) for (c, t), (p, a) in marks.items()])
            conn.execute(UPSERT["meta"], ("seq", str(seq)))
            conn.execute("COMMIT")
        return need
    finally:
        conn.close()


async def build_state(home: Path, sizes: dict, pad: str) -> dict:
    market = make_market(sizes["tokens"])
    settings = make_settings(home)
    info: dict = {}
    engine = await kernel.build(settings, market=market, stages=UNBOUNDED)
    try:
        speed_up_venue_reads(engine)
        t = time.perf_counter()
        say(f"opening {sizes['positions']:,} positions on {sizes['tokens']:,} tokens per chain ...")
        await open_positions(engine, market, sizes["positions"])
        info["positions_s"] = time.perf_counter() - t
        t = time.perf_counter()
        say(f"creating {sizes['unknown']:,} orders of unknown outcome ...")
        info["lost"] = await make_unknown(engine, market, sizes["unknown"])
        info["unknown_s"] = time.perf_counter() - t
        info["seq_traded"] = engine.book.meta.get("seq")
        if pad == "sequencer":
            t = time.perf_counter()
            say(f"padding the journal from {info['seq_traded']:,} to {sizes['events']:,} events "
                f"through the sequencer ({PRODUCERS} producers) ...")
            info["padded"] = await pad_through_sequencer(engine, sizes["events"])
            info["pad_s"] = time.perf_counter() - t
        book = engine.book
        info["open_positions"] = len(book.positions.base)
        info["orders"] = Counter(o.state for o in book.orders.base.values())
    finally:
        await engine.close()
    if pad == "direct":
        t = time.perf_counter()
        say(f"padding the journal from {info['seq_traded']:,} to {sizes['events']:,} events "
            "(encode_event + JOURNAL_SQL, sqlite3) ...")
        info["padded"] = pad_direct(home / kernel.DB_NAME, sizes["events"])
        info["pad_s"] = time.perf_counter() - t
    return info


# --------------------------------------------------------------------------- the restart (child process)


def restart_child(home: Path, tokens: int, profile: bool) -> None:
    """Runs in a fresh interpreter: time to `build()` returned, printed as one JSON line."""
    phases: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                phases[name] = time.perf_counter() - t
        return wrapper

    def timed_async(name, fn):
        async def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                phases[name] = time.perf_counter() - t
        return wrapper

    kernel.load_book = timed("load_book", kernel.load_book)
    kernel.Engine.reconcile = timed_async("reconcile", kernel.Engine.reconcile)
    kernel.Engine.fund = timed_async("fund", kernel.Engine.fund)
    kernel.Writer.open = timed_async("writer_open", kernel.Writer.open)
    VenueLink.open = timed_async("venue_open", VenueLink.open)

    t = time.perf_counter()
    settings = make_settings(home)
    phases["settings"] = time.perf_counter() - t
    t = time.perf_counter()
    market = make_market(tokens)
    phases["market"] = time.perf_counter() - t

    async def go():
        t = time.perf_counter()
        engine = await kernel.build(settings, market=market, stages=UNBOUNDED)
        phases["build"] = time.perf_counter() - t
        ready = time.time()
        rec = engine.last_reconciliation
        book = engine.book
        out = {
            "t0": _T0, "imported": _T_IMPORTED, "ready": ready, "phases": phases,
            "resolved": len(rec.resolved),
            "before": dict(Counter(state for _id, _intent, state, _what in rec.resolved)),
            "outcomes": dict(Counter(_outcome_class(what) for *_rest, what in rec.resolved)),
            "differences": [list(d) for d in rec.differences],
            "open_positions": len(book.positions.base),
            "after": dict(Counter(o.state for o in book.orders.base.values())),
            "seq": book.meta.get("seq"),
            "entries_allowed": book.trading_state.value == "active" and not book.meta.get("review"),
        }
        await engine.close()
        return out

    if profile:
        import cProfile
        import io
        import pstats
        import threading

        # load_book and every commit run on the writer's thread, the venue on its own:
        # give each of those threads a profiler too, and merge them with the loop's.
        profilers: list = []
        local = threading.local()

        def in_profiler(fn):
            def call(*args):
                prof = getattr(local, "prof", None)
                if prof is None:
                    prof = local.prof = cProfile.Profile()
                    profilers.append(prof)
                prof.enable()
                try:
                    return fn(*args)
                finally:
                    prof.disable()
            return call

        writer_run, venue_call = kernel.Writer.run, VenueLink.call

        async def run(self, fn, *args):
            return await writer_run(self, in_profiler(fn), *args)

        async def call(self, fn, *args):
            return await venue_call(self, in_profiler(fn), *args)

        kernel.Writer.run, VenueLink.call = run, call
        prof = cProfile.Profile()
        out = prof.runcall(asyncio.run, go())
        stream = io.StringIO()
        stats = pstats.Stats(prof, stream=stream)
        for other in profilers:
            stats.add(other)
        stats.strip_dirs()
        stream.write("all threads merged (loop + writer + venue); cumulative times overlap across threads\n")
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        out["profile"] = stream.getvalue()
    else:
        out = asyncio.run(go())
    print("RESULT " + json.dumps(out), flush=True)


def _outcome_class(what: str) -> str:
    if what.startswith("rebroadcast, sent"):
        return "re-sent (lost request; venue has it now)"
    if what == "filled":
        return "filled (settled)"
    if what.startswith("failed"):
        return "failed/expired (settled)"
    if what == "pending":
        return "pending at the venue (EVM: behind a nonce re-sent just before)"
    return what


def drop_page_cache(home: Path) -> bool:
    """Best effort, no privileges needed: flush and evict the home's files from the page cache."""
    ok = hasattr(os, "posix_fadvise")
    for path in sorted(home.iterdir()):
        if not path.is_file():
            continue
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            if ok:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return ok


def restart(home: Path, tokens: int, profile: bool = False) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--restart", str(home), "--tokens", str(tokens)]
    if profile:
        cmd.append("--profile")
    spawned = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=os.getcwd())
    if proc.returncode != 0 or "RESULT " not in proc.stdout:
        raise SystemExit(f"restart failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    out["spawned"] = spawned
    out["total"] = out["ready"] - spawned
    if proc.stderr.strip():
        out["stderr"] = proc.stderr.strip().splitlines()[-5:]
    return out


# --------------------------------------------------------------------------- report


def audit_db(db: Path, market: dict) -> tuple[list[str], float]:
    from engine.audit import audit

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        t = time.perf_counter()
        problems = audit(lambda sql: conn.execute(sql).fetchall(), kernel.policy_for(make_settings(db.parent), market, UNBOUNDED))
        return problems, time.perf_counter() - t
    finally:
        conn.close()


def show_restart(label: str, r: dict) -> None:
    p = r["phases"]
    say(f"  {label}: ready in {r['total']:.3f} s  [interpreter start {r['t0'] - r['spawned']:.3f}, "
        f"imports {r['imported'] - r['t0']:.3f}, settings {p.get('settings', 0):.3f}, "
        f"market {p.get('market', 0):.3f}, build() {p.get('build', 0):.3f}]")
    other = p.get("build", 0) - sum(p.get(k, 0) for k in ("writer_open", "load_book", "venue_open", "fund",
                                                          "reconcile"))
    say(f"    inside build(): load_book {p.get('load_book', 0):.3f} s, reconcile {p.get('reconcile', 0):.3f} s, "
        f"writer open+migrate {p.get('writer_open', 0):.3f}, venue open {p.get('venue_open', 0):.3f}, "
        f"fund {p.get('fund', 0):.3f}, rest {other:.3f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10x fewer of everything (CI smoke test)")
    parser.add_argument("--pad", choices=("sequencer", "direct"), default="sequencer")
    parser.add_argument("--profile", action="store_true", help="also restart under cProfile, even on PASS")
    parser.add_argument("--keep", action="store_true", help="keep the temporary BOTCTL_HOME")
    parser.add_argument("--restart", metavar="HOME", help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.restart:
        restart_child(Path(args.restart), args.tokens, args.profile)
        return 0

    sizes = QUICK if args.quick else FULL
    root = Path(tempfile.mkdtemp(prefix="botctl-recovery-"))
    home = root / "home"
    started = time.perf_counter()
    say(f"recovery benchmark{' (quick)' if args.quick else ''}: {sizes['events']:,} events, "
        f"{sizes['positions']:,} open positions, {sizes['unknown']:,} unknown orders; "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpu, home {home}")
    try:
        info = asyncio.run(build_state(home, sizes, args.pad))
        db = home / kernel.DB_NAME
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            events = conn.execute("SELECT count(*), max(seq) FROM journal").fetchone()
            meta_seq = int(conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
        sizes_mb = sum(f.stat().st_size for f in home.iterdir() if f.is_file()) / 1e6
        orders = info["orders"]
        say(f"state built in {time.perf_counter() - started:.1f} s: journal {events[0]:,} events "
            f"(max seq {events[1]:,}, meta seq {meta_seq:,}; {info['seq_traded']:,} from trading, "
            f"{info['padded']:,} PricesMarked padding via {args.pad}), {info['open_positions']:,} open positions, "
            f"orders in flight {dict(sorted((k, v) for k, v in orders.items()))}, files {sizes_mb:.0f} MB")
        say(f"  unknown orders: {dict(info['lost'])}; {LAND_BLOCKS} blocks mined while down")
        say(f"  timings: positions {info['positions_s']:.1f} s, unknown {info['unknown_s']:.1f} s, "
            f"padding {info['pad_s']:.1f} s")

        warm_home, profile_home = root / "home-warm", root / "home-profile"
        shutil.copytree(home, warm_home)  # the restart changes the book: each restart gets its own copy
        shutil.copytree(home, profile_home)

        say("restarting in a fresh process ...")
        dropped = drop_page_cache(home)
        cold = restart(home, sizes["tokens"])
        warm = restart(warm_home, sizes["tokens"])
        show_restart("cold" + ("" if dropped else " (page cache NOT dropped)"), cold)
        show_restart("warm", warm)
        unknown_before = orders.get("unknown", 0)
        say(f"  reconcile: {cold['resolved']:,} orders looked up ({cold['before']}); "
            f"of the {unknown_before:,} unknown: {cold['outcomes']}")
        say(f"  after restart: {cold['open_positions']:,} open positions, orders in flight {cold['after']}, "
            f"differences {cold['differences'] or 'none'}, entries allowed: {cold['entries_allowed']}")
        if "stderr" in cold:
            say("  child stderr (last lines): " + " | ".join(cold["stderr"]))
        verdict = "PASS" if cold["total"] < TARGET_S else "MISS"
        say(f"RESULT {verdict}: restart to ready {cold['total']:.3f} s cold, {warm['total']:.3f} s warm "
            f"(target < {TARGET_S:.1f} s; {events[0]:,} events, {info['open_positions']:,} positions, "
            f"{unknown_before:,} unknown orders)")

        if verdict == "MISS" or args.profile:
            say("profiling a restart (cProfile, on an untouched copy) ...")
            prof = restart(profile_home, sizes["tokens"], profile=True)
            say(f"  under the profiler: ready in {prof['total']:.3f} s")
            say(prof["profile"])

        say("auditing the database (replays the whole journal) ...")
        problems, audit_s = audit_db(db, make_market(sizes["tokens"]))
        say(f"audit: {'clean' if not problems else f'{len(problems)} problem(s)'} in {audit_s:.1f} s "
            "(information only)")
        for line in problems[:10]:
            say("  " + line)
        say(f"total benchmark time {time.perf_counter() - started:.1f} s")
    finally:
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
