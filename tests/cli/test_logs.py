"""The log an operator reads (and attests to having read): what a paper run writes there, what
`botctl logs` shows of it, and a log file that cannot be written."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

import terminal

pytestmark = pytest.mark.slow

KEY = "KEY0123456789abcdef"
URL = f"https://base-rpc.example.com/v2/{KEY}"
SECRETS = {
    "BOTCTL_EVM_PASSWORD": "hunter2-keystore-pw",
    "BOTCTL_JUPITER_API_KEY": "jup-api-key-987654",
    "BOTCTL_CHAINS__BASE__KIND": "evm",
    "BOTCTL_CHAINS__BASE__RPC_URL": URL,
}


def log_lines(home: Path) -> list[dict]:
    return [json.loads(line) for line in (home / "logs" / "botctl.log").read_text().splitlines()]


def life(lines: list[dict], **ids) -> list[str]:
    return [line["event"] for line in lines if all(line.get(k) == v for k, v in ids.items())]


def test_a_paper_runs_log_holds_each_orders_whole_life_in_order_and_no_secret(botctl, home):
    env = {**SECRETS, "BOTCTL_MAX_HOLD_S": "10"}
    run = botctl("run", "--seed", "1", "--duration", "40", env=env)
    assert run.returncode == 0, run.stderr
    # an operator pastes the endpoint into a reason: the log masks it like any other secret
    halted = botctl("halt", "--reason", f"moving to {URL}", env=env)
    assert halted.returncode == 0, halted.stderr
    lines = log_lines(home)
    assert [line["at"] for line in lines] == sorted(line["at"] for line in lines)

    failed = [line for line in lines if line.get("event") == "OrderFailed" and "slippage" in line["reason"]
              and life(lines, order=line["order"])[0] == "EntryReserved"]
    assert failed, "seed 1 fails an entry on slippage within 40 blocks"
    order = failed[0]["order"]
    assert life(lines, order=order) == ["EntryReserved", "OrderSigned", "OrderSubmitted", "OrderFailed"]
    about = [line for line in lines if line.get("order") == order]
    assert {(line["chain"], line["token"]) for line in about} == {(about[0]["chain"], about[0]["token"])}
    assert about[0]["signal"] and all(line["tx"] == about[1]["tx"] for line in about[1:])
    assert failed[0]["level"] == "warning" and "its reservation is released" in failed[0]["msg"]

    closed = next(line for line in lines if line.get("event") == "PositionClosed")
    shown = botctl("logs", "--position", str(closed["position"]), "--json")
    events = [json.loads(line)["event"] for line in shown.stdout.splitlines()]
    assert events[:5] == ["EntryReserved", "OrderSigned", "OrderSubmitted", "OrderFilled", "PositionOpened"]
    assert events[5] == "CloseRequested" and events[-2:] == ["OrderFilled", "PositionClosed"], events
    assert "pnl " in closed["msg"] and "(max-hold)" in closed["msg"]

    answer = next(line for line in lines if line.get("event") == "InboxAnswered")
    assert answer["command"] >= 1 and "pid" in answer["by"] and "done" in answer["msg"]
    assert any(line.get("event") == "TradingStateChanged" and "moving to ********" in line["msg"] for line in lines)
    assert [line["event"] for line in lines if line["event"] in ("PricesMarked", "Heartbeat")] == []

    written = "".join(path.read_text() for path in (home / "logs").iterdir())
    for secret in (SECRETS["BOTCTL_EVM_PASSWORD"], SECRETS["BOTCTL_JUPITER_API_KEY"], KEY, URL):
        assert secret not in written
    assert botctl("audit").returncode == 0


def test_logs_shows_an_orders_life_readably(botctl, home):
    assert botctl("run", "--seed", "1", "--duration", "20").returncode == 0
    failed = next(line for line in log_lines(home) if line.get("event") == "OrderFailed")
    shown = botctl("logs", "--order", str(failed["order"]))
    assert shown.returncode == 0, shown.stderr
    rows = shown.stdout.splitlines()
    assert len(rows) == 4 and not any(row.lstrip().startswith("{") for row in rows)
    for row, words in zip(rows, ["INFO", "INFO", "INFO", "WARNING"]):
        assert f"  {words} " in row and f"order {failed['order']}: " in row
    assert "entry reserved" in rows[0] and "signed as tx" in rows[1] and "broadcast" in rows[2]
    assert "failed: slippage tolerance exceeded" in rows[3]
    tail = botctl("logs", "-n", "3")
    assert len(tail.stdout.splitlines()) == 3
    assert botctl("logs", "--order", "1", "--position", "1").returncode == 2


def test_logs_without_a_log_says_so(botctl, home):
    result = botctl("logs")
    assert result.returncode == 1 and result.stderr.startswith("error: no log at ")


def env_for(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0"}, **extra)
    return env


def read_to_its_end(pid: int, path: Path) -> bool:
    """The process `pid` holds `path` open, read to its end (Linux's /proc; elsewhere: half a second)."""
    if not os.path.isdir("/proc/self/fdinfo"):
        time.sleep(0.5)
        return True
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                    position = int(next(line for line in info if line.startswith("pos:")).split()[1])
                return position == path.stat().st_size
    except (OSError, StopIteration):  # not started yet, or a descriptor closed meanwhile
        pass
    return False


def test_logs_follow_shows_lines_as_they_are_written_until_ctrl_c(botctl, home, tmp_path):
    assert botctl("run", "--seed", "2", "--duration", "3").returncode == 0
    follower = terminal.spawn(["logs", "-f", "--json", "-n", "0"], env_for(home), cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [seen.put(line) for line in follower.stdout], daemon=True).start()
    try:
        deadline = time.monotonic() + 20
        while not read_to_its_end(follower.pid, home / "logs" / "botctl.log"):  # only new lines follow
            assert time.monotonic() < deadline and follower.poll() is None, "the follower never reached the end"
            time.sleep(0.02)
        assert botctl("run", "--duration", "3").returncode == 0
        deadline = time.monotonic() + 20
        events = []
        while "RunStarted" not in events:
            assert time.monotonic() < deadline, f"the follower showed {events}"
            try:
                events.append(json.loads(seen.get(timeout=1))["event"])
            except queue.Empty:
                continue
        assert events[0] == "Deposited" or events[0] == "Reconciled", events  # only new lines (-n 0)
    finally:
        follower.send_signal(signal.SIGINT)
        _out, err = follower.communicate(timeout=10)
    assert follower.returncode == 0 and err == "", err


def test_a_log_file_that_cannot_be_written_never_prints_a_traceback(botctl, home):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    (home / "logs").mkdir(parents=True, mode=0o700)
    home.chmod(0o700)
    (home / "logs" / "botctl.log").symlink_to("/dev/full")  # every write: "No space left on device"
    result = botctl("run", "--seed", "1", "--duration", "20")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Logging error" not in result.stderr, result.stderr
    told = [line for line in result.stderr.splitlines() if "cannot write the log" in line]
    assert told == [f"botctl: cannot write the log {home / 'logs' / 'botctl.log'}: No space left on device; log "
                    "lines are dropped until it can be written (the book is not affected)"]
    assert botctl("audit").returncode == 0


def test_the_log_level_comes_from_botctl_log_level(botctl, home):
    bad = botctl("run", "--duration", "1", env={"BOTCTL_LOG_LEVEL": "loud"})
    assert bad.returncode == 2 and bad.stderr.startswith("error: BOTCTL_LOG_LEVEL: 'loud' is not a level")
    assert botctl("run", "--seed", "3", "--duration", "3", env={"BOTCTL_LOG_LEVEL": "debug"}).returncode == 0
    assert {"PricesMarked", "RunStarted"} <= {line["event"] for line in log_lines(home) if "event" in line}
    before = len(log_lines(home))
    assert botctl("run", "--duration", "3", env={"BOTCTL_LOG_LEVEL": "warning"}).returncode == 0
    assert all(line["level"] in ("warning", "error") for line in log_lines(home)[before:])
