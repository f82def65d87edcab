"""Paper trading end to end, in-process: the book against the venue it trades on."""

from __future__ import annotations

import pytest

from engine.kernel import build
from engine.settings import load_settings

from paperkit import audited, conservation, settle, start


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_paper_run_with_faults_conserves_funds(tmp_path, seed):
    settings, engine = await start(tmp_path, seed=seed, fail_rate_bps=1500, unknown_rate_bps=2500,
                                   opportunity_rate_bps=5000)
    try:
        for block in range(400):
            await engine.tick()
            if block % 100 == 99:
                assert audited(settings) == []
        assert engine.stats.opened > 5 and engine.stats.closed > 0
        await settle(engine)
        assert conservation(engine) == []
        assert audited(settings) == []
    finally:
        await engine.close()


async def test_unknown_outcome_keeps_funds_held_until_the_venue_answers(tmp_path):
    settings, engine = await start(tmp_path, seed=4, unknown_rate_bps=10_000, opportunity_rate_bps=10_000)
    try:
        seen_unknown = False
        for _ in range(30):
            await engine.tick()
            for order in engine.book.live_orders():
                if order.state == "unknown":
                    seen_unknown = True
                    reservation = engine.book.reservations.get(order.reservation_id)
                    assert reservation is not None and reservation.state == "held"
        assert seen_unknown
        # The network heals: the reconciler rebroadcasts the same bytes and learns the outcomes.
        for executor in engine.executors.values():
            executor.faults = type(executor.faults)(0, 0, executor.faults.expiry_blocks)
        await settle(engine)
        assert conservation(engine) == []
        assert audited(settings) == []
    finally:
        await engine.close()


async def test_restart_continues_the_same_book(tmp_path):
    settings, engine = await start(tmp_path, seed=6, opportunity_rate_bps=5000)
    for _ in range(150):
        await engine.tick()
    await settle(engine)
    before = engine.book.snapshot()
    before.pop("meta")
    height = engine.world.height
    await engine.close()
    settings, engine = await start(tmp_path, seed=6, opportunity_rate_bps=5000)
    try:
        after = engine.book.snapshot()
        assert after.pop("meta")["review"] == ()
        assert after == before
        assert engine.world.height == height
        assert engine.last_reconciliation.differences == ()
        for _ in range(50):
            await engine.tick()
        await settle(engine)
        assert conservation(engine) == []
        assert audited(settings) == []
    finally:
        await engine.close()


async def test_jsonl_signals_are_taken_once_and_bad_lines_skipped(tmp_path, caplog):
    signals = tmp_path / "signals.jsonl"
    signals.write_text(
        '{"id": "s1", "chain": "solana", "token": "WIF", "size": "20.00"}\n'
        "not json\n"
        '{"id": "s2", "chain": "mars", "token": "WIF"}\n'
        '{"id": "s3", "chain": "base", "token": "NOPE"}\n'
        '{"id": "s4", "chain": "base", "token": "AERO", "size": "5000"}\n'
        '{"id": "s5", "chain": "base", "token": "AERO", "at": "2020-01-01T00:00:00Z", "ttl_s": 30}\n'
    )
    settings = load_settings(home=tmp_path / "home", paper={"speed": 0})
    engine = await build(settings, str(signals))
    try:
        for _ in range(5):
            await engine.tick()
        assert [p.token for p in engine.book.positions.base.values()] == ["WIF"]
        assert set(engine.book.signals.base) == {"s1", "s4"}  # s4 decided (denied: too large)
        text = caplog.text
        assert "line 2" in text and "line 3" in text and "line 4" in text
    finally:
        await engine.close()
    engine = await build(settings, str(signals))  # a restart re-reads the same file
    try:
        for _ in range(5):
            await engine.tick()
        assert engine.stats.opened == 0, "no signal is taken twice"
    finally:
        await engine.close()
