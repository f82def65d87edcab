"""Signals from a file or stdin: any bytes on a line are skipped with a reason, never fatal; files
are followed by name through rotation and truncation; a last line without a newline is taken."""

from __future__ import annotations

import io
import logging
import os
import sys
import time
from pathlib import Path

import pytest

from engine.core.decider import decide
from engine.core.messages import EntryDenied
from engine.core.money import parse_amount
from engine.sources import AFTER_TAKEN, MAX_LINE_BYTES, OVERLONG, JsonlSource, Lines
from engine.venues.paper.market import CHAINS

from builders import funded, given, reserve, usd

NOW = 1_800_000_000_000


def good(ident: str, token: str = "WIF", chain: str = "solana", **extra) -> bytes:
    fields = {"id": ident, "chain": chain, "token": token, **extra}
    return ("{" + ", ".join(f'"{k}": {_json(v)}' for k, v in fields.items()) + "}").encode()


def _json(value) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


# A line that cannot be taken, and the reason the log gives for it.
BAD = [
    ("not JSON", b"not json", "not JSON"),
    ("a JSON array", b"[1, 2]", "not a JSON object"),
    ("no token", b'{"chain": "solana"}', "chain and token are required"),
    ("unknown chain", b'{"chain": "mars", "token": "WIF"}', "unknown chain 'mars'"),
    ("unknown token", b'{"chain": "base", "token": "NOPE"}', "unknown token 'NOPE' on base"),
    ("4,400-digit size", b'{"chain": "base", "token": "AERO", "size": ' + b"1" * 4400 + b"}",
     "larger than any amount"),
    ("4,400-digit id", b'{"id": ' + b"7" * 4400 + b', "chain": "base", "token": "AERO"}', "printable characters"),
    ("size 1e999999999", b'{"chain": "base", "token": "AERO", "size": "1e999999999"}', "larger than any amount"),
    ("size NaN", b'{"chain": "base", "token": "AERO", "size": NaN}', "NaN is not a number"),
    ("size Infinity", b'{"chain": "base", "token": "AERO", "size": "Infinity"}', "not a decimal amount"),
    ("size true", b'{"chain": "base", "token": "AERO", "size": true}', "size must be a decimal string"),
    ("size zero", b'{"chain": "base", "token": "AERO", "size": "0"}', "size must be positive"),
    ("size negative", b'{"chain": "base", "token": "AERO", "size": -5}', "not a positive amount"),
    ("size too precise", b'{"chain": "base", "token": "AERO", "size": "1.0000001"}', "more than 6 decimals"),
    ("ttl_s 1e400", b'{"chain": "base", "token": "AERO", "at": "2026-01-01T00:00:00Z", "ttl_s": 1e400}',
     "ttl_s must be from 0 to"),
    ("ttl_s negative", b'{"chain": "base", "token": "AERO", "at": "2026-01-01T00:00:00Z", "ttl_s": -1}',
     "ttl_s must be from 0 to"),
    ("ttl_s text", b'{"chain": "base", "token": "AERO", "at": "2026-01-01T00:00:00Z", "ttl_s": "soon"}',
     "ttl_s must be a number"),
    ("year 1, no zone", b'{"chain": "base", "token": "AERO", "at": "0001-01-01T00:00:00", "ttl_s": 30}',
     "at needs a time zone"),
    ("at not a time", b'{"chain": "base", "token": "AERO", "at": "yesterday", "ttl_s": 30}', "not an ISO 8601"),
    ("100,000 [", b"[" * 100_000, f"longer than {MAX_LINE_BYTES} bytes"),
    ("5,000 [", b"[" * 5_000, "nested deeper than 16 levels"),
    ("17 levels", b'{"chain": "base", "token": "AERO", "x": ' + b"[" * 16 + b"]" * 16 + b"}", "nested deeper"),
    ("invalid UTF-8 in id", b'{"id": "u\xff\xfe", "chain": "base", "token": "AERO"}', "not valid UTF-8 (byte 10)"),
    ("lone surrogate in id", b'{"id": "u\\udcff", "chain": "base", "token": "AERO"}', "printable characters"),
    ("control character in id", b'{"id": "a\\nb", "chain": "base", "token": "AERO"}', "printable characters"),
    ("empty id", b'{"id": "", "chain": "base", "token": "AERO"}', "printable characters"),
    ("id a list", b'{"id": [1], "chain": "base", "token": "AERO"}', "id must be a string or an integer"),
    ("size twice", b'{"chain": "base", "token": "AERO", "size": "25.00", "size": null}', "duplicate key 'size'"),
    ("chain twice", b'{"chain": "solana", "token": "AERO", "chain": "base"}', "duplicate key 'chain'"),
    ("escaped twice", b'{"chain": "base", "token": "AERO", "to\\u006ben": "DEGEN"}', "duplicate key 'token'"),
    ("size 25_000", b'{"chain": "base", "token": "AERO", "size": "25_000"}', "not a decimal amount"),
    ("size full-width", '{"chain": "base", "token": "AERO", "size": "２５"}'.encode(), "not a decimal amount"),
    ("size Arabic-Indic", '{"chain": "base", "token": "AERO", "size": "٢٥"}'.encode(), "not a decimal amount"),
    ("ttl_s 1_0", b'{"chain": "base", "token": "AERO", "at": "2026-01-01T00:00:00Z", "ttl_s": "1_0"}',
     "ttl_s must be a number"),
    ("ttl_s full-width", '{"chain": "base", "token": "AERO", "at": "2026-01-01T00:00:00Z", "ttl_s": "１"}'.encode(),
     "ttl_s must be a number"),
]


