"""kill -9 at every durable boundary, then restart: the book comes back exactly right.

Each case runs the real `botctl run` in a subprocess that SIGKILLs itself at a
named crash point (BOTCTL_CRASH_AT), restarts it to quiescence, and checks what
an operator would: the audit is clean, every transaction the venue executed is
in the book (and nothing the book says happened is missing from the venue),
and every asset the venue holds equals what the book says it holds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.kernel import CRASH_POINTS

pytestmark = pytest.mark.slow

BASE_ENV = {
    "BOTCTL_PAPER__SPEED": "0",
    "BOTCTL_MAX_HOLD_S": "15",
    "BOTCTL_COOLDOWN_S": "5",
    "BOTCTL_PAPER__OPPORTUNITY_RATE_BPS": "6000",
    "BOTCTL_PAPER__UNKNOWN_RATE_BPS": "1000",
    "BOTCTL_PAPER__FAIL_RATE_BPS": "500",
}


def botctl(home: Path, *args: str, env: dict | None = None, timeout: float = 120):
    full = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    full.update(BASE_ENV)
    full["BOTCTL_HOME"] = str(home)
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                          env=full, timeout=timeout)


def restart_to_quiescence(home: Path, seed: int) -> None:
    quiet = {"BOTCTL_PAPER__OPPORTUNITY_RATE_BPS": "0", "BOTCTL_PAPER__UNKNOWN_RATE_BPS": "0",
             "BOTCTL_PAPER__FAIL_RATE_BPS": "0"}
    result = botctl(home, "run", "--seed", str(seed), "--duration", "60", env=quiet)
    assert result.returncode == 0, result.stderr


def check_books(home: Path) -> None:
    audit = botctl(home, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    rec = botctl(home, "reconcile", "--json")
    assert rec.returncode == 0, rec.stdout + rec.stderr
    assert json.loads(rec.stdout)["differences"] == []

    book = sqlite3.connect(home / "botctl.db")
    venue = sqlite3.connect(home / "paper-venue.db")
    orders = {tx: state for tx, state in book.execute("SELECT tx_id, state FROM orders WHERE tx_id IS NOT NULL")}
    live = book.execute("SELECT count(*) FROM orders WHERE state IN ('new','signed','submitted','unknown')")
    assert live.fetchone()[0] == 0, "quiescence: nothing in flight"
    held = book.execute("SELECT count(*) FROM reservations WHERE state = 'held'").fetchone()[0]
    assert held == 0, "no reservation is held without an order that needs it"
    for tx, status in venue.execute("SELECT id, status FROM txs"):
        assert tx in orders, f"the venue executed {tx} but the book never heard of it"
        expected = {"landed": "filled", "failed": "failed", "expired": "failed", "dropped": "failed"}[status]
        assert orders[tx] == expected, f"{tx}: venue {status}, book {orders[tx]}"
    for tx, state in orders.items():
        if state == "filled":
            row = venue.execute("SELECT status FROM txs WHERE id = ?", (tx,)).fetchone()
            assert row is not None and row[0] == "landed", f"book says {tx} filled, venue says {row}"
    book.close()
    venue.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_at_crash_point_then_restart(tmp_path, point, seed):
    home = tmp_path / "home"
    crashed = botctl(home, "run", "--seed", str(seed), "--duration", "400",
                     env={"BOTCTL_CRASH_AT": point, "BOTCTL_CRASH_SKIP": str(seed)})
    assert crashed.returncode == -signal.SIGKILL, f"never reached {point}: {crashed.stderr[-500:]}"
    restart_to_quiescence(home, seed)
    check_books(home)


def test_random_kills_from_outside(tmp_path):
    home = tmp_path / "home"
    draw = random.Random(20261124)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update(BASE_ENV)
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "400"})
    for instant in range(30):
        proc = subprocess.Popen([sys.executable, "-m", "console.cli", "run", "--seed", "9"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(draw.uniform(0.4, 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        audit = botctl(home, "audit")
        assert audit.returncode in (0, 1) and "Traceback" not in audit.stderr
        if (home / "botctl.db").exists():
            assert audit.returncode == 0, f"kill {instant}: {audit.stdout}"
    restart_to_quiescence(home, 9)
    check_books(home)
