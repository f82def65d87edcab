"""`botctl audit` against a real book changed by hand: every value the engine keeps is checked.

One short paper run (closes, failed orders, open positions, an inbox command) prepares a book
once per module; each case copies it, changes exactly one thing with sqlite3 and expects the
audit to exit 1 naming what was changed. The untampered copy audits clean.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from storage.schema import SCHEMA_VERSION

import terminal

pytestmark = pytest.mark.slow

RUN_ENV = {"BOTCTL_MAX_HOLD_S": "90", "BOTCTL_PAPER__FAIL_RATE_BPS": "1500"}


def cli(home: Path, cwd: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0", **RUN_ENV, **extra})
    return terminal.run(args, env, cwd=cwd)


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A book with every kind of row the engine writes: closed and open positions, fills, failed
    orders, cooldowns, a loss counter, nonces, marks, signals, deposits and an answered inbox row."""
    root = tmp_path_factory.mktemp("tamper")
    home = root / "home"
    run = cli(home, root, "run", "--seed", "3", "--duration", "150")
    assert run.returncode == 0, run.stderr
    open_ids = [p["id"] for p in json.loads(cli(home, root, "positions", "--json").stdout)]
    assert len(open_ids) >= 2, "the run leaves positions open"
    close = cli(home, root, "close", str(open_ids[-1]), "--yes")  # one-off: an inbox row, answered
    assert close.returncode == 0, close.stderr
    conn = sqlite3.connect(home / "botctl.db")
    try:
        counts = {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in (
            "positions", "reservations", "orders", "fills", "nonces", "cooldowns", "marks", "signals", "deposits",
            "inbox", "postings")}
        meta = dict(conn.execute("SELECT key, value FROM meta"))
        failed = conn.execute("SELECT count(*) FROM orders WHERE state = 'failed'").fetchone()[0]
    finally:
        conn.close()
    assert all(counts.values()), counts
    assert failed and int(meta["consecutive_losses"]) > 0 and int(meta["open_slots"]) > 0, meta
    assert "trading_state" not in meta, "trading never changed state: the row the engine never wrote"
    return home


@pytest.fixture
def book(prepared: Path, tmp_path: Path) -> Path:
    home = tmp_path / "home"
    shutil.copytree(prepared, home)
    return home


def tamper(home: Path, sql: str) -> None:
    conn = sqlite3.connect(home / "botctl.db", isolation_level=None)
    try:
        conn.execute(sql)
        assert sql.startswith("PRAGMA") or conn.total_changes > 0, f"the tampering changed nothing: {sql}"
    finally:
        conn.close()


def test_the_untampered_book_audits_clean(book, tmp_path):
    result = cli(book, tmp_path, "audit")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "audit clean" in result.stdout


