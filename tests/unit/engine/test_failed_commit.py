"""A transaction that fails to commit changes nothing: not the book, not one row on disk.

The fault is injected on the writer's thread after every statement ran and before COMMIT
(`Writer.before_commit`), the last instant before the batch would become durable.
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from engine.core.messages import EntryReserved, RecordSubmission

from builders import (
    BASE_ADDRESS,
    broadcast,
    close,
    deposit,
    failure,
    fill,
    halt,
    marks,
    policy,
    quote,
    raise_floor,
    reserve,
    sign,
    unknown,
    usd,
)

TOKEN = 10**18


def disk_error(_conn):
    raise sqlite3.OperationalError("disk I/O error")


async def busy_engine(make_engine):
    """An engine with something of everything: an open position, a closing one, and entries
    in each state (new, signed, submitted, unknown)."""
    h = await make_engine(policy(), cash={"base": usd(1000), "solana": usd(500)})
    p1, _ = await h.open_position("base", "OPEN", usd(100), TOKEN)
    p2, _ = await h.open_position("base", "CLOSING", usd(100), TOKEN)
    exit_order = (await h.ok(close(p2, by="operator"))).events[0].order_id
    await h.ok(sign(exit_order))
    orders = {}
    for state in ("new", "signed", "submitted", "unknown"):
        order_id = (await h.ok(reserve("base", state.upper(), usd(50)))).first(EntryReserved).order_id
        if state != "new":
            await h.ok(sign(order_id))
        if state in ("submitted", "unknown"):
            await h.ok(broadcast(order_id))
        if state == "unknown":
            await h.ok(unknown(order_id))
        orders[state] = order_id
    await h.ok(marks("base", {"OPEN": "1.25"}))
    return h, {"open": p1, "closing": p2, "exit": exit_order, **orders}


COMMANDS = {
    "deposit": lambda ids: [deposit("base", usd(5))],
    "reserve": lambda ids: [reserve("base", "FRESH", usd(50))],
    "sign": lambda ids: [sign(ids["new"])],
    "entry fill": lambda ids: [fill(ids["submitted"], usd(40), TOKEN, network_fee=10)],
    "exit fill": lambda ids: [fill(ids["exit"], TOKEN, usd(130), fee=usd(1))],
    "failure": lambda ids: [failure(ids["unknown"], "reverted", network_fee=10)],
    "close": lambda ids: [close(ids["open"], by="operator")],
    "halt": lambda ids: [halt()],
    "nonce floor": lambda ids: [raise_floor(50)],
    "a whole batch": lambda ids: [reserve("solana", f"S{i}", usd(10)) for i in range(3)]
    + [fill(ids["submitted"], usd(50), TOKEN), close(ids["open"]), deposit("solana", usd(1))],
}


@pytest.mark.parametrize("name", list(COMMANDS))
async def test_a_failed_commit_changes_nothing_and_the_engine_keeps_working(make_engine, name):
    h, ids = await busy_engine(make_engine)
    cmds = COMMANDS[name](ids)
    book_before = h.book.snapshot()
    tables_before = h.dump()
    batches_before = h.seq.committed_batches

    h.writer.before_commit = disk_error
    outcomes = await asyncio.gather(*(h.submit(c) for c in cmds), return_exceptions=True)

    # every caller sees the error: nobody is told "done" for something that is not on disk
    assert all(isinstance(o, sqlite3.OperationalError) and "disk I/O error" in str(o) for o in outcomes), outcomes
    assert h.seq.committed_batches == batches_before
    assert h.book.snapshot() == book_before
    assert h.dump() == tables_before
    assert h.seq.running

    # the fault goes away: the same commands now succeed, exactly as they would have
    h.writer.before_commit = None
    results = await h.submit_all(cmds)
    assert all(r.accepted for r in results), [r.reason for r in results]
    assert h.dump() != tables_before
    await h.assert_consistent()


async def test_a_failed_reservation_burns_no_id_no_nonce_and_no_cash(make_engine):
    h = await make_engine(policy(), cash={"base": usd(100)})
    h.writer.before_commit = disk_error
    with pytest.raises(sqlite3.OperationalError):
        await h.submit(reserve("base", "T1", usd(100)))
    assert quote(h.book, "base") == usd(100)

    h.writer.before_commit = None
    event = (await h.ok(reserve("base", "T1", usd(100)))).first(EntryReserved)
    assert (event.reservation_id, event.order_id, event.nonce) == (1, 1, 0)
    assert quote(h.book, "base") == 0
    # one reservation, not two: the failed attempt left no trace
    rows = h.writer.run_sync(h.writer.query, "SELECT id, amount, state FROM reservations")
    assert rows == [(1, str(usd(100)), "held")]
    nonces = h.writer.run_sync(h.writer.query, "SELECT next FROM nonces WHERE address = ?", [BASE_ADDRESS])
    assert nonces == [(1,)]
    await h.assert_consistent()


async def test_the_engine_survives_repeated_faults(make_engine):
    h = await make_engine(policy(), cash={"base": usd(1000)})
    for i in range(5):
        h.writer.before_commit = disk_error
        with pytest.raises(sqlite3.OperationalError):
            await h.submit(reserve("base", f"T{i}", usd(10)))
        h.writer.before_commit = None
        await h.ok(reserve("base", f"T{i}", usd(10)))
    assert quote(h.book, "base") == usd(950)
    assert len(h.book.held_reservations()) == 5
    await h.assert_consistent()


async def test_a_command_that_cannot_be_written_fails_alone_and_the_engine_keeps_working(make_engine):
    """A malformed command (an executor bug: signed bytes passed as a hex string) passes
    decide and evolve but cannot be encoded for the journal. Its caller must get an error,
    and the engine must go on serving everyone else; it must never hang."""
    h = await make_engine(policy(), cash={"base": usd(1000)})
    order_id = (await h.ok(reserve("base", "T1", usd(10)))).first(EntryReserved).order_id
    tables_before = h.dump()

    bad = RecordSubmission(order_id, "0xbad", "0x02f8deadbeef", None, 1, 1, 0)  # raw must be bytes
    with pytest.raises(Exception):
        await asyncio.wait_for(h.submit(bad), timeout=2)
    assert h.dump() == tables_before

    result = await asyncio.wait_for(h.submit(reserve("base", "T2", usd(10))), timeout=2)
    assert result.accepted
    assert quote(h.book, "base") == usd(980)
    await h.assert_consistent()


async def test_cancelling_the_sequencer_mid_commit_keeps_memory_equal_to_disk(make_engine):
    """The transaction runs on the writer thread whatever the loop does: if the sequencer task
    is cancelled while it runs, the sequencer waits for the commit's outcome and applies it."""
    import asyncio
    import time

    h = await make_engine(cash={"base": usd(1000)})
    h.writer.before_commit = lambda _conn: time.sleep(0.2)  # a slow disk: the commit is in flight
    pending = asyncio.ensure_future(h.seq.submit(reserve("base", "T9", usd(10))))
    await asyncio.sleep(0.05)
    h.seq._task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await h.seq._task
    h.writer.before_commit = None
    assert pending.done() and pending.result().accepted, "the caller learns the committed result"
    assert h.book.snapshot() == (await h.load()).snapshot()
    assert h.book.slots.get(("base", "T9")) is not None
