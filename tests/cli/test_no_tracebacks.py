"""No traceback ever reaches the terminal: each failure of the machine is one named `error:` line.

Every case of issue 14's list, through the CLI as a subprocess: a book that is not SQLite, empty,
truncated, from a newer botctl, a directory; a home that is a file, too long, read-only, not ours;
ids and limits beyond any integer the book holds; stdin closed under `--signals -`; Ctrl-C in the
middle of `botctl close`. Each expects exactly one `error:` line naming the file or value, the
contract's exit code (1 the machine's state, 2 a setting or usage, 130 interrupted), no traceback
(nor a thread's), and the files as they were.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import terminal

pytestmark = pytest.mark.slow

ROOT = os.geteuid() == 0


def cli(home: Path | str, *args: str, env: dict | None = None, prefix: tuple = (), **popen
        ) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    full.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0", **(env or {})})
    cwd = popen.pop("cwd", Path(str(home)).parent)
    if not prefix and not popen:  # warm (tests/terminal.py); another user or a closed stdin: cold
        return terminal.run(args, full, cwd=cwd)
    return subprocess.run([*prefix, sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=120, **popen)


def no_traceback(result) -> None:
    for sign in ("Traceback", "Exception in thread", "Event loop is closed", 'File "'):
        assert sign not in result.stderr, result.stderr


def one_error(result, code: int, *words: str) -> str:
    """Exactly one `error:` line, the last on stderr, naming `words`; exit `code`; no traceback."""
    no_traceback(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == code, (result.returncode, result.stderr)
    assert len(errors) == 1 and result.stderr.splitlines()[-1] == errors[0], result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert "unexpected" not in errors[0]
    return errors[0]


def files(home: Path) -> dict[str, object]:
    """Everything in the home but what any command may touch without changing the book: the lock,
    the logs, SQLite's shared-memory index and an empty write-ahead log. Path -> bytes, or a
    directory's mode."""
    out: dict[str, object] = {}
    if not home.is_dir():
        return {".": home.read_bytes() if home.is_file() else None}
    for path in sorted(home.rglob("*")):
        rel = str(path.relative_to(home))
        if rel == "botctl.lock" or rel.split(os.sep)[0] == "logs" or rel.endswith("-shm"):
            continue
        if rel.endswith("-wal") and path.is_file() and path.stat().st_size == 0:
            continue
        out[rel] = path.read_bytes() if path.is_file() else ("dir", path.stat().st_mode)
    return out


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """A book with open positions (position 1 among them), made once for the module."""
    home = tmp_path_factory.mktemp("book") / "home"
    run = cli(home, "run", "--seed", "1", "--duration", "60")
    assert run.returncode == 0, run.stderr
    assert any(p["id"] == 1 for p in json.loads(cli(home, "positions", "--json").stdout))
    return home


@pytest.fixture
def home(book, tmp_path) -> Path:
    """A copy of the book to break."""
    copy = tmp_path / "home"
    shutil.copytree(book, copy)
    return copy


def garbage(home: Path) -> None:
    (home / "botctl.db").write_bytes(b"these are not the bytes of a database " * 100)


def empty(home: Path) -> None:
    (home / "botctl.db").write_bytes(b"")