def source_with(tmp_path, data: bytes) -> JsonlSource:
    path = tmp_path / "signals.jsonl"
    path.write_bytes(data)
    return JsonlSource(str(path), CHAINS)


def skipped(caplog) -> dict[int, str]:
    return {r.line: r.reason for r in caplog.records if getattr(r, "reason", None) and hasattr(r, "line")
            and r.getMessage().startswith("signal line")}


@pytest.mark.parametrize(("name", "line", "reason"), BAD, ids=[b[0] for b in BAD])
def test_a_bad_line_is_skipped_with_its_number_and_the_lines_around_it_are_taken(tmp_path, caplog, name, line,
                                                                                  reason):
    caplog.set_level(logging.INFO, "botctl.signals")
    source = source_with(tmp_path, b"\n".join([good("before"), b"", line, good("after", "JUP")]) + b"\n")
    found = source.poll(1, NOW)
    assert [o.id for o in found] == ["before", "after"]
    assert list(skipped(caplog)) == [3]
    assert reason in skipped(caplog)[3]
    assert source.poll(2, NOW) == [], "each line is read once"


def test_every_bad_line_in_one_file_is_skipped_and_only_the_good_ones_are_taken(tmp_path, caplog):
    lines = [good("g0")]
    for i, (_name, line, _reason) in enumerate(BAD):
        lines += [line, good(f"g{i + 1}")]
    source = source_with(tmp_path, b"\n".join(lines) + b"\n")
    assert [o.id for o in source.poll(1, NOW)] == [f"g{i}" for i in range(len(BAD) + 1)]
    assert list(skipped(caplog)) == list(range(2, 2 * len(BAD) + 1, 2))


def test_nesting_is_bounded_by_the_rules_not_by_the_interpreter(tmp_path, caplog):
    sixteen = b'{"id": "deep", "chain": "base", "token": "AERO", "x": ' + b"[" * 15 + b"]" * 15 + b"}"
    brackets_in_text = good("[[[[[[[[[[[[[[[[[[[[", "JUP")
    source = source_with(tmp_path, sixteen + b"\n" + brackets_in_text + b"\n")
    assert [o.id for o in source.poll(1, NOW)] == ["deep", "[[[[[[[[[[[[[[[[[[[["]
    assert skipped(caplog) == {}


def test_sizes_beyond_every_ceiling_reach_the_rules_as_exact_integers(tmp_path):
    source = source_with(tmp_path, b"\n".join([
        good("big", size="1e30"), good("number", "JUP", size=20.5), good(42, "PYTH", size=7),  # type: ignore[arg-type]
        good("dust", "BONK", size="0.01")]) + b"\n")
    assert [(o.id, o.amount) for o in source.poll(1, NOW)] == [
        ("big", 10**36), ("number", 20_500_000), ("42", 7_000_000), ("dust", 10_000)]


