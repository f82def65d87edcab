"""Operator commands from a second terminal, against a running engine and with none."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import terminal
from terminal import converse

pytestmark = pytest.mark.slow


def env_for(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0", "BOTCTL_MAX_HOLD_S": "100000",
                "BOTCTL_STOP_LOSS_BPS": "0", "BOTCTL_TAKE_PROFIT_BPS": "0"})
    env.update(extra)
    return env


def cli(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return terminal.run(args, env_for(home, **extra))


def open_positions(home: Path) -> list[dict]:
    return json.loads(cli(home, "positions", "--json").stdout)


def traded(prepared, home: Path) -> Path:
    """A book after `botctl run --seed 4 --duration 150`: open positions, no owner (made once, copied)."""
    def make(path: Path) -> None:
        assert cli(path, "run", "--seed", "4", "--duration", "150").returncode == 0

    return prepared(home, "seed 4, 150 blocks, no automatic exits", make)


@pytest.fixture
def engine_running(tmp_path, prepared):
    """`botctl run` in the background, paced, after a first run has opened positions."""
    home = traded(prepared, tmp_path / "home")
    proc = terminal.spawn(["run"], env_for(home, BOTCTL_PAPER__SPEED="20"), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while json.loads(cli(home, "status", "--json").stdout)["owner"] is None:
            assert time.monotonic() < deadline and proc.poll() is None, "engine did not start"
            time.sleep(0.05)
    except BaseException:  # no engine left running when the setup fails
        proc.kill()
        proc.wait(timeout=30)
        raise
    yield home, proc
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)


def test_close_from_another_process_closes_it_and_names_the_pnl(engine_running):
    home, proc = engine_running
    position = open_positions(home)[0]
    result = cli(home, "close", str(position["id"]), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "done"
    [closed] = report["positions"]
    assert closed["id"] == position["id"] and closed["state"] == "closed"
    assert closed["realized_pnl"] is not None
    history = json.loads(cli(home, "history", "--commands", "--json").stdout)
    assert history[0]["command"] == "close" and history[0]["state"] == "done"
    assert "pid" in history[0]["who"]


def test_twenty_concurrent_closes_sell_exactly_once(engine_running):
    home, proc = engine_running
    target = open_positions(home)[0]["id"]
    procs = [terminal.spawn(["close", str(target), "--yes"], env_for(home), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
             for _ in range(20)]
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    ok = [r for r in results if r[0] == 0]
    refused = [r for r in results if r[0] == 1]
    assert len(ok) == 1, results
    assert len(refused) == 19, results
    for _code, _out, err in refused:
        assert "already closing" in err or "already closed" in err, err
    deadline = time.monotonic() + 30
    conn = sqlite3.connect(home / "botctl.db")
    while conn.execute("SELECT state FROM positions WHERE id = ?", (target,)).fetchone()[0] != "closed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    filled = conn.execute("SELECT count(*) FROM orders WHERE intent = 'exit' AND state = 'filled' "
                          "AND position_id = ?", (target,)).fetchone()[0]
    requests = [json.loads(d) for (d,) in conn.execute("SELECT data FROM journal WHERE kind = 'CloseRequested'")]
    conn.close()
    assert filled == 1, "exactly one sell"
    # one operator close was accepted; any other exit order is a retry of that same close after a revert
    assert len([r for r in requests if r["position_id"] == target and r["by"] != "retry"]) == 1


def test_halt_close_all_under_load(engine_running):
    home, proc = engine_running
    result = cli(home, "halt", "--close-all", "--json", "--timeout", "60")
    assert result.returncode == 0, result.stderr
    conn = sqlite3.connect(home / "botctl.db")
    halted_at = conn.execute("SELECT max(seq) FROM journal WHERE kind = 'TradingStateChanged'").fetchone()[0]
    deadline = time.monotonic() + 30
    while True:  # entries keep arriving from the simulated feed: wait for the first one after the halt
        later = conn.execute("SELECT count(*) FROM journal WHERE kind = 'EntryReserved' AND seq > ?",
                             (halted_at,)).fetchone()[0]
        denied = conn.execute("SELECT count(*) FROM journal WHERE kind = 'EntryDenied' AND seq > ?",
                              (halted_at,)).fetchone()[0]
        if later or denied:
            break
        assert time.monotonic() < deadline, "the feed proposed no entry after the halt"
        time.sleep(0.05)
    reasons = [json.loads(data)["reason"] for (data,) in conn.execute(
        "SELECT data FROM journal WHERE kind = 'EntryDenied' AND seq > ?", (halted_at,))]
    conn.close()
    assert later == 0, "no entry is reserved after the halt's commit"
    assert denied > 0, "the feed kept proposing entries and they were refused"
    # refused for the halt (every token just closed also cools down: that alone would refuse them too)
    assert all("trading is halted" in reason for reason in reasons), reasons
    # An entry already sent when the halt committed may still fill after it: the halt waits for it
    # and closes the position it opens, so that nothing is open when it answers.
    reported = json.loads(result.stdout)["positions"]
    assert reported and all(p["state"] == "closed" for p in reported), reported
    conn = sqlite3.connect(home / "botctl.db")
    still_open = conn.execute("SELECT id FROM positions WHERE state != 'closed'").fetchall()
    in_flight = conn.execute("SELECT id FROM orders WHERE intent = 'entry' AND state IN "
                             "('new', 'signed', 'submitted', 'unknown')").fetchall()
    closed_ids = {pid for (pid,) in conn.execute("SELECT id FROM positions WHERE state = 'closed'")}
    conn.close()
    assert still_open == [] and in_flight == [], (still_open, in_flight)
    assert {p["id"] for p in reported} <= closed_ids
    assert json.loads(cli(home, "status", "--json").stdout)["trading_state"] == "halted"
    assert cli(home, "audit").returncode == 0


def test_one_off_close_with_no_engine_running(tmp_path, prepared):
    home = traded(prepared, tmp_path / "home")
    target = open_positions(home)[0]["id"]
    result = cli(home, "close", str(target), "--reason", "manual")
    assert result.returncode == 0, result.stderr
    assert f"position {target} closed: realized pnl" in result.stdout
    assert json.loads(cli(home, "status", "--json").stdout)["owner"] is None
    assert cli(home, "audit").returncode == 0


@pytest.mark.parametrize("args, code, words", [
    (["close", "999"], 1, "no position 999"),
    (["close", "abc"], 2, "Invalid value"),
    (["close", "0"], 2, "position ids are integers from 1"),
    (["close"], 2, "needs a position ID or --all"),
    (["close", "1", "--all"], 2, "not both"),
])
def test_bad_operator_input(tmp_path, args, code, words):
    home = tmp_path / "home"
    assert cli(home, "run", "--seed", "4", "--duration", "50").returncode == 0
    def written():
        conn = sqlite3.connect(home / "botctl.db")
        try:
            return [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("journal", "inbox")]
        finally:
            conn.close()

    before = written()
    result = cli(home, *args)
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], result.stderr
    assert written() == before  # refused before anything is written


def journal_and_inbox(home: Path) -> list[int]:
    conn = sqlite3.connect(home / "botctl.db")
    try:
        return [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("journal", "inbox")]
    finally:
        conn.close()


def test_closing_a_closed_or_closing_position_is_refused(tmp_path, prepared):
    home = traded(prepared, tmp_path / "home")
    first, second, third = (p["id"] for p in open_positions(home)[:3])
    assert cli(home, "close", str(first)).returncode == 0
    again = cli(home, "close", str(first))
    assert again.returncode == 1 and "already closed" in again.stderr

    # Killed after the exit's bytes were committed: the position is left closing, its exit in flight.
    killed = cli(home, "close", str(second), "--yes", BOTCTL_CRASH_AT="exit_after_submit_commit")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert {p["id"]: p["state"] for p in open_positions(home)}[second] == "closing"
    before = journal_and_inbox(home)
    refused = cli(home, "close", str(second), "--yes")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert refused.stderr == f"error: position {second} is already closing\n"
    assert journal_and_inbox(home) == before  # refused before anything was written

    # Two closes of one open position queued while nobody owns the book pass the sender's check;
    # the one queue decides them in order: the first sells, the second finds it closing.
    for _ in range(2):
        queued = cli(home, "close", str(third), "--no-wait", "--json")
        assert queued.returncode == 0 and json.loads(queued.stdout)["state"] == "pending", queued.stderr
    assert cli(home, "pause").returncode == 0  # a one-off owner: decides every queued row, settles all
    answers = [r for r in json.loads(cli(home, "history", "--commands", "--json").stdout)
               if r["command"] == "close" and r["args"].get("id") == third]
    assert sorted(r["state"] for r in answers) == ["done", "refused"], answers
    [denied] = [r for r in answers if r["state"] == "refused"]
    assert any(f"position {third} is already closing" in why for why in denied["result"]["refused"]), denied
    states = {p["id"]: p["state"] for p in json.loads(cli(home, "positions", "--all", "--json").stdout)}
    assert (states[second], states[third]) == ("closed", "closed")
    conn = sqlite3.connect(home / "botctl.db")
    sold = conn.execute("SELECT count(*) FROM orders WHERE intent = 'exit' AND state = 'filled' "
                        "AND position_id = ?", (third,)).fetchone()[0]
    conn.close()
    assert sold == 1, "sold exactly once"
    assert cli(home, "audit").returncode == 0


def run_on_terminal(home: Path, args: list[str], answer: str) -> tuple[int, str]:
    """Run botctl on a pseudo-terminal, type `answer` at its prompt, return (exit code, everything shown)."""
    return converse(args, env_for(home), [answer])


def test_close_on_a_terminal_previews_and_asks(tmp_path, prepared):
    home = traded(prepared, tmp_path / "home")
    target = open_positions(home)[0]["id"]
    code, shown = run_on_terminal(home, ["close", str(target)], "n")
    assert code == 1 and "expected pnl" in shown and "fees" in shown and "cancelled" in shown
    assert any(p["id"] == target for p in open_positions(home)), "declined: still open"
    code, shown = run_on_terminal(home, ["close", str(target)], "y")
    assert code == 0 and f"position {target} closed" in shown


def test_leaving_a_halt_on_a_terminal_needs_the_typed_word(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "run", "--seed", "4", "--duration", "50").returncode == 0
    assert cli(home, "halt").returncode == 0
    code, shown = run_on_terminal(home, ["resume", "--force"], "yes")
    assert code == 1 and "not resumed" in shown
    code, shown = run_on_terminal(home, ["resume", "--force"], "RESUME")
    assert code == 0 and "halted -> active" in shown
