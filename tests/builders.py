"""Shared builders for the core's tests (in the spirit of nautilus_trader's test_kit).

Pure helpers build a policy, commands and books (`given` / `when`); `start_engine`
runs the real Sequencer on a real SQLite file and gives back a small `Harness`
with the read-backs tests need: a fresh load of the book, the audit, and full
table dumps.
"""

from __future__ import annotations

import itertools
import sqlite3
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable

from engine import audit as audit_mod
from engine.core.book import Book, ChainPolicy, Limits, Policy
from engine.core.decider import apply, decide
from engine.core.messages import (
    AbandonOrder,
    Deposit,
    MarkBroadcast,
    MarkPrices,
    RaiseNonceFloor,
    RecordFailure,
    RecordFill,
    RecordSubmission,
    RecordUnknown,
    RequestClose,
    ReserveEntry,
    Result,
    SetTradingState,
    TradingState,
    denial,
)
from engine.persist import load_book, table_images
from engine.sequencer import Sequencer
from engine.stages import stages as shipped_stages
from storage import Writer

# --------------------------------------------------------------------------- policy and money

NOW = 1_700_000_000_000  # epoch ms; commands carry their time
SOLANA_ADDRESS = "SoLaddr"
BASE_ADDRESS = "0xabc"
FEE = 1_000  # default native fee reserve of an entry or exit
NATIVE = 10**18  # default native deposit per chain


def usd(x: int | str | Decimal) -> int:
    """Whole quote units (USDC) -> quote base units (6 decimals)."""
    units = Decimal(str(x)) * 10**6
    assert units == units.to_integral_value(), f"{x} has more than 6 decimals"
    return int(units)


def policy(tokens: dict[str, dict[str, int]] | None = None, approvals: bool = False, quote_native: bool = False,
           **limits: Any) -> Policy:
    """Two chains (solana, base) and the default Limits, overridable by keyword.

    The book's stage (paper) bounds these too; `stages=unbounded()` (engine.stages) lifts that
    for a test whose scenario is beyond the paper stage (e.g. 30 open positions).

    `tokens={"base": {"T1": 18}}` puts an allow-list on a chain. `approvals` makes base a live EVM
    router chain (an approve before each ERC20 spend), `quote_native` its quote the chain's coin.
    """
    tokens = tokens or {}
    chains = {
        "solana": ChainPolicy("solana", "solana", SOLANA_ADDRESS, 6, 9, dict(tokens.get("solana", {}))),
        "base": ChainPolicy("base", "evm", BASE_ADDRESS, 6, 18, dict(tokens.get("base", {})),
                            quote_native=quote_native, approvals=approvals),
    }
    for key in ("max_position", "default_position", "min_position", "max_exposure"):
        if key in limits:
            limits[key] = Decimal(str(limits[key]))
    stages = limits.pop("stages", None)
    return Policy(chains=chains, limits=Limits(**limits), stages=stages or shipped_stages())


ADDRESS = {"solana": SOLANA_ADDRESS, "base": BASE_ADDRESS}

# --------------------------------------------------------------------------- commands

_refs = itertools.count(1)


def deposit(chain: str, amount: int, asset: str = "quote", ref: str | None = None, at: int = NOW) -> Deposit:
    return Deposit(chain, asset, amount, ref or f"dep-{next(_refs)}", at)


def deposit_native(chain: str, amount: int = NATIVE, ref: str | None = None, at: int = NOW) -> Deposit:
    return deposit(chain, amount, "native", ref, at)


def reserve(chain: str = "base", token: str = "T1", amount: int | None = usd(50), fee: int = FEE,
            at: int = NOW, signal: str | None = None, source: str = "engine") -> ReserveEntry:
    return ReserveEntry(chain, token, amount, fee, at, signal, source)


def sign(order_id: int, tx: str | None = None, raw: bytes | None = None, expiry: int | None = None,
         quoted_out: int = 10**18, min_out: int = 99 * 10**16, at: int = NOW) -> RecordSubmission:
    tx = tx or f"0xtx{order_id}"
    return RecordSubmission(order_id, tx, raw if raw is not None else f"raw-{tx}".encode(), expiry,
                            quoted_out, min_out, at)


def broadcast(order_id: int, at: int = NOW) -> MarkBroadcast:
    return MarkBroadcast(order_id, at)