def test_a_signal_older_than_its_ttl_is_skipped_whatever_its_year(tmp_path, caplog):
    caplog.set_level(logging.INFO, "botctl.signals")
    source = source_with(tmp_path, b"\n".join([
        good("ancient", at="0001-01-01T00:00:00Z", ttl_s=30),
        good("fresh", "JUP", at="2027-01-15T08:00:00+00:00", ttl_s="1e9"),
        good("exact", "PYTH", at="2027-01-15T08:00:00Z", ttl_s=0.5)]) + b"\n")
    assert [o.id for o in source.poll(1, 1_800_000_000_000)] == ["fresh", "exact"]
    assert skipped(caplog) == {1: "older than its ttl"}


def test_a_signal_below_the_minimum_position_is_refused_by_the_rules():
    book = given(*funded("base"))
    assert book.policy.limits.min_position == 1
    [event] = decide(book, reserve(amount=usd("0.99"), signal="dust"))
    assert isinstance(event, EntryDenied) and event.signal_id == "dust"
    assert event.reason == "size 0.990000 is below the minimum position 1"
    assert not isinstance(decide(book, reserve(amount=usd(1)))[0], EntryDenied)


def test_parse_amount_is_exact_and_bounded():
    assert parse_amount("1e30", 6) == 10**36
    assert parse_amount("0.0000010000", 6) == 1
    assert parse_amount("1" + "0" * 30 + "e-30", 6) == 1_000_000
    assert parse_amount("123456789012345678901234567890.123456", 6) == 123456789012345678901234567890123456
    with pytest.raises(ValueError, match="more than 6 decimals"):
        parse_amount("1.0000000000000000000000000000000000001", 6)
    with pytest.raises(ValueError, match="larger than any amount"):
        parse_amount("1e40", 6)


@pytest.mark.parametrize("text", ["25_000", "２５", "٢٥", "2\u06f5", "Infinity", "NaN", "0x10", "1e", ".", "5..",
                                  "2 5", "\u300025", "1e" + "9" * 30, "+-1", ""])
def test_parse_amount_takes_plain_ascii_decimal_notation_only(text):
    with pytest.raises(ValueError, match="not a decimal amount"):
        parse_amount(text, 6)


@pytest.mark.parametrize("text, units", [("25", 25_000_000), (" 25.50\n", 25_500_000), ("25.", 25_000_000),
                                         (".5", 500_000), ("+1", 1_000_000), ("1E+2", 100_000_000),
                                         ("2e-6", 2)])
def test_parse_amount_takes_every_plain_notation(text, units):
    assert parse_amount(text, 6) == units


# ---------------------------------------------------------------------------------------------- lines

def test_an_unfinished_line_waits_for_its_newline_or_the_end_of_the_stream():
    lines = Lines()
    assert lines.feed(b'{"a": 1}\n{"b": [1, ') == [(1, b'{"a": 1}')]
    assert lines.feed(b"2]") == []
    assert lines.feed(b"}\n") == [(2, b'{"b": [1, 2]}')]
    assert lines.feed(b"not json yet") == []
    assert lines.finish() == [(3, b"not json yet")]
    assert lines.finish() == []


def test_a_last_line_that_is_a_whole_object_is_taken_without_its_newline_and_only_once():
    lines = Lines()
    assert lines.feed(b'{"a": 1}') == [(1, b'{"a": 1}')]
    assert lines.feed(b"  \r\n") == []
    assert lines.feed(b'{"b": 2}') == [(2, b'{"b": 2}')]
    assert lines.feed(b" tail\n") == [(2, AFTER_TAKEN)]
    assert lines.feed(b"x\n") == [(3, b"x")]


def test_an_overlong_line_is_refused_whole_and_never_held_in_memory():
    lines = Lines()
    for _ in range(100):
        assert lines.feed(b"x" * 1000) == []
        assert len(lines._pending) <= MAX_LINE_BYTES
    assert lines.feed(b'x\n{"a": 1}\n') == [(1, OVERLONG), (2, b'{"a": 1}')]


