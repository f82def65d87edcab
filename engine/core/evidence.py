"""What promotion out of a stage needs, as a checklist filled from measured evidence.

Pure: evidence in, items out. The evidence is measured from the journal by
engine/rollout.py; nothing here trusts a ticked box.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from engine.core.stages import Stage

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
