"""A commit that fails with an I/O error loses nothing, and the engine says so plainly."""

from __future__ import annotations

import sqlite3

import pytest

from engine.kernel import EngineFailed, build, policy_for
from engine.persist import load_book
from engine.settings import load_settings

from paperkit import audited, conservation, settle


def committed_book(settings):
    conn = sqlite3.connect(f"file:{settings.home / 'botctl.db'}?mode=ro", uri=True)
    try:
        return load_book(lambda sql, params=(): conn.execute(sql, tuple(params)).fetchall(), policy_for(settings))
    finally:
        conn.close()


def journal_length(settings) -> int:
    conn = sqlite3.connect(f"file:{settings.home / 'botctl.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM journal").fetchone()[0]
    finally:
        conn.close()


async def test_disk_io_error_mid_run_stops_cleanly_and_loses_nothing(tmp_path):
    settings = load_settings(home=tmp_path / "home", max_hold_s=20, cooldown_s=5,
                             paper={"speed": 0, "seed": 8, "opportunity_rate_bps": 6000})
    engine = await build(settings)
    commits = {"n": 0}

    def disk_full(_conn):
        commits["n"] += 1
        if commits["n"] > 120:
            raise sqlite3.OperationalError("disk I/O error")

    engine.writer.before_commit = disk_full
    try:
        with pytest.raises(EngineFailed, match="disk I/O error"):
            await engine.run(500, on_tick=lambda e: None)
        # The failed batch left nothing behind: memory is exactly what the disk committed,
        # read through a connection of its own.
        in_memory = engine.book.snapshot()
        on_disk = committed_book(settings)
    finally:
        engine.writer.before_commit = None
        await engine.close()
    assert commits["n"] > 120 and engine.stats.ticks > 0  # it traded, then the disk filled
    assert in_memory == on_disk.snapshot()
    assert on_disk.meta.get("seq") == journal_length(settings)

    engine = await build(settings)  # the disk has room again
    try:
        await settle(engine)
        assert conservation(engine) == []
        assert audited(settings) == []
    finally:
        await engine.close()


async def test_unexplained_difference_blocks_entries_until_accepted(tmp_path):
    from engine.core.messages import AcceptReconciliation, ReserveEntry

    settings = load_settings(home=tmp_path / "home", paper={"speed": 0, "seed": 3})
    engine = await build(settings)
    await engine.close()
    venue = sqlite3.connect(settings.home / "paper-venue.db")  # someone moved funds behind the bot's back
    venue.execute("UPDATE balances SET amount = CAST(amount AS INTEGER) - 7000000 WHERE chain = 'solana' "
                  "AND asset = 'quote'")
    venue.commit()
    venue.close()

    engine = await build(settings)
    try:
        assert engine.last_reconciliation.differences == (("solana", "quote", 993_000_000, 1_000_000_000),)
        denied = await engine.sequencer.submit(ReserveEntry("base", "AERO", None, 0, engine.now()))
        assert not denied.accepted and "reconcile" in denied.reason
        accepted = await engine.sequencer.submit(AcceptReconciliation(engine.now(), "operator"))
        assert accepted.accepted
        assert engine.book.balance("solana", "quote", "cash") == 993_000_000
        entry = await engine.sequencer.submit(ReserveEntry("base", "AERO", None, 0, engine.now()))
        assert entry.accepted
    finally:
        await engine.close()
    assert audited(settings) == []
