"""Promotion evidence, measured from the journal, and the checklist it fills.

Nothing here trusts a ticked box: trades are PositionClosed events, hours run
are spans of RunStarted/Heartbeat events, inconsistencies are Reconciled
events with differences, drills are DrillRecorded events, attestations are
AttestationRecorded events (who and when) - all since the stage began, and
all on the network the stage's promotion counts (paper, testnet, mainnet).
The audit is run fresh each time. `checklist` is pure: evidence in, items out.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path

from engine.stages import Stage

EVIDENCE_KINDS = ("RunStarted", "Heartbeat", "PositionClosed", "Reconciled", "DrillRecorded",
                  "AttestationRecorded")
MS_PER_HOUR = Decimal(3_600_000)
NO_BOOK = "no book yet"


@dataclass
class Drill:
    kind: str
    passed: bool
    detail: str
    network: str
    by: str
    at: int


@dataclass
class Evidence:
    stage: str
    since: int | None  # when the stage began (engine ms; None: the book began in it)
    network: str  # where the stage's promotion counts evidence
    trades: int = 0
    trades_elsewhere: int = 0
    hours: Decimal = Decimal(0)
    hours_elsewhere: Decimal = Decimal(0)
    inconsistencies: int = 0
    review_pending: bool = False
    drills: dict[str, Drill] = field(default_factory=dict)  # the latest run of each, on `network`
    drills_elsewhere: dict[str, Drill] = field(default_factory=dict)
    attestations: dict[str, tuple[str, int]] = field(default_factory=dict)  # item -> (who, when)
    audit_clean: bool | None = None
    audit_events: int = 0
    audit_problems: list[str] = field(default_factory=list)
    book: bool = True  # False: a fresh home, no book yet - nothing measured, nothing passes


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


# --------------------------------------------------------------------------- the checklist


@dataclass(frozen=True)
class Item:
    key: str
    kind: str  # evidence | audit | drill | attestation
    label: str
    ok: bool
    have: str
    need: str

    def missing(self) -> str:
        return f"{self.label}: {self.have} (needs {self.need})"


def _hours(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'))} h"


def checklist(current: Stage, ev: Evidence, min_hours: Decimal | None = None,
              min_trades: int | None = None) -> list[Item]:
    """The items that gate promotion out of `current`, each with what the database shows."""
    p = current.promotion
    hours_needed = max(p.min_hours, min_hours or 0)
    trades_needed = max(p.min_trades, min_trades or 0)
    net = p.network
    items = []
    if current.next is None:
        return items
    elsewhere = f" (+{ev.trades_elsewhere} elsewhere, not counted)" if ev.trades_elsewhere else ""
    items.append(Item("trades", "evidence", f"round trips closed on {net}", ev.trades >= trades_needed,
                      f"{ev.trades}{elsewhere}", f">= {trades_needed}"))
    clock = "simulated clock" if net == "paper" else "engine clock"
    elsewhere = f" (+{_hours(ev.hours_elsewhere)} elsewhere, not counted)" if ev.hours_elsewhere else ""
    items.append(Item("hours", "evidence", f"hours run on {net} ({clock}, from heartbeats)",
                      ev.hours >= hours_needed, f"{_hours(ev.hours)}{elsewhere}", f">= {hours_needed} h"))
    pending = " and one waits for review (botctl reconcile)" if ev.review_pending else ""
    items.append(Item("consistency", "evidence", "balance inconsistencies found",
                      ev.book and ev.inconsistencies <= p.max_balance_inconsistencies and not ev.review_pending,
                      f"{ev.inconsistencies}{pending}" if ev.book else NO_BOOK, f"<= {p.max_balance_inconsistencies}"))
    if not ev.book:
        items.append(Item("audit", "audit", "audit (run now)", False, NO_BOOK, "clean"))
    elif ev.audit_clean is not None:
        have = (f"clean ({ev.audit_events} journal events replayed)" if ev.audit_clean
                else f"{len(ev.audit_problems)} violation(s): {ev.audit_problems[0]}")
        items.append(Item("audit", "audit", "audit (run now)", ev.audit_clean, have, "clean"))
    for kind in p.drills:
        drill = ev.drills.get(kind)
        if drill is None:
            other = ev.drills_elsewhere.get(kind)
            have = f"run on {other.network} only" if other else "never run"
            ok = False
        else:
            ok = drill.passed
            have = ("passed" if drill.passed else f"FAILED: {drill.detail}") + f" (latest, by {drill.by})"
        items.append(Item(f"drill:{kind}", "drill", f"drill {kind} (botctl drill {kind})", ok, have,
                          f"passed on {net}"))
    for text in p.attestations:
        key = text.split(":", 1)[0]
        got = ev.attestations.get(key)
        have = f"attested by {got[0]}" if got else "not attested"
        items.append(Item(f"attest:{key}", "attestation", text, got is not None, have,
                          f"botctl rollout attest {key}"))
    return items


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