# ---------------------------------------------------------------------------------------------- following

def write(path, data: bytes, mode: str = "ab") -> None:
    with open(path, mode) as handle:
        handle.write(data)


def test_a_moved_file_is_read_to_its_end_then_the_new_file_from_its_start(tmp_path, caplog):
    path = tmp_path / "signals.jsonl"
    write(path, good("a1") + b"\n" + good("a2", "JUP") + b"\n")
    source = JsonlSource(str(path), CHAINS)
    assert [o.id for o in source.poll(1, NOW)] == ["a1", "a2"]
    write(path, good("a3", "PYTH") + b"\n")
    os.rename(path, tmp_path / "signals.jsonl.1")
    write(tmp_path / "signals.jsonl.1", good("a4", "BONK") + b"\n")  # the writer still had the old file open
    assert [o.id for o in source.poll(2, NOW)] == ["a3", "a4"]
    assert source.poll(3, NOW) == [] and source.poll(4, NOW) == []
    assert sum("is gone" in r.getMessage() for r in caplog.records) == 1, "a lasting condition is logged once"
    write(path, good("b1", "AERO", "base") + b"\n" + good("b2", "DEGEN", "base") + b"\n")
    write(path, b'{"id": "b3", "chain": "base", ')
    assert [o.id for o in source.poll(5, NOW)] == ["b1", "b2"]
    assert any("was replaced" in r.getMessage() for r in caplog.records)
    write(path, b'"token": "BRETT"}\n')
    assert [o.id for o in source.poll(6, NOW)] == ["b3"], "the line split across writes arrives whole"
    assert not skipped(caplog)


def test_a_replaced_file_ends_the_old_ones_last_line(tmp_path, caplog):
    path = tmp_path / "signals.jsonl"
    write(path, good("a1") + b"\n" + b'{"id": "cut", "chain"')
    source = JsonlSource(str(path), CHAINS)
    assert [o.id for o in source.poll(1, NOW)] == ["a1"]
    os.rename(path, tmp_path / "old")
    write(path, good("b1", "JUP") + b"\n")
    assert [o.id for o in source.poll(2, NOW)] == ["b1"]
    assert list(skipped(caplog)) == [2] and "not JSON" in skipped(caplog)[2]


def test_a_truncated_file_is_noticed_and_read_again_from_its_start(tmp_path, caplog):
    path = tmp_path / "signals.jsonl"
    write(path, good("a1") + b"\n" + good("a2", "JUP") + b"\n")
    source = JsonlSource(str(path), CHAINS)
    assert [o.id for o in source.poll(1, NOW)] == ["a1", "a2"]
    write(path, b"", "wb")
    assert source.poll(2, NOW) == []
    assert any("was truncated or rewritten" in r.getMessage() for r in caplog.records)
    write(path, good("b1", "PYTH") + b"\n")
    assert [o.id for o in source.poll(3, NOW)] == ["b1"]
    write(path, good("c1", "BONK") + b"\n", "wb")  # truncated and rewritten between two polls
    assert [o.id for o in source.poll(4, NOW)] == ["c1"]


def test_a_line_without_an_id_keeps_its_id_when_the_file_is_read_again(tmp_path):
    path = tmp_path / "signals.jsonl"
    write(path, b'{"chain": "base", "token": "AERO"}\n{"chain": "base", "token": "AERO"}\n')
    first = [o.id for o in JsonlSource(str(path), CHAINS).poll(1, NOW)]
    assert len(set(first)) == 2, "two lines, two signals"
    assert [o.id for o in JsonlSource(str(path), CHAINS).poll(1, NOW)] == first, "a restart re-reads the same ids"


