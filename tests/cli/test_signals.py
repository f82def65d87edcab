"""`botctl run --signals`: whatever a line holds, the engine keeps running; a bad line is skipped
with its number in the log, the good lines around it are taken once, and the book stays audited."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import terminal
from clikit import env_for

pytestmark = pytest.mark.slow


def cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    return terminal.run(args, env_for(home), cwd=home.parent, text=False)


def signal_line(ident: str, chain: str, token: str, **extra) -> bytes:
    return json.dumps({"id": ident, "chain": chain, "token": token, **extra}).encode()


TOKENS = [("solana", "BONK"), ("solana", "WIF"), ("solana", "JUP"), ("solana", "PYTH"),
          ("base", "DEGEN"), ("base", "BRETT"), ("base", "TOSHI"), ("base", "AERO")]

# Lines from the review that stopped the engine (and every restart), with the reason logged for each.
BAD = [
    (b'{"id": "b-digits", "chain": "base", "token": "AERO", "size": ' + b"1" * 4400 + b"}",
     "larger than any amount"),
    (b'{"id": "b-ttl", "chain": "base", "token": "AERO", "at": "2026-01-01T00:00:00Z", "ttl_s": 1e400}',
     "ttl_s must be from 0 to"),
    (b"[" * 100_000, "longer than 8192 bytes"),
    (b"[" * 5_000, "nested deeper than 16 levels"),
    (b'{"id": "b-year1", "chain": "base", "token": "AERO", "at": "0001-01-01T00:00:00", "ttl_s": 30}',
     "at needs a time zone"),
    (b'{"id": "u\xff\xfe", "chain": "base", "token": "AERO"}', "not valid UTF-8"),
    (b'{"id": "u\\udcff", "chain": "base", "token": "AERO"}', "printable characters"),
    (b'{"id": "b-nan", "chain": "base", "token": "AERO", "size": NaN}', "NaN is not a number"),
    (b"not json at all", "not JSON"),
]


def table(first: list[bytes] = ()) -> tuple[bytes, list[str], dict[int, str]]:
    """`first`, then one good line per token with the bad lines between them: the bytes, the good ids,
    {line number: reason}."""
    lines, good, bad = list(first), [], {}
    waiting = list(BAD)
    for i, (chain, token) in enumerate(TOKENS):
        for line, reason in waiting[: (len(BAD) - len(TOKENS) + 2 if i == 1 else 1 if i else 0)]:
            lines.append(line)
            bad[len(lines)] = reason
            waiting.remove((line, reason))
        lines.append(signal_line(f"good-{i}", chain, token, size="20"))
        good.append(f"good-{i}")
    assert not waiting
    return b"\n".join(lines), good, bad


def query(home: Path, sql: str, *args) -> list[tuple]:
    """Rows from the book, read-only; none while the engine is still creating it."""
    try:
        conn = sqlite3.connect(f"file:{home / 'botctl.db'}?mode=ro", uri=True)
    except sqlite3.OperationalError:
        return []
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        conn.close()


def taken(home: Path) -> dict[str, int]:
    """Signal id -> its reservation (0: decided and refused by the rules)."""
    return dict(query(home, "SELECT id, reservation_id FROM signals"))


def journal(home: Path, kind: str) -> list[dict]:
    return [json.loads(d) for (d,) in query(home, "SELECT data FROM journal WHERE kind = ? ORDER BY seq", kind)]


def log_records(home: Path) -> list[dict]:
    path = home / "logs" / "botctl.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def skipped(home: Path) -> list[tuple[int, str]]:
    return [(r["line"], r["reason"]) for r in log_records(home)
            if r["logger"] == "botctl.signals" and r["msg"].startswith("signal line")]


def wait_for(condition, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def clean(result_stderr: bytes | str) -> None:
    text = result_stderr.decode(errors="replace") if isinstance(result_stderr, bytes) else result_stderr
    assert "Traceback" not in text and "Exception in thread" not in text, text


def assert_taken_once(home: Path, good: list[str]) -> None:
    reserved = [e["signal_id"] for e in journal(home, "EntryReserved")]
    assert sorted(reserved) == sorted(good), "every good line reserved, and once"
    assert all(taken(home)[ident] > 0 for ident in good)


def audit_clean(home: Path) -> None:
    audit = cli(home, "audit")
    assert audit.returncode == 0 and b"audit clean" in audit.stdout, audit.stdout + audit.stderr


def test_a_file_of_bad_lines_skips_each_by_number_and_takes_the_good_ones_once(tmp_path):
    home, path = tmp_path / "home", tmp_path / "signals.jsonl"
    # First, sizes that parse but that the rules refuse (each token still free): dust below
    # min_position_usd (1), and a size beyond every ceiling.
    refused = [signal_line(f"dust-{i}", chain, token, size="0.01") for i, (chain, token) in enumerate(TOKENS[:7])]
    refused.append(signal_line("huge", *TOKENS[7], size="1e30"))
    data, good, bad = table(refused)
    path.write_bytes(data + b"\n")
    run = cli(home, "run", "--signals", str(path), "--duration", "30")
    assert run.returncode == 0, run.stderr
    clean(run.stderr)
    assert b"stopped: 30 blocks" in run.stderr, "the engine ran to the end"
    logged = dict(skipped(home))
    assert sorted(logged) == sorted(bad)
    for number, reason in bad.items():
        assert reason in logged[number], (number, logged[number])
    assert_taken_once(home, good)
    reasons = {e["signal_id"]: e["reason"] for e in journal(home, "EntryDenied")}
    assert set(reasons) == {f"dust-{i}" for i in range(7)} | {"huge"}
    assert all("is below the minimum position 1" in reasons[f"dust-{i}"] for i in range(7))
    assert "exceeds max position" in reasons["huge"]
    assert set(taken(home)) == set(good) | set(reasons), "no bad line reached the book"

    again = cli(home, "run", "--signals", str(path), "--duration", "10")  # a restart reads the same lines
    assert again.returncode == 0, again.stderr
    clean(again.stderr)
    assert len(skipped(home)) == 2 * len(bad), "skipped again, never fatal"
    assert_taken_once(home, good)
    audit_clean(home)


def start(home: Path, signals: str, **extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "console.cli", "run", "--signals", signals],
                            env=env_for(home, BOTCTL_PAPER__SPEED="50", **extra), cwd=home.parent,
                            stdin=subprocess.PIPE if signals == "-" else subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(proc: subprocess.Popen) -> None:
    if proc.stdin is not None:
        proc.stdin.close()
        proc.stdin = None  # closed already: nothing for communicate() to flush
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    clean(err)
    assert b"stopped:" in err


def test_stdin_of_bad_lines_skips_each_by_number_and_reads_its_unfinished_last_line_at_the_end(tmp_path):
    home = tmp_path / "home"
    data, good, bad = table()
    last = len(data.split(b"\n")) + 1
    bad[last] = "not JSON"
    proc = start(home, "-")
    try:
        proc.stdin.write(data + b'\n{"id": "cut", "chain": "base"')  # no newline: read when stdin closes
        proc.stdin.close()
        wait_for(lambda: set(good) <= set(taken(home)) and last in dict(skipped(home)))
    finally:
        stop(proc)
    logged = dict(skipped(home))
    assert sorted(logged) == sorted(bad)
    for number, reason in bad.items():
        assert reason in logged[number], (number, logged[number])
    assert_taken_once(home, good)
    audit_clean(home)


def test_a_closed_stdin_ends_the_signals_not_the_engine(tmp_path):
    home = tmp_path / "home"
    run = subprocess.run([sys.executable, "-m", "console.cli", "run", "--signals", "-", "--duration", "10"],
                         env=env_for(home), cwd=tmp_path, capture_output=True, timeout=120,
                         preexec_fn=lambda: os.close(0))
    assert run.returncode == 0, run.stderr
    clean(run.stderr)
    assert b"stopped: 10 blocks" in run.stderr
    assert any("stdin is closed" in r["msg"] for r in log_records(home))


def test_a_moved_file_is_followed_by_name_and_no_line_is_lost_or_taken_twice(tmp_path):
    home, path = tmp_path / "home", tmp_path / "signals.jsonl"
    path.write_bytes(signal_line("a1", *TOKENS[0]) + b"\n")
    proc = start(home, str(path))
    try:
        wait_for(lambda: "a1" in taken(home))
        with open(path, "ab") as writer:  # a writer that keeps its file open across the move
            writer.write(signal_line("a2", *TOKENS[1]) + b"\n")
            writer.flush()
            os.rename(path, tmp_path / "signals.jsonl.1")
            writer.write(signal_line("a3", *TOKENS[2]) + b"\n")
        new = b"\n".join(signal_line(f"b{i}", *TOKENS[3 + i]) for i in range(3))
        path.write_bytes(new[:-10])  # the third line arrives in two writes
        wait_for(lambda: {"a2", "a3", "b0", "b1"} <= set(taken(home)))
        with open(path, "ab") as writer:
            writer.write(new[-10:])  # no newline: a whole object is taken without one
        wait_for(lambda: "b2" in taken(home))
        with open(path, "ab") as writer:
            writer.write(b"\n" + signal_line("a1", *TOKENS[0]) + b"\n")  # an id taken before
        wait_for(lambda: len(journal(home, "EntryDenied")) == 1)
    finally:
        stop(proc)
    assert any("was replaced" in r["msg"] for r in log_records(home))
    assert skipped(home) == [], "no line arrived as a fragment"
    assert_taken_once(home, ["a1", "a2", "a3", "b0", "b1", "b2"])
    assert "already taken" in journal(home, "EntryDenied")[0]["reason"]
    audit_clean(home)


def test_a_truncated_file_is_noticed_logged_and_read_again_from_its_start(tmp_path):
    home, path = tmp_path / "home", tmp_path / "signals.jsonl"
    path.write_bytes(signal_line("a1", *TOKENS[0]) + b"\n" + signal_line("a2", *TOKENS[1]) + b"\n")
    proc = start(home, str(path))
    try:
        wait_for(lambda: {"a1", "a2"} <= set(taken(home)))
        path.write_bytes(b"")
        wait_for(lambda: any("was truncated" in r["msg"] for r in log_records(home)))
        path.write_bytes(signal_line("a2", *TOKENS[1]) + b"\n" + signal_line("b1", *TOKENS[2]) + b"\n")
        wait_for(lambda: "b1" in taken(home) and journal(home, "EntryDenied"))
    finally:
        stop(proc)
    assert skipped(home) == []
    assert_taken_once(home, ["a1", "a2", "b1"])
    [denied] = journal(home, "EntryDenied")
    assert denied["signal_id"] == "a2" and "already taken" in denied["reason"]
    audit_clean(home)


# --------------------------------------------------------------------------- a FIFO is a stream


def write_fifo(path: Path, data: bytes, seconds: float = 30.0) -> None:
    """One writer: opens the FIFO as soon as the engine has it open for reading (never blocking
    the test on an engine that does not), writes, closes."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:  # ENXIO: no reader yet
            assert time.monotonic() < deadline, "the engine never opened the FIFO for reading"
            time.sleep(0.05)
    try:
        os.set_blocking(fd, True)
        os.write(fd, data)
    finally:
        os.close(fd)