def truncated(home: Path) -> None:
    db = home / "botctl.db"
    os.truncate(db, db.stat().st_size // 3)


def newer(home: Path) -> None:
    conn = sqlite3.connect(home / "botctl.db")
    conn.execute("PRAGMA user_version = 99")
    conn.close()


def directory(home: Path) -> None:
    (home / "botctl.db").unlink()
    (home / "botctl.db").mkdir(mode=0o700)


BROKEN_BOOKS = [
    (garbage, ["status", "positions", "audit", "close 1 --yes", "run --duration 2"],
     ["botctl.db is not a SQLite database", "restore it from a backup"]),
    (empty, ["status", "positions", "audit"], ["botctl.db is empty (0 bytes)"]),
    (truncated, ["status", "positions", "audit"], ["botctl.db is truncated", "restore it from a backup"]),
    (newer, ["status", "audit", "run --duration 2"], ["botctl.db has schema version 99", "upgrade botctl"]),
    (directory, ["status", "run --duration 2", "close 1 --yes"],
     ["botctl.db is a directory where botctl keeps a file", "move it aside"]),
]


@pytest.mark.parametrize("breakage, commands, words", BROKEN_BOOKS, ids=[b[0].__name__ for b in BROKEN_BOOKS])
def test_a_book_that_cannot_be_used_is_named_and_left_as_it_is(home, breakage, commands, words):
    breakage(home)
    before = files(home)
    for command in commands:
        one_error(cli(home, *command.split()), 1, str(home), *words)
        assert files(home) == before, f"{command} changed the files"


def test_the_traceback_goes_to_the_log_or_to_botctl_debug_never_to_the_terminal(home):
    garbage(home)
    run = cli(home, "run", "--duration", "2")
    one_error(run, 1, "is not a SQLite database")
    logged = [json.loads(line) for line in (home / "logs" / "botctl.log").read_text().splitlines()]
    assert any("is not a SQLite database" in line["msg"] and "Traceback" in line.get("error", "")
               for line in logged), logged[-3:]

    debug = cli(home, "status", env={"BOTCTL_DEBUG": "1"})
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert debug.stderr.splitlines()[-1].startswith("error: ") and "is not a SQLite database" in debug.stderr


def test_a_home_that_is_a_file_is_a_setting_to_fix(tmp_path):
    home = tmp_path / "a-file"
    home.write_text("not a directory\n")
    for command in ("status", "run --duration 2", "pause"):
        one_error(cli(home, *command.split()), 2, f"BOTCTL_HOME {home} is a file, not a directory")
    assert home.read_text() == "not a directory\n"


def test_a_home_too_long_for_the_file_system_is_a_setting_to_fix(tmp_path):
    home = tmp_path / ("x" * 300)
    for command in ("status", "run --duration 2"):
        one_error(cli(home, *command.split(), cwd=tmp_path), 2, "BOTCTL_HOME", "300 characters",
                  "choose a shorter BOTCTL_HOME")


def test_a_home_of_an_unknown_user_is_a_setting_to_fix(tmp_path):
    one_error(cli("~nouser-botctl/x", "status", cwd=tmp_path), 2, "~nouser-botctl/x")


@pytest.mark.parametrize("args, words", [
    (["close", "99999999999999999999", "--yes"], ["99999999999999999999", "from 1 to 9223372036854775807"]),
    (["history", "--limit", "99999999999999999999"], ["--limit 99999999999999999999 is out of range"]),
    (["history", "--commands", "--limit", "99999999999999999999"], ["--limit 99999999999999999999"]),
    (["run", "--seed", "99999999999999999999", "--duration", "1"], ["--seed 99999999999999999999"]),
], ids=["close-id", "history-limit", "commands-limit", "run-seed"])
def test_an_id_or_limit_beyond_any_integer_of_the_book_is_a_usage_error(home, args, words):
    before = files(home)
    one_error(cli(home, *args), 2, *words)
    assert files(home) == before


@pytest.fixture
def read_only_home(home, tmp_path):
    """The book on a file system mounted read-only (as a disk is remounted after errors)."""
    if not ROOT:
        pytest.skip("a read-only mount needs root (mount -t tmpfs; remount,ro)")
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=700", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
    try:
        shutil.copytree(home, mount / "home")
        wal, shm = mount / "home" / "botctl.db-wal", mount / "home" / "botctl.db-shm"
        if wal.exists() and wal.stat().st_size == 0:  # as the engine leaves it: no -wal, no -shm
            wal.unlink()
            shm.unlink(missing_ok=True)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        yield mount / "home"
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_read_only_home_still_reads_and_refuses_writes_in_one_line(read_only_home):
    home = read_only_home
    for command in ("status", "positions", "history"):
        result = cli(home, *command.split())
        no_traceback(result)
        assert result.returncode == 0 and result.stderr == "", (command, result.stderr)
    for command in ("close 1 --yes", "pause", "halt --no-wait", "run --duration 2"):
        one_error(cli(home, *command.split()), 1, f"{home} is on a read-only file system", "remount it read-write")


def test_a_home_of_another_user_says_so(home, tmp_path):
    """The book belongs to one user; another runs botctl on it (as root: uid 65534, through setpriv,
    on a home it may look into but not write; otherwise: a book this user may not read)."""
    if not ROOT:
        os.chmod(home / "botctl.db", 0)
        return _refused_to_another_user(home, {})
    shared = Path(tempfile.mkdtemp(prefix="botctl-other-user-"))
    try:
        os.chmod(shared, 0o755)
        shutil.copytree(home, shared / "home")
        os.chmod(shared / "home", 0o755)
        other = {"prefix": ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"), "cwd": shared}
        probe = cli(shared / "home", "--help", **other)
        if probe.returncode != 0:
            pytest.skip(f"cannot run botctl as uid 65534 here: {probe.stderr.strip()[-200:]}")
        _refused_to_another_user(shared / "home", other)
    finally:
        shutil.rmtree(shared)


def _refused_to_another_user(home: Path, other: dict) -> None:
    before = files(home)
    for command in ("status", "close 1 --yes", "run --duration 2"):
        one_error(cli(home, *command.split(), **other), 1, "no permission to use", str(home))
    assert files(home) == before


def test_logs_that_are_a_file_do_not_stop_the_engine_nor_print_a_traceback(home):
    shutil.rmtree(home / "logs")
    (home / "logs").write_text("someone's notes\n")
    run = cli(home, "run", "--duration", "3")
    no_traceback(run)
    assert run.returncode == 0 or len([x for x in run.stderr.splitlines() if x.startswith("error:")]) == 1
    assert (home / "logs").read_text() == "someone's notes\n"
    assert cli(home, "audit").returncode == 0


def test_signals_on_a_closed_stdin_end_the_signals_not_the_engine(home):
    run = cli(home, "run", "--signals", "-", "--duration", "5", stdin=None,
              preexec_fn=lambda: os.close(0))
    no_traceback(run)
    assert run.returncode == 0, run.stderr
    assert "stopped: 5 blocks" in run.stderr


def test_ctrl_c_in_the_middle_of_close_is_one_line_and_exit_130(home, tmp_path):
    """SIGINT once the command owns the book (the engine started for it), before it is done."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0"})
    lock = home / "botctl.lock"
    proc = terminal.spawn(["close", "1", "--yes"], env, cwd=tmp_path, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    while proc.poll() is None and not (lock.exists() and lock.stat().st_size):
        time.sleep(0.002)
    assert proc.poll() is None, "close finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    one_error(result, 130, "interrupted")
    audit = cli(home, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    rows = json.loads(cli(home, "history", "--commands", "--json").stdout)
    assert all(r["state"] not in ("pending", "taken") for r in rows), rows  # nothing left to run later
