"""Promotion evidence measured from a journal: what counts, where, and since when.

Journals are written with the real schema and the real event codec; `measure` reads them."""

from __future__ import annotations

import sqlite3
from decimal import Decimal

from engine.core.evidence import checklist
from engine.core.messages import DrillRecorded, Heartbeat, PositionClosed, Reconciled, RunStarted, StageChanged
from engine.persist import encode_event
from engine.rollout import measure
from engine.stages import stage
from storage.db import migrate

H = 3_600_000  # one hour in ms
T0 = 1_800_000_000_000


def journal(*events) -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    migrate(conn)
    for seq, event in enumerate(events, start=1):
        kind, data = encode_event(event)
        conn.execute("INSERT INTO journal (seq, at, kind, data) VALUES (?, ?, ?, ?)", (seq, event.at, kind, data))
    return conn


def run(name: str, at: int, network: str = "paper", purpose: str = "trade") -> RunStarted:
    return RunStarted(name, "paper", network, "paper", "botctl run", at, purpose)


def closed(at: int, position_id: int = 1) -> PositionClosed:
    return PositionClosed(position_id, 1, 0, 0, Decimal(1), at, at)


def test_hours_are_the_spans_of_each_run_from_its_start_to_its_last_heartbeat():
    ev = measure(journal(run("a", T0), Heartbeat("a", T0 + H), Heartbeat("a", T0 + 2 * H),  # killed after this
                         run("b", T0 + 5 * H), Heartbeat("b", T0 + 5 * H + H // 2)), "paper", "paper")
    assert ev.hours == Decimal("2.5")  # the 3 hours nobody ran in between are not counted


def test_only_the_stages_network_counts_and_drill_runs_count_nowhere():
    ev = measure(journal(run("t", T0, network="testnet"), closed(T0 + 1), Heartbeat("t", T0 + H),
                         run("d", T0 + 2 * H, purpose="drill"), closed(T0 + 2 * H + 1, 2), Heartbeat("d", T0 + 3 * H),
                         run("p", T0 + 4 * H), closed(T0 + 4 * H + 1, 3), Heartbeat("p", T0 + 5 * H)),
                 "paper", "paper")
    assert (ev.trades, ev.hours) == (1, Decimal(1))
    assert (ev.trades_elsewhere, ev.hours_elsewhere) == (1, Decimal(1))  # testnet's; the drill's count nowhere


def test_evidence_starts_when_the_stage_does_even_inside_a_run():
    ev = measure(journal(run("a", T0), closed(T0 + 1), Heartbeat("a", T0 + 10 * H),
                         DrillRecorded("crash", True, "ok", "paper", "paper", "ann", T0 + 2),
                         StageChanged("testnet", "paper", "promote", "{}", "ann", T0 + 10 * H),
                         Heartbeat("a", T0 + 11 * H)),
                 "testnet", "paper")
    assert ev.trades == 0 and ev.hours == Decimal(1)  # the hour after the promotion only
    assert ev.drills == {}  # recorded before the promotion: the old stage's


def test_a_reconciliation_difference_or_a_pending_review_blocks_promotion():
    difference = Reconciled((("solana", "quote", 10, 9),), 0, "engine", T0)
    conn = journal(run("a", T0), difference)
    ev = measure(conn, "paper", "paper")
    assert ev.inconsistencies == 1
    item = next(i for i in checklist(stage("paper"), ev) if i.key == "consistency")
    assert not item.ok and item.have == "1"


def test_the_latest_drill_of_a_kind_decides_and_a_failed_one_says_why():
    ev = measure(journal(DrillRecorded("halt", True, "ok", "paper", "paper", "ann", T0),
                         DrillRecorded("halt", False, "positions [3] still open", "paper", "paper", "bob", T0 + 1)),
                 "paper", "paper")
    item = next(i for i in checklist(stage("paper"), ev) if i.key == "drill:halt")
    assert not item.ok and item.have.startswith("FAILED: positions [3] still open (latest, by bob)")