def test_a_fifo_is_read_as_a_stream_one_writer_after_another(tmp_path):
    home, fifo = tmp_path / "home", tmp_path / "signals.fifo"
    os.mkfifo(fifo)
    proc = start(home, str(fifo))
    try:
        write_fifo(fifo, signal_line("f1", *TOKENS[1], size="10") + b"\n")
        wait_for(lambda: "f1" in taken(home))
        # the next writer; its unfinished last line is a line when it closes the FIFO
        write_fifo(fifo, signal_line("f2", *TOKENS[2]) + b'\n{"id": "cut", "chain": "base"')
        wait_for(lambda: "f2" in taken(home) and 3 in dict(skipped(home)))
    finally:
        stop(proc)
    assert not any("Illegal seek" in r["msg"] for r in log_records(home))
    logged = dict(skipped(home))
    assert list(logged) == [3] and "not JSON" in logged[3], "line numbers run on from writer to writer"
    assert_taken_once(home, ["f1", "f2"])
    audit_clean(home)


def test_a_fifo_nobody_writes_to_never_blocks_the_engine(tmp_path):
    home, fifo = tmp_path / "home", tmp_path / "signals.fifo"
    os.mkfifo(fifo)
    run = cli(home, "run", "--signals", str(fifo), "--duration", "10")
    assert run.returncode == 0, run.stderr
    clean(run.stderr)
    assert b"stopped: 10 blocks" in run.stderr


