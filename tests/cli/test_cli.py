"""The CLI contract of DESIGN section 7, through the real command in a subprocess."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys

import pytest

import terminal
from clikit import one_error_line


def test_help_lists_the_commands(botctl):
    result = botctl("--help")
    assert result.returncode == 0
    for name in ("run", "status", "positions", "reservations", "history", "audit"):
        assert name in result.stdout


@pytest.mark.parametrize("value, words", [("abc", "valid integer"), ("-5", "greater than or equal to 0")])
def test_invalid_setting_exits_2_naming_it(botctl, home, value, words):
    result = botctl("run", "--duration", "1", env={"BOTCTL_MAX_SLIPPAGE_BPS": value})
    assert result.returncode == 2
    line = one_error_line(result)
    assert "BOTCTL_MAX_SLIPPAGE_BPS" in line and words in line
    assert not (home / "botctl.db").exists(), "nothing may be written on bad input"


def test_unknown_option_is_a_usage_error(botctl):
    result = botctl("status", "--bogus")
    assert result.returncode == 2
    assert "--bogus" in one_error_line(result)


def test_unknown_profile_is_a_configuration_error(botctl):
    result = botctl("run", "--profile", "yolo", "--duration", "1")
    assert result.returncode == 2
    assert "yolo" in one_error_line(result)


def test_read_commands_before_any_run_fail_cleanly(botctl):
    for command in (["status"], ["positions", "--json"], ["audit"]):
        result = botctl(*command)
        assert result.returncode == 1
        assert "botctl run" in one_error_line(result)


def test_home_writable_by_others_is_refused(botctl, home):
    home.mkdir(mode=0o700)
    os.chmod(home, 0o777)
    result = botctl("run", "--duration", "1")
    assert result.returncode == 2
    assert "chmod 700" in one_error_line(result)


@pytest.fixture
def ran(botctl, home, prepared):
    """The book of `botctl run --seed 5 --duration 400` (made once per test process, copied)."""
    def make(path) -> None:
        result = botctl("run", "--seed", "5", "--duration", "400", env={"BOTCTL_HOME": str(path)})
        assert result.returncode == 0, result.stderr
        assert "opened" in result.stderr  # progress and summary go to stderr

    prepared(home, "seed 5, 400 blocks", make)


def test_run_then_read_commands_follow_the_contract(botctl, home, ran):
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / "botctl.db").stat().st_mode) == 0o600

    status = json.loads(botctl("status", "--json").stdout)
    for key in ("mode", "stage", "trading_state", "owner", "chains", "equity"):
        assert key in status
    assert status["mode"] == "paper" and status["trading_state"] == "active"
    for chain in ("solana", "base"):
        for key in ("cash", "reserved", "open_value", "realized_pnl"):
            assert isinstance(status["chains"][chain][key], str)

    positions = json.loads(botctl("positions", "--all", "--json").stdout)
    assert positions, "a 400-block paper run opens positions"
    for key in ("id", "chain", "token", "state", "size", "cost", "entry_price", "mark_price", "pnl", "opened_at"):
        assert key in positions[0]
    assert {p["state"] for p in positions} <= {"open", "closing", "closed"}
    open_only = json.loads(botctl("positions", "--json").stdout)
    assert all(p["state"] != "closed" for p in open_only)

    history = json.loads(botctl("history", "--limit", "3", "--json").stdout)
    assert 0 < len(history) <= 3
    for key in ("id", "position_id", "side", "chain", "token", "amount", "price", "fee", "tx_id", "at"):
        assert key in history[0]

    reservations = json.loads(botctl("reservations", "--json").stdout)
    assert isinstance(reservations, list)
    nonces = json.loads(botctl("nonces", "--json").stdout)
    assert [n["chain"] for n in nonces] == ["base"], "only the EVM chain has nonces"
    assert nonces[0]["next_nonce"] > 0

    audit = botctl("audit")
    assert audit.returncode == 0 and "audit clean" in audit.stdout


def test_audit_catches_cash_changed_without_a_posting(botctl, home, ran):
    conn = sqlite3.connect(home / "botctl.db")
    conn.execute("UPDATE balances SET amount = CAST(amount AS INTEGER) + 1000000 "
                 "WHERE chain = 'solana' AND asset = 'quote' AND account = 'cash'")
    conn.commit()
    conn.close()
    result = botctl("audit", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert not report["clean"]
    assert any("without a posting" in v for v in report["violations"])
    assert "violation" in one_error_line(result)


def test_same_seed_same_trades(botctl, home, tmp_path):
    def trades(seed_home):
        env = {"BOTCTL_HOME": str(seed_home)}
        # cold: each run a fresh interpreter with a hash seed of its own (a warm child shares the server's)
        assert botctl("run", "--seed", "11", "--duration", "300", env=env, cold=True).returncode == 0
        rows = json.loads(botctl("history", "--limit", "1000", "--json", env=env).stdout)
        return [(r["side"], r["chain"], r["token"], r["amount"], r["price"], r["tx_id"]) for r in rows]

    first, second = trades(tmp_path / "a"), trades(tmp_path / "b")
    assert first and first == second


def test_read_commands_do_not_import_heavy_libraries(home, botctl, ran):
    code = (
        "import contextlib, io, sys\n"
        "from console.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    rc = [main(args.split()) for args in ('status --json', 'status', 'nonces', 'positions --all',"
        " 'reservations', 'history', 'rollout status', 'config show')]\n"
        "heavy = sorted(m for m in ('web3', 'solana', 'solders', 'textual', 'eth_account', 'aiohttp')"
        " if m in sys.modules)\n"
        "print('HEAVY', heavy, sorted(set(rc)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env["BOTCTL_HOME"] = str(home)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "HEAVY [] [0]" in result.stdout, result.stdout + result.stderr


def venue_height(home) -> int:
    """The paper venue's block height as committed (0 before it exists)."""
    try:
        conn = sqlite3.connect(f"file:{home / 'paper-venue.db'}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT value FROM meta WHERE key = 'height'").fetchone()[0])
        finally:
            conn.close()
    except (sqlite3.Error, TypeError):
        return 0


def test_ctrl_c_stops_cleanly_and_the_book_stays_audited(home, tmp_path):
    import signal
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "200"})
    proc = terminal.spawn(["run"], env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while venue_height(home) < 100:  # a hundred blocks into the run
        assert time.monotonic() < deadline and proc.poll() is None, "the engine never got going"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped:" in err and "Traceback" not in err
    audit = terminal.run(["audit"], env, cwd=tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr


def test_two_runs_on_one_home_exactly_one_runs(home, tmp_path, botctl):
    import time

    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "50"})
    first = terminal.spawn(["run", "--duration", "300"], env, cwd=tmp_path, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (home / "paper-venue.db").exists():
            time.sleep(0.05)
        second = botctl("run", "--duration", "5")
        assert second.returncode == 1
        line = one_error_line(second)
        assert f"pid {first.pid}" in line and "botctl run" in line
        status = json.loads(botctl("status", "--json").stdout)
        assert status["owner"]["pid"] == first.pid
    finally:
        first.kill()
        first.wait()
    # A lock left by a killed process never blocks a restart.
    again = botctl("run", "--duration", "5")
    assert again.returncode == 0, again.stderr
    assert json.loads(botctl("status", "--json").stdout)["owner"] is None
