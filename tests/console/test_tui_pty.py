"""`botctl tui` as the operator starts it: a real process on a real pseudo-terminal (tests/terminal.py).

The Pilot tests hand the app an engine they built; only here does the app build, own and let go of
the book itself, so every way out (q, the quit dialog's two choices, signals, a closed terminal,
quitting before the engine is up) is driven here, and each must end the process with the book's
lock released and the book auditing clean.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from storage.owner import current_owner

import terminal

pytestmark = pytest.mark.slow

PACED = {"BOTCTL_PAPER__SPEED": "20"}  # 20 blocks a second: the screen moves, the CPU is not flooded
NO_ENTRIES = {**PACED, "BOTCTL_PAPER__OPPORTUNITY_RATE_BPS": "0"}
# 4 blocks a second, fills 1 to 100 blocks after sending: orders in flight stay there for seconds, so
# those seen on the screen are still in flight when the key or the signal that follows arrives. An
# opportunity every block: two orders are in flight within the first second, not after several.
SLOW_FILLS = {"BOTCTL_PAPER__SPEED": "4", "BOTCTL_PAPER__LATENCY_BLOCKS": "100",
              "BOTCTL_PAPER__OPPORTUNITY_RATE_BPS": "10000"}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def environment(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BOTCTL_", "TEXTUAL_"))}
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0"})
    env.update(extra or {})
    return env


def cli(home: Path, *args: str, extra: dict[str, str] | None = None, **kw) -> subprocess.CompletedProcess:
    if kw == {"stdin": subprocess.DEVNULL} or not kw:  # warm: stdin is /dev/null (tests/terminal.py)
        return terminal.run(args, environment(home, extra), cwd=home.parent, timeout=60)
    return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                          env=environment(home, extra), cwd=home.parent, timeout=60, **kw)


def tui(home: Path, *args: str, extra: dict[str, str] | None = None, cold: bool = False) -> terminal.Console:
    return terminal.Console(["tui", *args], environment(home, extra), size=(130, 40), cwd=str(home.parent),
                            cold=cold)


def status(home: Path) -> dict:
    out = cli(home, "status", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def assert_let_go(home: Path) -> dict:
    """Nobody owns the book any more and it audits clean; returns `status --json`."""
    now = status(home)
    assert now["owner"] is None, now["owner"]
    audit = cli(home, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    return now


def started(console: terminal.Console, in_flight: bool = False) -> None:
    console.expect("Positions")
    console.expect("engine ready")
    if in_flight:
        console.expect(r"in flight ([2-9]|\d\d)")  # the header: two or more orders in flight


def quit_now(console: terminal.Console) -> int:
    """q, and "quit now" if the dialog asks (orders in flight): the book stops where it is."""
    mark = console.mark()
    console.press("q")
    deadline = time.monotonic() + 10
    while console.poll() is None and time.monotonic() < deadline:
        if re.search(r"order\(s\) in flight", console.text()[mark:]):
            console.press("q")
            break
        time.sleep(0.05)
    return console.wait(10)


def test_q_with_nothing_in_flight_ends_the_process_and_lets_go_of_the_book(home):
    with tui(home, extra=NO_ENTRIES) as console:
        started(console)
        console.press("q")
        assert console.wait(10) == 0
    assert_let_go(home)


@pytest.mark.parametrize("choice, settled", [("q", False), ("s", True)], ids=["quit now", "settle first"])
def test_q_with_orders_in_flight_asks_then_quits_now_or_after_settling(home, choice, settled):
    with tui(home, extra=SLOW_FILLS) as console:
        started(console, in_flight=True)
        mark = console.mark()
        console.press("q")
        console.expect(r"\d+ order\(s\) in flight", after=mark)
        console.expect(r"Settle, then quit", after=mark)
        console.press(choice)
        assert console.wait(10) == 0
    now = assert_let_go(home)
    if settled:
        assert now["orders_in_flight"] == 0
    else:  # left held, to be settled from the venue on the next start
        assert now["orders_in_flight"] > 0


@pytest.mark.parametrize("how", ["SIGTERM", "SIGHUP", "SIGINT", "terminal closed", "SIGTERM over the quit dialog"])
def test_a_signal_or_a_closed_terminal_stops_the_engine_and_exits_0(home, how):
    with tui(home, extra=SLOW_FILLS) as console:
        started(console, in_flight=True)
        if how == "terminal closed":
            console.hang_up()
        elif how == "SIGTERM over the quit dialog":
            mark = console.mark()
            console.press("q")
            console.expect(r"order\(s\) in flight", after=mark)
            console.signal(signal.SIGTERM)
        else:
            console.signal(getattr(signal, how))
        assert console.wait(10) == 0
    now = assert_let_go(home)
    assert now["orders_in_flight"] > 0  # "quit now": what was in flight stays held for the next start


def test_quitting_while_the_engine_is_still_starting_lets_go_of_everything_it_took(home):
    """The engine's start is held up by a write lock on its database (a `BEGIN IMMEDIATE` here):
    q arrives while it is starting; once the start completes, what it took is let go."""
    first = cli(home, "run", "--duration", "1")
    assert first.returncode == 0, first.stderr
    blocker = sqlite3.connect(home / "botctl.db", isolation_level=None, timeout=5)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        with tui(home, extra=PACED) as console:
            console.expect("Positions")
            console.expect("RECONCILING")
            mark = console.mark()
            console.press("q")
            console.expect("STOPPING", after=mark)
            assert console.poll() is None  # waiting for its start to finish, to let go of what it took
            assert current_owner(home)["command"] == "botctl tui"  # (quickly: the start waits 5 s at most)
            blocker.execute("ROLLBACK")
            assert console.wait(10) == 0
            assert "engine ready" not in console.text()
    finally:
        blocker.close()
    assert_let_go(home)


def test_off_a_terminal_tui_refuses_before_taking_anything(home):
    out = cli(home, "tui")  # stdin /dev/null, stdout and stderr pipes: no terminal anywhere
    assert out.returncode == 2
    assert out.stderr == "error: botctl tui needs a terminal (use botctl run for a headless engine)\n"
    assert out.stdout == ""
    assert not home.exists()  # no database, no lock, not even the home


def test_off_a_terminal_tui_leaves_an_existing_book_alone(home):
    first = cli(home, "run", "--duration", "1")
    assert first.returncode == 0, first.stderr
    before = status(home)
    out = cli(home, "tui", stdin=subprocess.DEVNULL)
    assert (out.returncode, out.stderr) == (2, "error: botctl tui needs a terminal (use botctl run for a "
                                                "headless engine)\n")
    assert status(home) == before


def test_signals_file_opens_a_position_shown_in_the_console_and_kept_after_quitting(home):
    signals = home.parent / "signals.jsonl"
    signals.write_text(json.dumps({"id": "sig-1", "chain": "solana", "token": "WIF", "size": "25.00"}) + "\n")
    with tui(home, "--signals", str(signals), extra=PACED) as console:
        started(console)
        console.expect(r"open 1\b")  # the header's count of open positions
        console.expect(r"\bWIF\b")
        assert quit_now(console) == 0
    assert_let_go(home)
    out = cli(home, "positions", "--json")
    assert out.returncode == 0, out.stderr
    positions = json.loads(out.stdout)
    assert [(p["chain"], p["token"], p["state"]) for p in positions] == [("solana", "WIF", "open")]


def test_seed_makes_the_same_market_as_run_with_that_seed(home, tmp_path):
    """The console's first trades are `botctl run --seed 7`'s first trades (the default seed is 1)."""
    # cold: a hash seed of its own, not the warm `run`'s (tests/terminal.py)
    with tui(home, "--seed", "7", extra=PACED, cold=True) as console:
        started(console)
        console.expect(r"open [1-9]")
        assert quit_now(console) == 0
    assert status(home)["owner"] is None
    other = tmp_path / "other"
    ran = cli(other, "run", "--seed", "7", "--duration", "30")
    assert ran.returncode == 0, ran.stderr

    def fills(h: Path) -> list[tuple]:
        out = cli(h, "history", "--json", "--limit", "1000")
        assert out.returncode == 0, out.stderr
        rows = sorted(json.loads(out.stdout), key=lambda r: r["id"])
        return [(r["side"], r["chain"], r["token"], r["amount"], r["price"], r["fee"]) for r in rows]

    in_console, headless = fills(home), fills(other)
    common = min(len(in_console), len(headless))
    assert common >= 1
    assert in_console[:common] == headless[:common]
