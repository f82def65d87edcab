"""Promotion evidence, measured from the journal, and the checklist it fills.

Nothing here trusts a ticked box: trades are PositionClosed events, hours run
are spans of RunStarted/Heartbeat events, inconsistencies are Reconciled
events with differences, drills are DrillRecorded events, attestations are
AttestationRecorded events (who and when) - all since the stage began, and
all on the network the stage's promotion counts (paper, testnet, mainnet).
The audit is run fresh each time. The checklist it fills is pure: engine/core/evidence.py.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path

from engine.core.evidence import Drill, Evidence, Item
from engine.core.stages import Stage

EVIDENCE_KINDS = ("RunStarted", "Heartbeat", "PositionClosed", "Reconciled", "DrillRecorded",
                  "AttestationRecorded")
MS_PER_HOUR = Decimal(3_600_000)


def _counted(run: dict) -> str | None:
    """The network a run's hours and trades count on (None: a drill's, which count nowhere)."""
    return None if run.get("purpose", "trade") == "drill" else run["network"]


def measure(conn: sqlite3.Connection, stage_name: str, network: str) -> Evidence:
    """The evidence of the current stage, read in the caller's (read) transaction."""
    row = conn.execute("SELECT seq, at FROM journal WHERE kind = 'StageChanged' ORDER BY seq DESC LIMIT 1"
                       ).fetchone()
    since_seq, since = (row[0], row[1]) if row else (0, None)
    ev = Evidence(stage_name, since, network)
    runs: dict[str, list] = {}  # run -> [network, first at, last at]
    current: str | None = None
    if row is not None:  # a run going on when the stage began counts from that moment
        before = conn.execute("SELECT data FROM journal WHERE kind = 'RunStarted' AND seq < ? "
                              "ORDER BY seq DESC LIMIT 1", (since_seq,)).fetchone()
        if before is not None:
            data = json.loads(before[0])
            current = data["run"]
            runs[current] = [_counted(data), since, since]
    marks = ",".join("?" * len(EVIDENCE_KINDS))
    for kind, at, text in conn.execute(
            f"SELECT kind, at, data FROM journal WHERE seq > ? AND kind IN ({marks}) ORDER BY seq",
            (since_seq, *EVIDENCE_KINDS)):
        data = json.loads(text)
        if kind == "RunStarted":
            current = data["run"]
            runs[current] = [_counted(data), at, at]
        elif kind == "Heartbeat":
            span = runs.get(data["run"])
            if span is not None:
                span[2] = max(span[2], at)
        elif kind == "PositionClosed":
            counted = runs[current][0] if current is not None else None
            if counted == network:
                ev.trades += 1
            elif counted is not None or current is None:
                ev.trades_elsewhere += 1
        elif kind == "Reconciled":
            if data["differences"]:
                ev.inconsistencies += 1
        elif kind == "DrillRecorded":
            drill = Drill(data["kind"], bool(data["passed"]), data["detail"], data["network"], data["by"], at)
            (ev.drills if drill.network == network else ev.drills_elsewhere)[drill.kind] = drill
        elif kind == "AttestationRecorded":
            ev.attestations[data["item"]] = (data["by"], at)
    for net, first, last in runs.values():
        hours = Decimal(last - first) / MS_PER_HOUR
        if net == network:
            ev.hours += hours
        elif net is not None:
            ev.hours_elsewhere += hours
    review = conn.execute("SELECT value FROM meta WHERE key = 'review'").fetchone()
    ev.review_pending = bool(review and json.loads(review[0]))
    return ev


def evidence_of(db: Path, policy, stage_name: str | None = None, audit: bool = True) -> Evidence:
    """Evidence from the database file: one read transaction, then the audit (its own)."""
    from engine.audit import audit_file
    from engine.stages import stored_stage
    from storage import open_reader

    stage_name = stage_name or stored_stage(db) or "paper"
    network = policy.stages[stage_name].promotion.network
    if not Path(db).exists():  # a fresh home: the checklist of the first stage, nothing done yet
        return Evidence(stage_name, None, network, book=False)
    conn = open_reader(db)
    try:
        conn.execute("BEGIN")
        ev = measure(conn, stage_name, network)
        conn.execute("COMMIT")
    finally:
        conn.close()
    if audit:
        problems, events = audit_file(db, policy)
        ev.audit_clean, ev.audit_events, ev.audit_problems = not problems, events, problems
    return ev


def as_json(current: Stage, ev: Evidence, items: list[Item]) -> dict:
    from engine.views import iso

    return {
        "stage": current.name,
        "next": current.next,
        "since": iso(ev.since),
        "network": ev.network,
        "ready": bool(items) and all(i.ok for i in items),
        "items": [asdict(i) for i in items],
        "missing": [i.missing() for i in items if not i.ok],
        "evidence": {
            "trades": ev.trades, "hours": str(ev.hours.quantize(Decimal("0.001"))),
            "book": ev.book, "inconsistencies": ev.inconsistencies, "audit_clean": ev.audit_clean,
            "audit_events": ev.audit_events,
            "drills": {k: {"passed": d.passed, "by": d.by, "at": iso(d.at), "detail": d.detail}
                       for k, d in ev.drills.items()},
            "attestations": {k: {"by": who, "at": iso(at)} for k, (who, at) in ev.attestations.items()},
        },
    }
