"""The fix list's concurrency cases, as behaviour, through the real Sequencer on a real SQLite file.

Commands are submitted concurrently (asyncio.gather), so they queue together and the
sequencer decides them in one or a few batches, as it would under load. After each
case: the audit is clean and the in-memory book equals a fresh load from the database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading

from engine.core.messages import EntryReserved, OrderFilled, PositionOpened

from builders import broadcast, close, failure, fill, policy, quote, reserve, sign, unknown, usd

TOKEN = 10**18


def count(h, sql: str) -> int:
    query_rows = h.writer.run_sync(h.writer.query, sql)
    return query_rows[0][0]


async def test_ten_concurrent_entries_spend_exactly_all_the_cash(make_engine):
    h = await make_engine(policy(), cash={"base": usd(1000)})

    results = await h.submit_all(reserve("base", f"T{i}", usd(100)) for i in range(10))

    assert [r.reason for r in results] == [None] * 10
    reserved = [r.first(EntryReserved) for r in results]
    assert sorted(e.nonce for e in reserved) == list(range(10))  # ten distinct, gap-free nonces
    assert quote(h.book, "base") == 0 and quote(h.book, "base", "reserved") == usd(1000)

    await h.submit_all(sign(e.order_id) for e in reserved)
    await h.submit_all(broadcast(e.order_id) for e in reserved)
    fills = await h.submit_all(fill(e.order_id, e.amount, TOKEN) for e in reserved)
    assert all(r.first(OrderFilled) for r in fills)

    assert quote(h.book, "base") == 0
    assert quote(h.book, "base", "reserved") == 0
    assert quote(h.book, "base", "positions") == usd(1000)
    assert len(h.book.open_positions()) == 10

    eleventh = await h.submit(reserve("base", "T10", usd(100)))
    assert not eleventh.accepted
    assert quote(h.book, "base") == 0
    assert count(h, "SELECT count(*) FROM positions WHERE state = 'open'") == 10
    await h.assert_consistent()


async def test_two_concurrent_60_dollar_entries_with_100_dollars_cash(make_engine):
    h = await make_engine(policy(), cash={"base": usd(100)})

    first, second = await h.submit_all([reserve("base", "T1", usd(60)), reserve("base", "T2", usd(60))])

    assert [first.accepted, second.accepted].count(True) == 1
    loser = second if first.accepted else first
    assert "insufficient cash on base" in loser.reason
    assert quote(h.book, "base") == usd(40) and quote(h.book, "base", "reserved") == usd(60)
    assert count(h, "SELECT count(*) FROM reservations WHERE state = 'held'") == 1
    await h.assert_consistent()


async def test_twenty_concurrent_entries_on_one_token_make_one_position(make_engine):
    h = await make_engine(policy(), cash={"base": usd(1000)})

    results = await h.submit_all(reserve("base", "PEPE", usd(10), signal=f"sig-{i}") for i in range(20))

    accepted = [r for r in results if r.accepted]
    assert len(accepted) == 1
    assert all("base/PEPE already has a held reservation" in r.reason for r in results if not r.accepted)
    assert quote(h.book, "base") == usd(990)
    assert count(h, "SELECT count(*) FROM reservations WHERE token = 'PEPE'") == 1

    order_id = accepted[0].first(EntryReserved).order_id
    await h.ok(sign(order_id))
    await h.ok(fill(order_id, usd(10), TOKEN))

    again = await h.submit_all(reserve("base", "PEPE", usd(10)) for _ in range(20))
    assert all("already has an open position" in r.reason for r in again)
    assert len([p for p in h.book.open_positions() if p.token == "PEPE"]) == 1
    assert count(h, "SELECT count(*) FROM positions WHERE token = 'PEPE'") == 1
    assert quote(h.book, "base") == usd(990) and quote(h.book, "base", "positions") == usd(10)
    await h.assert_consistent()


class CommitGate:
    """Holds a COMMIT open until the test lets it go: the writer's `before_commit` runs on its thread
    after the statements, before COMMIT. It holds the first transaction that writes an entry
    reservation (so a deposit still committing is never the one held); others pass through."""

    HOLDS = "SELECT count(*) FROM journal WHERE kind = 'EntryReserved'"  # sees the open transaction

    def __init__(self):
        self.entered = threading.Event()
        self.released = threading.Event()

    def __call__(self, conn) -> None:
        if self.released.is_set() or not conn.execute(self.HOLDS).fetchone()[0]:
            return
        self.entered.set()
        assert self.released.wait(30), "the test never let the commit go"

    async def wait_entered(self) -> None:
        for _ in range(1000):
            if self.entered.is_set():
                return
            await asyncio.sleep(0.005)
        raise AssertionError("no commit started")


def committed(h, sql: str) -> int:
    """Read through a connection of our own, read-only: only what was COMMITTED is seen."""
    conn = sqlite3.connect(f"file:{h.path}?mode=ro", uri=True, isolation_level=None)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


async def test_results_are_released_only_after_commit(make_engine):
    """While the batch's COMMIT is held open, nobody has an answer; once it is let go, whoever has
    an accepted result finds it in the database, read from another connection."""
    h = await make_engine(policy(), cash={"base": usd(1000)})
    gate = CommitGate()
    h.writer.before_commit = gate
    pending = [asyncio.ensure_future(h.submit(reserve("base", f"T{i}", usd(10)))) for i in range(5)]
    try:
        await gate.wait_entered()
        await asyncio.sleep(0.05)  # room for an early answer to reach its caller
        assert [f.done() for f in pending] == [False] * 5, "answered before COMMIT"
        assert committed(h, "SELECT count(*) FROM reservations") == 0
    finally:
        gate.released.set()
    results = await asyncio.gather(*pending)
    for r in results:
        rid = r.first(EntryReserved).reservation_id
        assert committed(h, f"SELECT count(*) FROM reservations WHERE id = {rid} AND state = 'held'") == 1


async def test_subscribers_see_only_committed_events_in_order(make_engine):
    h = await make_engine(policy(), cash={"base": usd(1000)})
    seen = []

    def subscriber(events):
        """Each event a subscriber hears of is already in the journal, read from another connection."""
        for event in events:
            seen.append((event, committed(h, "SELECT count(*) FROM journal WHERE kind = 'EntryReserved'")))

    h.seq.subscribe(subscriber)
    gate = CommitGate()
    h.writer.before_commit = gate
    pending = [asyncio.ensure_future(h.submit(reserve("base", f"T{i}", usd(10)))) for i in range(5)]
    try:
        await gate.wait_entered()
        await asyncio.sleep(0.05)
        assert seen == [], "published before COMMIT"
    finally:
        gate.released.set()
    results = await asyncio.gather(*pending)
    assert [event for event, _ in seen] == [r.events[0] for r in results]
    assert all(in_journal >= i + 1 for i, (_, in_journal) in enumerate(seen)), seen


# --------------------------------------------------------------------------- the same report twice, at once
#
# An executor and the reconciler can both see the same receipt and report it at the same
# moment: the two commands then queue together. The second must be recognised, never
# applied twice, whether or not it shares a batch with the first.


async def _signed_entry(h, token="T1", amount=usd(50)):
    reserved = (await h.ok(reserve("base", token, amount))).first(EntryReserved)
    await h.ok(sign(reserved.order_id))
    await h.ok(broadcast(reserved.order_id))
    return reserved


async def test_the_same_fill_reported_twice_at_once_is_applied_once(make_engine):
    h = await make_engine(policy(), cash={"base": usd(1000)})
    reserved = await _signed_entry(h)

    results = await h.submit_all([fill(reserved.order_id, usd(50), TOKEN)] * 2)

    assert sum(1 for r in results if r.first(PositionOpened)) == 1
    assert quote(h.book, "base") == usd(950)
    assert quote(h.book, "base", "reserved") == 0
    assert quote(h.book, "base", "positions") == usd(50)
    assert len(h.book.open_positions()) == 1
    await h.assert_consistent()


async def test_the_same_failure_reported_twice_at_once_releases_once(make_engine):
    h = await make_engine(policy(), cash={"base": usd(1000)})
    reserved = await _signed_entry(h)

    await h.submit_all([failure(reserved.order_id, "reverted", network_fee=100)] * 2)

    assert quote(h.book, "base") == usd(1000)  # not 1050
    assert quote(h.book, "base", "reserved") == 0
    assert h.book.meta.get("open_slots") == 0
    await h.assert_consistent()


async def test_a_late_unknown_does_not_resurrect_a_filled_order(make_engine):
    h = await make_engine(policy(), cash={"base": usd(1000)})
    reserved = await _signed_entry(h)

    await h.submit_all([fill(reserved.order_id, usd(50), TOKEN), unknown(reserved.order_id)])

    assert h.book.orders.get(reserved.order_id) is None  # filled: no longer in flight
    assert quote(h.book, "base", "positions") == usd(50)
    await h.assert_consistent()


async def test_a_close_racing_the_exit_fill_is_denied(make_engine):
    """The position monitor asks to close while the exit's fill is being recorded."""
    h = await make_engine(policy(), cash={"base": usd(1000)})
    position_id, _ = await h.open_position("base", "T1", usd(50), TOKEN)
    exit_order = (await h.ok(close(position_id, by="operator"))).events[0].order_id
    await h.ok(sign(exit_order))

    filled, again = await h.submit_all([fill(exit_order, TOKEN, usd(60)), close(position_id, reason="stop-loss")])

    assert filled.accepted
    assert not again.accepted and "already closed" in again.reason
    assert h.book.open_positions() == []
    assert quote(h.book, "base") == usd(1010)
    await h.assert_consistent()


async def test_many_mixed_commands_at_once_stay_consistent(make_engine):
    from engine.stages import unbounded

    h = await make_engine(policy(max_open_positions=30, stages=unbounded()), cash={"base": usd(1000), "solana": usd(500)})
    positions = [await h.open_position("base", f"B{i}", usd(20), TOKEN) for i in range(3)]
    cmds = [reserve("base", f"N{i}", usd(30)) for i in range(5)]
    cmds += [reserve("solana", f"S{i}", None) for i in range(12)]
    cmds += [close(pid, by="operator") for pid, _ in positions]
    cmds += [close(positions[0][0], by="operator")]
    results = await asyncio.gather(*(h.submit(c) for c in cmds))
    assert sum(r.accepted for r in results[:5]) == 5
    assert sum(r.accepted for r in results[5:17]) == 10  # solana: $500 of cash, $50 default size
    assert [r.accepted for r in results[17:]] == [True, True, True, False]
    assert quote(h.book, "solana") == 0
    assert quote(h.book, "base") == usd(1000 - 60 - 150)
    await h.assert_consistent()