def fill(order_id: int, amount_in: int, amount_out: int, fee: int = 0, network_fee: int = 0,
         at: int = NOW) -> RecordFill:
    return RecordFill(order_id, amount_in, amount_out, fee, network_fee, at)


def failure(order_id: int, reason: str = "reverted", network_fee: int = 0, at: int = NOW) -> RecordFailure:
    return RecordFailure(order_id, reason, network_fee, at)


def unknown(order_id: int, reason: str = "rpc timeout after broadcast", at: int = NOW) -> RecordUnknown:
    return RecordUnknown(order_id, reason, at)


def abandon(order_id: int, reason: str = "quote expired before signing", at: int = NOW) -> AbandonOrder:
    return AbandonOrder(order_id, reason, at)


def close(position_id: int, by: str = "engine", fee: int = FEE, reason: str = "take-profit",
          at: int = NOW) -> RequestClose:
    return RequestClose(position_id, reason, fee, at, by)


def marks(chain: str, prices: dict[str, Decimal | str], at: int = NOW) -> MarkPrices:
    return MarkPrices(chain, tuple((t, Decimal(str(p))) for t, p in prices.items()), at)


def set_state(state: TradingState, by: str = "operator", at: int = NOW, force: bool = False) -> SetTradingState:
    return SetTradingState(state, f"operator {state.value}", at, by, force)


def pause(at: int = NOW) -> SetTradingState:
    return set_state(TradingState.REDUCING, at=at)


def halt(at: int = NOW) -> SetTradingState:
    return set_state(TradingState.HALTED, at=at)


def resume(at: int = NOW, force: bool = False) -> SetTradingState:
    """Back to ACTIVE; leaving a halt needs `force`."""
    return set_state(TradingState.ACTIVE, at=at, force=force)


def raise_floor(floor: int, chain: str = "base", address: str = BASE_ADDRESS, at: int = NOW) -> RaiseNonceFloor:
    return RaiseNonceFloor(chain, address, floor, at)


def funded(chain: str = "base", quote: int = usd(1000), native: int = NATIVE) -> list:
    """Commands that fund a chain with quote and native cash."""
    return [deposit(chain, quote), deposit_native(chain, native)]


def round_trip_entry(order_id: int, chain: str = "base", token: str = "T1", amount: int = usd(50),
                     out: int = 10**18, at: int = NOW) -> list:
    """Commands that open a position through a full entry (reserve, sign, broadcast, fill)."""
    return [reserve(chain, token, amount, at=at), sign(order_id, at=at), broadcast(order_id, at=at),
            fill(order_id, amount, out, at=at)]


# --------------------------------------------------------------------------- pure books

def is_command(item: Any) -> bool:
    import typing

    from engine.core import messages

    return type(item) in typing.get_args(messages.Command)


def given(*items: Any, pol: Policy | None = None, strict: bool = True) -> Book:
    """A committed book after `items`: events are evolved; commands are decided, then evolved
    (each one a batch of its own, merged as after a COMMIT). With `strict`, a refused command
    in the history fails the test: a "given" that did not happen is a broken test."""
    book = Book(pol or policy())
    for item in items:
        overlay = book.overlay()
        if is_command(item):
            events = decide(overlay, item)
            if strict:
                assert denial(events) is None, f"given {item!r} was refused: {denial(events)}"
        else:
            events = [item]
        apply(overlay, events)
        overlay.merge()
    return book


def when(book: Book, cmd: Any) -> list:
    """Decide `cmd` on `book`; deciding must not change the book."""
    before = book.snapshot()
    events = decide(book, cmd)
    assert book.snapshot() == before, "decide changed the book"
    return events


def then_apply(book: Book, events: Iterable) -> Book:
    overlay = book.overlay()
    apply(overlay, events)
    overlay.merge()
    return book


def quote(book: Book, chain: str, account: str = "cash") -> int:
    return book.balance(chain, "quote", account)


def native(book: Book, chain: str, account: str = "cash") -> int:
    return book.balance(chain, "native", account)


# --------------------------------------------------------------------------- the database

def sqlite_query(path: Path):
    """(query, close) over a plain sqlite3 connection to the database file."""
    conn = sqlite3.connect(str(path))

    def query(sql: str, params: Iterable[Any] = ()) -> list[tuple]:
        return conn.execute(sql, tuple(params)).fetchall()

    return query, conn.close


