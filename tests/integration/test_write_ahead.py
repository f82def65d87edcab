"""Write-ahead, watched from outside: no byte leaves for the venue before the book has committed it.

A witness stands between the order driver and each paper executor. On every `broadcast` it
reads the order's row through a connection of its own (read-only, so it sees only what was
COMMITTED, never the writer's open transaction) and records any order whose tx id and signed
bytes are not already there, exactly as they are about to be sent. A real paper engine trades
with faults switched on, so entries, exits, no-ops (fillers of refused EVM nonces) and
rebroadcasts all go through it; the run must see each kind and no violation.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from decimal import Decimal

from engine.driver import OrderDriver
from engine.kernel import build
from engine.settings import load_settings
from engine.venues.port import Accepted, Outcome, Quote, Signed

from builders import FEE, NOW, policy, reserve, sign, usd
from paperkit import audited, conservation, settle


class Witness:
    """An executor that checks the write-ahead rule, then does what the real one does."""

    def __init__(self, executor, db):
        self._executor = executor
        self.chain = executor.chain
        self._db = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
        self.sent: Counter = Counter()
        self.violations: list[str] = []

    def __getattr__(self, name):  # fee_reserve, quote, sign, sign_noop, lookup: unchanged
        return getattr(self._executor, name)

    async def broadcast(self, order):
        row = self._db.execute("SELECT tx_id, raw, state FROM orders WHERE id = ?", (order.id,)).fetchone()
        committed = row is not None and row[0] == order.tx_id and row[1] == order.raw \
            and row[2] in ("signed", "submitted", "unknown")
        if not committed or order.raw is None:
            self.violations.append(f"{order.intent} order {order.id} ({order.tx_id}) broadcast while the "
                                   f"database holds {row!r}")
        self.sent[order.intent] += 1
        if order.state != "signed":
            self.sent["again"] += 1  # a rebroadcast of the same bytes
        return await self._executor.broadcast(order)

    def close(self):
        self._db.close()


async def test_every_broadcast_finds_its_bytes_already_committed(tmp_path):
    settings = load_settings(home=tmp_path / "home", max_hold_s=20, cooldown_s=5, max_consecutive_losses=0, paper={
        "speed": 0, "seed": 4, "opportunity_rate_bps": 6000,
        "fail_rate_bps": 2000,  # refused broadcasts: refilled EVM nonces (no-ops) and retried exits
        "unknown_rate_bps": 1500,  # lost requests and responses: the same bytes are sent again
    })
    engine = await build(settings)
    db = settings.home / "botctl.db"
    witnesses = [Witness(executor, db) for executor in engine.executors.values()]
    for witness in witnesses:
        engine.executors[witness.chain] = witness  # the driver's mapping is this same dict
    try:
        await engine.run(150)
        await settle(engine)
        assert conservation(engine) == []
    finally:
        await engine.close()
        for witness in witnesses:
            witness.close()
    sent = sum((w.sent for w in witnesses), Counter())
    violations = [v for w in witnesses for v in w.violations]
    assert violations == [], violations[:5]
    assert sent["entry"] >= 20 and sent["exit"] >= 10 and sent["noop"] >= 1 and sent["again"] >= 1, sent
    assert audited(settings) == []


class Venue:
    """An executor that records what the driver asks of it."""

    chain = "base"

    def __init__(self):
        self.calls: list[tuple] = []

    async def fee_reserve(self) -> int:
        return FEE

    async def quote(self, order) -> Quote:
        self.calls.append(("quote", order.id))
        return Quote(order.amount_in, 10**18, Decimal(1))

    async def sign(self, order, quote, slippage_bps) -> Signed:
        self.calls.append(("sign", order.id))
        return Signed(f"0xresigned{order.id}", b"other bytes", None, 1)

    async def sign_noop(self, order) -> Signed:
        self.calls.append(("sign_noop", order.id))
        return Signed(f"0xnoop{order.id}", b"noop bytes", None, 0)

    async def broadcast(self, order):
        self.calls.append(("broadcast", order.id, order.tx_id, order.raw))
        return Accepted(order.tx_id)

    async def lookup(self, order) -> Outcome:
        return Outcome("pending")


async def test_bytes_stored_before_a_restart_are_sent_again_never_signed_again(make_engine):
    """Killed between the commit of the signed bytes and their broadcast: the restarted driver
    sends exactly those bytes. Signing the intent again would make a second transaction that can
    land beside the first (on a real chain a new blockhash or quote gives new bytes)."""
    h = await make_engine(policy(), cash={"base": usd(1000)})
    order_id = (await h.ok(reserve("base", "T1", usd(50)))).events[0].order_id
    await h.ok(sign(order_id, tx="0xstored", raw=b"stored bytes"))
    h = await h.restart()  # the book as the database holds it
    try:
        venue = Venue()
        driver = OrderDriver(h.seq, {"base": venue}, 50, clock=lambda: NOW)
        assert await driver.advance(h.book.orders.get(order_id)) == "sent"
        assert venue.calls == [("broadcast", order_id, "0xstored", b"stored bytes")]
        assert h.book.orders.get(order_id).state == "submitted"
        await h.assert_consistent()
    finally:
        await h.close()