CASES = [
    # the blind spots of issue 13
    ("trading state halted by hand", "INSERT OR REPLACE INTO meta VALUES ('trading_state', 'halted')",
     "meta trading_state is halted but the journal says active"),
    ("cooldowns deleted", "DELETE FROM cooldowns", "table cooldowns differs from a replay of the journal"),
    ("seq lowered", "UPDATE meta SET value = CAST(value AS INTEGER) - 5 WHERE key = 'seq'",
     "the next commit would reuse a journal seq"),
    # every meta key the engine keeps
    ("loss counter", "UPDATE meta SET value = '99' WHERE key = 'consecutive_losses'",
     "meta consecutive_losses is 99 but the journal says"),
    ("stage", "INSERT OR REPLACE INTO meta VALUES ('stage', 'testnet')",
     "meta stage is 'testnet' but the journal says 'paper'"),
    ("id counter", "UPDATE meta SET value = CAST(value AS INTEGER) - 1 WHERE key = 'next_order'",
     "meta next_order is"),
    ("open slots", "UPDATE meta SET value = '0' WHERE key = 'open_slots'", "meta open_slots is 0 but the journal"),
    ("review", """UPDATE meta SET value = '[["base", "quote", 1, 2]]' WHERE key = 'review'""",
     "meta review is (('base', 'quote', 1, 2),) but the journal says ()"),
    ("token offset", "INSERT INTO meta VALUES ('offset:base:DEGEN', '5')",
     "meta offset:base:DEGEN is 5, a key no journal event sets"),
    ("unreadable value", "INSERT OR REPLACE INTO meta VALUES ('trading_state', 'sleepy')",
     "table meta row ('trading_state', 'sleepy') holds a value botctl cannot read"),
    # every table the engine writes
    ("balance", "UPDATE balances SET amount = CAST(amount AS INTEGER) + 1000000 "
                "WHERE chain = 'solana' AND asset = 'quote' AND account = 'cash'",
     "table balances differs from a replay of the journal at 1 row(s): ('solana', 'quote', 'cash') (changed)"),
    ("position", "UPDATE positions SET exit_attempts = exit_attempts + 1 WHERE id = 1",
     "table positions differs from a replay of the journal at 1 row(s): 1 (changed)"),
    ("reservation", "UPDATE reservations SET created_at = created_at + 1 WHERE id = 1",
     "table reservations differs from a replay of the journal at 1 row(s): 1 (changed)"),
    ("order", "UPDATE orders SET updated_at = updated_at + 1 WHERE id = 1",
     "table orders differs from a replay of the journal at 1 row(s): 1 (changed)"),
    ("fill", "UPDATE fills SET fee = CAST(fee AS INTEGER) + 1 WHERE id = 1",
     "table fills differs from a replay of the journal at 1 row(s): 1 (changed)"),
    ("nonce handed back", "UPDATE nonces SET next = next - 1",
     "table nonces differs from a replay of the journal at 1 row(s)"),
    ("mark", "UPDATE marks SET price = '1' "
             "WHERE (chain, token) = (SELECT chain, token FROM marks ORDER BY chain, token LIMIT 1)",
     "table marks differs from a replay of the journal at 1 row(s)"),
    ("signal forgotten", "DELETE FROM signals WHERE id = (SELECT min(id) FROM signals)",
     "table signals differs from a replay of the journal at 1 row(s)"),
    ("deposit", "UPDATE deposits SET amount = amount || '0' WHERE ref = 'genesis:base:quote'",
     "table deposits differs from a replay of the journal at 1 row(s): 'genesis:base:quote' (changed)"),
    ("inbox row reopened", "UPDATE inbox SET state = 'pending', result = NULL, decided_at = NULL WHERE id = 1",
     "table inbox differs from a replay of the journal at 1 row(s): 1 (missing)"),
    ("postings that cancel out", "INSERT INTO postings VALUES (5, 'base', 'quote', 'cash', 'deposits', '7'), "
                                 "(5, 'base', 'quote', 'deposits', 'cash', '7')",
     "table postings differs from the journal's postings at 2 row(s)"),
    ("journal event redated", "UPDATE journal SET at = at + 1 WHERE seq = 10", "journal event 10 (PricesMarked) is dated"),
    ("journal event deleted", "DELETE FROM journal WHERE seq = (SELECT min(seq) FROM journal WHERE kind = 'Heartbeat')",
     "journal seq jumps from"),
    ("journal event rewritten", "UPDATE journal SET data = replace(data, '\"amount\":5', '\"amount\":6') "
                                "WHERE kind = 'Deposited' AND data LIKE '%genesis:base:native%'",
     "table deposits differs from a replay of the journal at 1 row(s): 'genesis:base:native' (changed)"),
]


@pytest.mark.parametrize("sql, named", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_audit_names_the_tampering(book, tmp_path, sql, named):
    tamper(book, sql)
    result = cli(book, tmp_path, "audit")
    assert result.returncode == 1, result.stdout + result.stderr
    violations = [line.removeprefix("violation: ") for line in result.stdout.splitlines()
                  if line.startswith("violation: ")]
    assert any(named in v for v in violations), violations
    assert "violation" in one_error_line(result)


@pytest.mark.parametrize("version", [999, 0])
def test_a_schema_this_botctl_does_not_know_fails_audit_and_doctor(book, tmp_path, version):
    tamper(book, f"PRAGMA user_version = {version}")
    fix = "upgrade botctl" if version > SCHEMA_VERSION else "start the engine once to migrate"
    status = cli(book, tmp_path, "status")
    assert status.returncode == 1 and f"schema version {version}" in one_error_line(status)

    audit = cli(book, tmp_path, "audit")
    assert audit.returncode == 1 and audit.stdout == ""
    line = one_error_line(audit)
    assert f"schema version {version}" in line and fix in line

    doctor = cli(book, tmp_path, "doctor")
    assert doctor.returncode == 1
    [schema] = [line for line in doctor.stdout.splitlines() if line.split()[1:2] == ["schema"]]
    assert schema.startswith("FAIL") and f"schema version {version}" in schema and fix in schema
    assert "schema" in one_error_line(doctor)


def test_doctor_passes_the_schema_it_knows(book, tmp_path):
    doctor = cli(book, tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    [schema] = [line for line in doctor.stdout.splitlines() if line.split()[1:2] == ["schema"]]
    assert schema.startswith("ok") and f"version {SCHEMA_VERSION}" in schema