def test_a_missing_or_unreadable_file_is_refused_at_start(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        JsonlSource(str(tmp_path / "nope.jsonl"), CHAINS)
    with pytest.raises(FileNotFoundError, match="cannot be read"):
        JsonlSource(str(tmp_path), CHAINS)


# ---------------------------------------------------------------------------------------------- FIFO

def fifo_writer(path, data: bytes, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:  # no reader yet
            assert time.monotonic() < deadline, "the source never opened the FIFO"
            time.sleep(0.01)
    os.set_blocking(fd, True)
    os.write(fd, data)
    os.close(fd)


def test_a_fifo_is_opened_on_the_thread_and_read_writer_after_writer(tmp_path, caplog):
    path = tmp_path / "signals.fifo"
    os.mkfifo(path)
    started = time.monotonic()
    source = JsonlSource(str(path), CHAINS)  # no writer: opening it would block here
    assert time.monotonic() - started < 1
    try:
        assert source.poll(1, NOW) == []
        fifo_writer(path, good("f1") + b"\n" + b'{"id": "f2", "chain": "base", ')
        assert [o.id for o in poll_until(source, lambda f: f)] == ["f1"]
        fifo_writer(path, b'"token": "AERO"}\n' + good("f3", "JUP") + b"\nnot json")
        found = poll_until(source, lambda f: 5 in skipped(caplog))
        assert [o.id for o in found] == ["f3"], "a line is not joined across two writers"
        assert list(skipped(caplog)) == [2, 3, 5], "numbers run on from writer to writer"
        assert "not JSON" in skipped(caplog)[5], "a writer's unfinished last line is a line when it closes"
    finally:
        source.close()
    assert not any("Illegal seek" in r.getMessage() for r in caplog.records)


def test_closing_a_source_wakes_a_thread_waiting_for_a_writer(tmp_path):
    import threading

    path = tmp_path / "signals.fifo"
    os.mkfifo(path)
    before = set(threading.enumerate())
    source = JsonlSource(str(path), CHAINS)
    [reader] = [t for t in threading.enumerate() if t not in before and t.name == "botctl-signals"]
    time.sleep(0.1)
    assert reader.is_alive(), "waiting for a writer"
    source.close()
    reader.join(timeout=5)
    assert not reader.is_alive(), "the reader thread is still blocked opening the FIFO"


def test_an_unreadable_fifo_is_refused_at_start(tmp_path):
    """Opening it would block the start (a FIFO opens only with a writer) before it could fail."""
    if os.geteuid() != 0:
        path = tmp_path / "signals.fifo"
        os.mkfifo(path, 0o200)
        with pytest.raises(FileNotFoundError, match="cannot be read"):
            JsonlSource(str(path), CHAINS)
        return
    # root reads anything: the check runs as another user (uid 65534), on a FIFO only root may read
    import shutil
    import subprocess
    import tempfile

    shared = Path(tempfile.mkdtemp(prefix="botctl-fifo-"))
    try:
        os.chmod(shared, 0o755)
        os.mkfifo(shared / "signals.fifo", 0o600)
        code = ("from engine.sources import JsonlSource\n"
                "from engine.venues.paper.market import CHAINS\n"
                "try:\n    JsonlSource('signals.fifo', CHAINS)\n"
                "except FileNotFoundError as exc:\n    print('REFUSED', exc)\n")
        other = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c"]
        probe = subprocess.run([*other, "import engine.sources"], capture_output=True, text=True, cwd=shared,
                               timeout=60)
        if probe.returncode != 0:  # (CI's venv lives in a directory only its owner may enter)
            pytest.skip(f"cannot run botctl's python as uid 65534 here: {probe.stderr.strip()[-200:]}")
        ran = subprocess.run([*other, code], capture_output=True, text=True, cwd=shared, timeout=60)
        assert "REFUSED signals file signals.fifo cannot be read: Permission denied" in ran.stdout, \
            ran.stdout + ran.stderr
    finally:
        shutil.rmtree(shared)


# ---------------------------------------------------------------------------------------------- stdin

def poll_until(source: JsonlSource, done, seconds: float = 5.0) -> list:
    found, deadline = [], time.monotonic() + seconds
    while not done(found):
        assert time.monotonic() < deadline, found
        found += source.poll(1, NOW)
        time.sleep(0.005)
    return found


def test_stdin_takes_its_last_line_at_the_end_and_refuses_invalid_utf8(monkeypatch, caplog):
    caplog.set_level(logging.INFO, "botctl.signals")
    read, written = os.pipe()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(open(read, "rb"), encoding="utf-8"))
    source = JsonlSource("-", CHAINS)
    os.write(written, good("s1") + b"\n" + b'{"id": "\xff", "chain": "base", "token": "AERO"}\n' + b'{"id": "s2"')
    os.write(written, b', "chain": "base", "token": "AERO"')
    os.close(written)
    found = poll_until(source, lambda f: any("ended" in r.getMessage() for r in caplog.records))
    assert [o.id for o in found] == ["s1"]
    assert list(skipped(caplog)) == [2, 3] and "UTF-8" in skipped(caplog)[2] and "not JSON" in skipped(caplog)[3]


def test_a_closed_or_broken_stdin_ends_the_signals_without_a_traceback(monkeypatch, caplog):
    crashed = []
    monkeypatch.setattr("threading.excepthook", lambda args: crashed.append(args))
    monkeypatch.setattr(sys, "stdin", None)
    source = JsonlSource("-", CHAINS)
    poll_until(source, lambda f: any("stdin is closed" in r.getMessage() for r in caplog.records))
    broken = io.TextIOWrapper(io.BytesIO(b""))
    broken.close()
    monkeypatch.setattr(sys, "stdin", broken)
    source = JsonlSource("-", CHAINS)
    poll_until(source, lambda f: any("stdin stopped" in r.getMessage() and "closed file" in r.getMessage()
                                     for r in caplog.records))
    assert crashed == []


class Woken:
    """A `watch` callback as the engine gives one (called from the source's thread), counted."""

    def __init__(self):
        import threading

        self.event = threading.Event()

    def __call__(self) -> None:
        self.event.set()

    def wait(self, what: str) -> None:
        assert self.event.wait(10), f"nothing woke the engine when {what}"
        self.event.clear()

    def quiet(self) -> bool:
        return not self.event.wait(0.2)


def test_a_followed_file_wakes_the_engine_when_it_grows_is_rewritten_or_replaced(tmp_path):
    path = tmp_path / "signals.jsonl"
    path.write_bytes(b"")
    source = JsonlSource(str(path), CHAINS)
    woken = Woken()
    source.watch(woken)
    try:
        woken.wait("it started watching")  # whatever was there before is read at once
        assert woken.quiet(), "a file that does not change wakes nobody"
        with open(path, "ab") as f:
            f.write(good("g1") + b"\n")
        woken.wait("a line was appended")
        assert [o.id for o in source.poll(1, NOW)] == ["g1"]
        path.write_bytes(good("g2") + b"\n")  # rewritten in place
        woken.wait("the file was rewritten")
        moved = tmp_path / "new.jsonl"
        moved.write_bytes(good("g3") + b"\n")
        os.replace(moved, path)
        woken.wait("another file took its name")
    finally:
        source.close()


def test_a_fifo_and_stdin_wake_the_engine_when_a_writer_sends(tmp_path, monkeypatch):
    path = tmp_path / "signals.fifo"
    os.mkfifo(path)
    source = JsonlSource(str(path), CHAINS)
    woken = Woken()
    source.watch(woken)
    try:
        fifo_writer(path, good("f1") + b"\n")
        woken.wait("a writer sent a line into the FIFO")
        assert [o.id for o in poll_until(source, lambda f: f)] == ["f1"]
    finally:
        source.close()
    read, written = os.pipe()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(open(read, "rb"), encoding="utf-8"))
    source = JsonlSource("-", CHAINS)
    try:
        woken = Woken()
        source.watch(woken)
        os.write(written, good("s1") + b"\n")
        woken.wait("a line arrived on stdin")
        os.close(written)
        assert [o.id for o in poll_until(source, lambda f: f)] == ["s1"]
    finally:
        source.close()


def test_closing_a_followed_file_ends_its_watcher(tmp_path):
    import threading

    path = tmp_path / "signals.jsonl"
    path.write_bytes(b"")
    before = set(threading.enumerate())
    source = JsonlSource(str(path), CHAINS)
    source.watch(lambda: None)
    [watcher] = [t for t in threading.enumerate() if t not in before and t.name == "botctl-signals-watch"]
    source.close()
    watcher.join(timeout=5)
    assert not watcher.is_alive(), "the watcher thread outlived its source"
