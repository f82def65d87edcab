"""Operator commands are decided now or refused, never later; nothing reports success that did not happen.

Each case runs the real CLI as subprocesses (concurrent where the case is concurrent) and ends
with `botctl audit` clean.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

import terminal
from clikit import env_for

pytestmark = pytest.mark.slow

REFUSE_ALL = {"BOTCTL_PAPER__FAIL_RATE_BPS": "10000"}  # the paper node refuses every broadcast


def cli(home: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return terminal.run(args, env_for(home, **extra))


def spawn(home: Path, *args: str, **extra: str) -> subprocess.Popen:
    return terminal.spawn(args, env_for(home, **extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows(home: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(home / "botctl.db")
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def status(home: Path) -> dict:
    return json.loads(cli(home, "status", "--json").stdout)


def open_ids(home: Path) -> list[int]:
    return [p["id"] for p in json.loads(cli(home, "positions", "--json").stdout) if p["state"] == "open"]


def audit_clean(home: Path) -> None:
    result = cli(home, "audit")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def traded(tmp_path, prepared) -> Path:
    """A home whose book holds open positions and no owner (`run --seed 4 --duration 150`, made once)."""
    def make(path: Path) -> None:
        assert cli(path, "run", "--seed", "4", "--duration", "150").returncode == 0

    home = prepared(tmp_path / "home", "seed 4, 150 blocks, no automatic exits", make)
    assert len(open_ids(home)) >= 3
    return home


def test_concurrent_closes_and_a_halt_with_no_engine_are_all_decided_and_none_runs_later(traded):
    home = traded
    targets = open_ids(home)[:3]
    procs = [spawn(home, "close", str(targets[i % len(targets)]), "--yes", "--timeout", "30") for i in range(8)]
    procs.append(spawn(home, "halt", "--timeout", "30"))
    results = [(p.wait(timeout=120), p.stdout.read(), p.stderr.read()) for p in procs]
    for code, out, err in results:
        assert "Traceback" not in err, err
        assert "not decided" not in err and "withdrawn" not in err, err
        assert code in (0, 1), (code, out, err)
    closes = results[:8]
    assert sum(1 for code, _o, _e in closes if code == 0) == len(targets), closes  # each position sold once
    for code, _out, err in closes:
        if code == 1:
            assert "already clos" in err, err
    assert results[8][0] == 0, results[8]
    assert rows(home, "SELECT count(*) FROM inbox WHERE state IN ('pending', 'taken')") == [(0,)]
    assert status(home)["trading_state"] == "halted"
    states = {p["id"]: p["state"] for p in json.loads(cli(home, "positions", "--all", "--json").stdout)}
    assert all(states[t] == "closed" for t in targets)
    before = rows(home, "SELECT count(*) FROM journal")[0][0]
    assert cli(home, "resume", "--force").returncode == 0  # nothing stale runs at the next start
    after_resume = rows(home, "SELECT kind FROM journal WHERE seq > ?".replace("?", str(before)))
    assert not [k for (k,) in after_resume if k in ("CloseRequested", "CloseDenied")], after_resume
    audit_clean(home)


def test_a_command_posted_while_nobody_owns_the_book_is_decided_by_the_next_one_off(traded):
    home = traded
    queued = cli(home, "pause", "--no-wait", "--json")  # nobody owns the book: it waits in the inbox
    assert queued.returncode == 0 and json.loads(queued.stdout)["state"] == "pending"
    target = open_ids(home)[0]
    result = cli(home, "close", str(target), "--yes")
    assert result.returncode == 0, result.stderr
    assert rows(home, "SELECT state FROM inbox ORDER BY id") == [("done",), ("done",)]
    assert status(home)["trading_state"] == "reducing"
    audit_clean(home)


@pytest.fixture
def stopped_engine(traded):
    """`botctl run` owning the book, frozen with SIGSTOP: it holds the lock and decides nothing."""
    proc = terminal.spawn(["run"], env_for(traded, BOTCTL_PAPER__SPEED="20"), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while status(traded)["owner"] is None:
            assert time.monotonic() < deadline and proc.poll() is None, "engine did not start"
            time.sleep(0.05)
        for _ in range(50):  # frozen between commits: a process frozen mid-commit would hold the write lock too
            proc.send_signal(signal.SIGSTOP)
            time.sleep(0.05)
            probe = sqlite3.connect(traded / "botctl.db", isolation_level=None, timeout=0.2)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                break
            except sqlite3.OperationalError:
                proc.send_signal(signal.SIGCONT)
                time.sleep(0.03)
            finally:
                probe.close()
        else:
            pytest.fail("the engine never stopped between two commits")
    except BaseException:  # no engine left behind, frozen or running, when the setup fails
        proc.kill()
        proc.wait(timeout=30)
        raise
    yield traded, proc
    proc.send_signal(signal.SIGCONT)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)


def test_a_sender_that_gives_up_withdraws_its_command_and_it_never_runs(stopped_engine):
    home, proc = stopped_engine
    result = cli(home, "pause", "--timeout", "1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "withdrawn, it will not run" in result.stderr, result.stderr
    assert rows(home, "SELECT command, state FROM inbox ORDER BY id DESC LIMIT 1") == [("pause", "withdrawn")]
    proc.send_signal(signal.SIGCONT)  # the owner wakes: the withdrawn row is not decided
    # A command posted now is answered from the owner's next look at the inbox, which takes the rows
    # still open in the order they were posted: the withdrawn one first, were it open.
    probe = cli(home, "rollout", "attest", "logs", "--yes")
    assert probe.returncode == 0, probe.stderr
    assert rows(home, "SELECT command, state FROM inbox ORDER BY id DESC LIMIT 2") == [
        ("attest", "done"), ("pause", "withdrawn")]
    assert status(home)["trading_state"] == "active"


def test_a_halt_that_times_out_stays_queued_and_is_applied(stopped_engine):
    home, proc = stopped_engine
    result = cli(home, "halt", "--timeout", "1")
    assert result.returncode == 1
    assert "stays queued" in result.stderr and "Traceback" not in result.stderr, result.stderr
    proc.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 20
    while status(home)["trading_state"] != "halted":
        assert time.monotonic() < deadline, "the queued halt was lost"
        time.sleep(0.1)


def test_halt_and_pause_when_already_so_succeed(traded):
    home = traded
    assert cli(home, "pause").returncode == 0
    again = cli(home, "pause")
    assert again.returncode == 0 and "already paused" in again.stdout, again.stdout + again.stderr
    assert cli(home, "halt").returncode == 0
    again = cli(home, "halt")
    assert again.returncode == 0 and "already halted" in again.stdout, again.stdout + again.stderr
    assert status(home)["trading_state"] == "halted"
    audit_clean(home)


def test_a_close_whose_exits_all_fail_exits_1_naming_the_position_and_each_close_gets_a_fresh_budget(traded):
    home = traded
    target = open_ids(home)[0]
    first = cli(home, "close", str(target), "--yes", **REFUSE_ALL)
    assert first.returncode == 1, first.stdout + first.stderr
    assert f"position {target} is still" in first.stderr and "Traceback" not in first.stderr, first.stderr
    tried = rows(home, f"SELECT count(*) FROM orders WHERE intent = 'exit' AND position_id = {target}")[0][0]
    assert tried >= 2
    state = {p["id"]: p for p in json.loads(cli(home, "positions", "--json").stdout)}[target]["state"]
    if state == "open":  # the exit gave up: a new request tries again, with the whole budget
        assert "its exit failed after" in first.stderr
        second = cli(home, "close", str(target), "--yes", **REFUSE_ALL)
        assert second.returncode == 1 and f"position {target} is still" in second.stderr, second.stderr
        again = rows(home, f"SELECT count(*) FROM orders WHERE intent = 'exit' AND position_id = {target}")[0][0]
        assert again - tried > 1, (tried, again)  # not the single attempt an exhausted counter allowed
    final = cli(home, "close", str(target), "--yes") if state == "open" else None
    assert final is None or final.returncode == 0, final.stderr
    audit_clean(home)


def test_halt_close_all_with_every_exit_failing_names_each_position_still_open(traded):
    home = traded
    ids = open_ids(home)
    result = cli(home, "halt", "--close-all", "--json", **REFUSE_ALL)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert sorted(p["id"] for p in report["positions"]) == sorted(ids)
    for p in report["positions"]:
        assert p["state"] != "closed" and p["why"].startswith(f"position {p['id']} is still"), p
    assert f"{len(ids)} of {len(ids)} positions not closed" in result.stderr
    audit_clean(home)


def test_a_node_refusing_every_broadcast_costs_a_bounded_number_of_orders(tmp_path):
    home = tmp_path / "home"
    result = cli(home, "run", "--seed", "5", "--duration", "400", **REFUSE_ALL)
    assert result.returncode == 0, result.stderr
    [(orders,)] = rows(home, "SELECT count(*) FROM orders")
    [(noops,)] = rows(home, "SELECT count(*) FROM orders WHERE intent = 'noop'")
    assert orders < 80 and noops < 40, (orders, noops)  # was 18,143 orders (32 MB) before pacing
    assert (home / "botctl.db").stat().st_size < 1_000_000
    gaps = rows(home, "SELECT count(DISTINCT nonce) FROM orders WHERE intent = 'noop'")[0][0]
    assert gaps <= 10, gaps  # a gap is refilled at its own nonce, not at a fresh one
    text = cli(home, "status").stdout
    assert "rejection breaker" in text, text
    tripped = rows(home, "SELECT count(*) FROM journal WHERE kind = 'BreakerTripped'")[0][0]
    assert tripped >= 1
    denied = rows(home, "SELECT data FROM journal WHERE kind = 'EntryDenied' ORDER BY seq DESC LIMIT 1")
    assert denied and "rejection breaker" in denied[0][0]
    audit_clean(home)
    resumed = cli(home, "resume")
    assert resumed.returncode == 0 and "rejection breaker" in resumed.stdout, resumed.stdout
    assert "rejection breaker" not in cli(home, "status").stdout


def test_a_tripped_breaker_re_arms_by_itself_once_the_node_takes_transactions_again(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "run", "--seed", "5", "--duration", "300", **REFUSE_ALL).returncode == 0
    assert cli(home, "status").stdout.count("rejection breaker") == 2  # base (EVM) and solana
    before = rows(home, "SELECT chain, count(*) FROM reservations WHERE kind = 'entry' GROUP BY chain")
    assert cli(home, "run", "--seed", "5", "--duration", "700").returncode == 0  # the node is back; no resume
    assert "rejection breaker" not in cli(home, "status").stdout
    after = dict(rows(home, "SELECT chain, count(*) FROM reservations WHERE kind = 'entry' GROUP BY chain"))
    assert after["solana"] > dict(before).get("solana", 0)  # no no-ops there: a probe entry showed it is back
    audit_clean(home)


@pytest.mark.parametrize("delay", [0.0, 0.3, 0.8])
def test_an_interrupted_one_off_answers_every_row_it_took_and_nothing_runs_later(traded, delay):
    home = traded
    proc = spawn(home, "close", "--all", "--timeout", "30")
    deadline = time.monotonic() + 60
    while not (home / "botctl.db").exists() or not rows(home, "SELECT count(*) FROM inbox")[0][0]:
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.01)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=120)
    err = proc.stderr.read()
    assert "Traceback" not in err and code in (0, 1, 130, -signal.SIGINT), (code, err)  # -2: it was exiting
    assert rows(home, "SELECT count(*) FROM inbox WHERE state IN ('pending', 'taken')") == [(0,)]
    [(state,)] = rows(home, "SELECT state FROM inbox")
    if state == "withdrawn":
        assert "withdrawn, it will not run" in err, err
    last = rows(home, "SELECT max(seq) FROM journal")[0][0]
    assert cli(home, "pause").returncode == 0  # the next owner carries out nothing stale
    later = rows(home, f"SELECT data FROM journal WHERE kind = 'CloseRequested' AND seq > {last}")
    asked = [json.loads(data)["by"] for (data,) in later]
    assert set(asked) <= {"retry", "engine"}, asked  # an exit already requested may go on; no new request
    audit_clean(home)


def test_a_sender_that_cannot_withdraw_says_its_command_may_still_run(stopped_engine):
    home, proc = stopped_engine
    before = rows(home, "SELECT count(*) FROM inbox")[0][0]
    sender = spawn(home, "pause", "--timeout", "2", BOTCTL_LOCK_WAIT_S="2")  # 10 s unless told
    deadline = time.monotonic() + 60
    while rows(home, "SELECT count(*) FROM inbox")[0][0] == before:  # posted: now it waits for an answer
        assert time.monotonic() < deadline and sender.poll() is None, sender.communicate()
        time.sleep(0.01)
    holder = sqlite3.connect(home / "botctl.db", isolation_level=None, timeout=30)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the sender's wait
    try:
        code = sender.wait(timeout=60)
        err = sender.stderr.read()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert code == 1 and "could not be withdrawn" in err and "may still run" in err, (code, err)
    assert "for over 2s" in err, err  # BOTCTL_LOCK_WAIT_S, not the default 10 s
    assert err.count("\n") == 1 and "Traceback" not in err, err


def test_an_automatic_exit_the_node_keeps_refusing_stops_after_its_budget_and_waits_for_the_operator(traded):
    """Every position is past its max hold and the node refuses every broadcast: each automatic exit
    is tried MAX_EXIT_ATTEMPTS times and then left to the operator, not retried for ever (gas, and a
    book that grows by an order a block)."""
    from engine.core.book import MAX_EXIT_ATTEMPTS

    home = traded
    ids = open_ids(home)
    result = cli(home, "run", "--duration", "600", BOTCTL_MAX_HOLD_S="1", **REFUSE_ALL)
    assert result.returncode == 0, result.stderr
    tried = dict(rows(home, "SELECT position_id, count(*) FROM orders WHERE intent = 'exit' GROUP BY position_id"))
    assert set(tried) == set(ids), tried  # every one was due and tried
    assert all(count == MAX_EXIT_ATTEMPTS for count in tried.values()), tried  # used up, and no more
    assert sorted(open_ids(home)) == sorted(ids), "still open, for the operator"
    again = cli(home, "run", "--duration", "300", BOTCTL_MAX_HOLD_S="1", **REFUSE_ALL)
    assert again.returncode == 0, again.stderr
    assert dict(rows(home, "SELECT position_id, count(*) FROM orders WHERE intent = 'exit' GROUP BY position_id")) \
        == tried, "a restart does not start the budget again"
    audit_clean(home)