# --------------------------------------------------------------------------- strict fields


def test_duplicate_keys_and_non_ascii_numbers_are_refused_with_the_key_named(tmp_path):
    home, path = tmp_path / "home", tmp_path / "signals.jsonl"
    lines = {  # line number: (line, reason); every one of these was taken as something else before
        1: (b'{"id": "d-size", "chain": "solana", "token": "WIF", "size": "25.00", "size": null}',
            "duplicate key 'size'"),
        2: (b'{"id": "d-chain", "chain": "solana", "token": "AERO", "chain": "base"}', "duplicate key 'chain'"),
        3: (b'{"id": "u-size", "chain": "solana", "token": "WIF", "size": "25_000"}', "not a decimal amount"),
        4: ('{"id": "w-size", "chain": "solana", "token": "WIF", "size": "２５"}'.encode(), "not a decimal amount"),
        5: ('{"id": "a-size", "chain": "solana", "token": "WIF", "size": "٢٥"}'.encode(), "not a decimal amount"),
        6: (b'{"id": "u-ttl", "chain": "solana", "token": "WIF", "at": "2000-01-01T00:00:00Z", "ttl_s": "1_0"}',
            "ttl_s must be a number"),
    }
    good = signal_line("ok", *TOKENS[1], size="1e1", at="2020-01-01T00:00:00Z", ttl_s="1e9")
    path.write_bytes(b"\n".join(line for line, _reason in lines.values()) + b"\n" + good + b"\n")
    run = cli(home, "run", "--signals", str(path), "--duration", "10")
    assert run.returncode == 0, run.stderr
    clean(run.stderr)
    logged = dict(skipped(home))
    assert sorted(logged) == sorted(lines)
    for number, (_line, reason) in lines.items():
        assert reason in logged[number], (number, logged[number])
    assert_taken_once(home, ["ok"])
    assert set(taken(home)) == {"ok"}, "no refused line reached the book"
    audit_clean(home)