def audit_db(path: Path, pol: Policy) -> list[str]:
    """engine.audit.audit on the file, through a plain sqlite3 connection."""
    query, done = sqlite_query(path)
    try:
        return audit_mod.audit(query, pol)
    finally:
        done()


def invariants_db(path: Path) -> list[str]:
    """engine.audit.check_invariants on the table images of the file."""
    query, done = sqlite_query(path)
    try:
        return audit_mod.check_invariants(table_images(query))
    finally:
        done()


def dump_tables(path: Path) -> dict[str, list[tuple]]:
    """Every table of the database, every row, in a stable order."""
    query, done = sqlite_query(path)
    try:
        names = [n for (n,) in query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        dump = {}
        for name in names:
            rows = query(f"SELECT * FROM {name}")
            dump[name] = sorted(rows, key=repr)
        dump["user_version"] = query("PRAGMA user_version")
        return dump
    finally:
        done()


# --------------------------------------------------------------------------- the real engine

@dataclass
class Harness:
    path: Path
    policy: Policy
    writer: Writer
    seq: Sequencer
    results: list = field(default_factory=list)

    @property
    def book(self) -> Book:
        return self.seq.book

    async def submit(self, cmd: Any) -> Result:
        result = await self.seq.submit(cmd)
        self.results.append(result)
        return result

    async def ok(self, cmd: Any) -> Result:
        """Submit a command that must be accepted."""
        result = await self.submit(cmd)
        assert result.accepted, f"{cmd!r} was refused: {result.reason}"
        return result

    async def submit_all(self, cmds: Iterable[Any]) -> list[Result]:
        """Submit commands concurrently (they may share one batch)."""
        import asyncio

        return list(await asyncio.gather(*(self.submit(c) for c in cmds)))

    async def open_position(self, chain: str = "base", token: str = "T1", amount: int = usd(50),
                            out: int = 10**18, at: int = NOW) -> tuple[int, int]:
        """Reserve, sign, broadcast and fill an entry: (position_id, order_id)."""
        reserved = (await self.ok(reserve(chain, token, amount, at=at))).events[0]
        await self.ok(sign(reserved.order_id, at=at))
        await self.ok(broadcast(reserved.order_id, at=at))
        filled = (await self.ok(fill(reserved.order_id, amount, out, at=at))).events[0]
        return filled.position_id, reserved.order_id

    # ---- read-backs

    async def load(self) -> Book:
        """A fresh load of the book from the database, on the writer's connection."""
        return await self.writer.run(load_book, self.writer.query, self.policy)

    def load_sync(self) -> Book:
        return self.writer.run_sync(load_book, self.writer.query, self.policy)

    def audit(self) -> list[str]:
        return audit_db(self.path, self.policy)

    def invariants(self) -> list[str]:
        return invariants_db(self.path)

    def dump(self) -> dict[str, list[tuple]]:
        return dump_tables(self.path)

    async def assert_consistent(self) -> None:
        """Audit clean, invariants hold, and memory equals a fresh load from disk."""
        assert self.audit() == []
        assert self.invariants() == []
        assert self.book.snapshot() == (await self.load()).snapshot()

    async def close(self) -> None:
        await self.seq.stop()
        await self.writer.close()

    async def restart(self) -> "Harness":
        """Stop cleanly and start again from what the database holds."""
        await self.close()
        return await start_engine(self.path.parent, self.policy, cash=None, db_name=self.path.name)


async def start_engine(tmp_path: Path, pol: Policy | None = None, cash: dict[str, int] | None = None,
                       native: dict[str, int] | None = None, db_name: str = "botctl.db",
                       synchronous: str = "NORMAL") -> Harness:
    """Open a Writer on tmp_path/botctl.db, load the book from it, start a Sequencer and
    deposit `cash` (quote units per chain) and `native` (default: NATIVE on each funded chain)."""
    pol = pol or policy()
    path = Path(tmp_path) / db_name
    writer = await Writer(path, synchronous=synchronous).open()
    book = await writer.run(load_book, writer.query, pol)
    seq = Sequencer(book, writer).start()
    h = Harness(path, pol, writer, seq)
    cash = cash or {}
    if native is None:
        native = {chain: NATIVE for chain in cash}
    for chain, amount in cash.items():
        if amount:
            await h.ok(deposit(chain, amount))
    for chain, amount in native.items():
        if amount:
            await h.ok(deposit_native(chain, amount))
    return h


engine = start_engine  # the name the brief uses
