"""Operator paths that had no test: `close --all`, `resume` after `pause`, `reconcile --accept`.

Each runs the real CLI as subprocesses on a book no other process owns (the command takes it,
acts, settles and lets go), reads back what the operator would, and ends with `botctl audit` clean.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

QUIET = {"BOTCTL_MAX_HOLD_S": "100000", "BOTCTL_STOP_LOSS_BPS": "0", "BOTCTL_TAKE_PROFIT_BPS": "0"}
BUSY = {"BOTCTL_PAPER__OPPORTUNITY_RATE_BPS": "6000"}


def rows(home: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{home / 'botctl.db'}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def last_seq(home: Path) -> int:
    return rows(home, "SELECT max(seq) FROM journal")[0][0]


def count_since(home: Path, kind: str, seq: int) -> int:
    return rows(home, f"SELECT count(*) FROM journal WHERE kind = '{kind}' AND seq > {seq}")[0][0]


def status(botctl) -> dict:
    out = botctl("status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def audit_clean(botctl) -> None:
    out = botctl("audit")
    assert out.returncode == 0, out.stdout + out.stderr


def test_close_all_sells_every_open_position_exactly_once(botctl, home, prepared):
    def make(path: Path) -> None:
        assert botctl("run", "--seed", "4", "--duration", "150", env={**QUIET, "BOTCTL_HOME": str(path)}
                      ).returncode == 0

    prepared(home, "seed 4, 150 blocks, no automatic exits", make)
    opened = [p["id"] for p in json.loads(botctl("positions", "--json").stdout) if p["state"] == "open"]
    assert len(opened) >= 2

    out = botctl("close", "--all", "--json", env=QUIET)

    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["state"] == "done"
    assert sorted(p["id"] for p in report["positions"]) == sorted(opened)
    assert all(p["state"] == "closed" and p["realized_pnl"] is not None for p in report["positions"]), report
    assert json.loads(botctl("positions", "--json").stdout) == []
    sold = dict(rows(home, "SELECT position_id, count(*) FROM orders WHERE intent = 'exit' AND state = 'filled' "
                           "GROUP BY position_id"))
    assert sold == {pid: 1 for pid in opened}
    [latest] = json.loads(botctl("history", "--commands", "--json", "--limit", "1").stdout)
    assert (latest["command"], latest["state"]) == ("close_all", "done")
    assert status(botctl)["owner"] is None
    audit_clean(botctl)


def test_resume_after_pause_takes_new_entries_again(botctl, home):
    assert botctl("run", "--seed", "4", "--duration", "30", env=BUSY).returncode == 0

    paused = botctl("pause")
    assert paused.returncode == 0 and "active -> reducing" in paused.stdout, paused.stdout + paused.stderr
    assert status(botctl)["trading_state"] == "reducing"
    mark = last_seq(home)
    assert botctl("run", "--duration", "60", env=BUSY).returncode == 0
    assert count_since(home, "EntryReserved", mark) == 0, "paused: no new entry"
    assert count_since(home, "EntryDenied", mark) > 0, "the feed kept proposing entries"

    resumed = botctl("resume")
    assert resumed.returncode == 0 and "reducing -> active" in resumed.stdout, resumed.stdout + resumed.stderr
    assert status(botctl)["trading_state"] == "active"
    mark = last_seq(home)
    assert botctl("run", "--duration", "60", env=BUSY).returncode == 0
    assert count_since(home, "EntryReserved", mark) > 0, "resumed: entries are taken again"
    audit_clean(botctl)


def test_reconcile_accept_takes_the_venues_balance_and_lets_entries_in_again(botctl, home):
    assert botctl("run", "--duration", "3", env={"BOTCTL_PAPER__OPPORTUNITY_RATE_BPS": "0"}).returncode == 0
    venue = sqlite3.connect(home / "paper-venue.db")  # someone moved funds behind the bot's back
    venue.execute("UPDATE balances SET amount = CAST(amount AS INTEGER) - 7000000 WHERE chain = 'solana' "
                  "AND asset = 'quote'")
    venue.commit()
    venue.close()

    found = botctl("reconcile")
    assert found.returncode == 1, found.stdout + found.stderr
    assert "difference: solana quote: venue 993000000 book 1000000000" in found.stdout
    assert found.stderr.startswith("error: 1 difference(s) with the venue block new entries")
    mark = last_seq(home)
    assert botctl("run", "--duration", "30", env=BUSY).returncode == 0
    assert count_since(home, "EntryReserved", mark) == 0, "entries wait for the operator's review"

    accepted = botctl("reconcile", "--accept")
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr
    assert "differences accepted" in accepted.stdout
    assert status(botctl)["chains"]["solana"]["cash"] == "993"
    mark = last_seq(home)
    assert botctl("run", "--duration", "30", env=BUSY).returncode == 0
    assert count_since(home, "EntryReserved", mark) > 0, "accepted: entries are taken again"
    again = botctl("reconcile")
    assert again.returncode == 0 and "balances agree with the venue" in again.stdout, again.stdout + again.stderr
    audit_clean(botctl)
