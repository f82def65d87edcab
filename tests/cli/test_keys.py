"""`botctl keys` through the real CLI: a keystore made or imported is private and opens with its
password to the address printed; each refusal is one `error:` line; a failed write leaves nothing;
and the key and the password show nowhere (output, logs, book).

Every keystore the CLI writes costs the product's full scrypt (~1 s and 256 MB), so the tests are few
and each checks several things."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import pytest

import terminal
from clikit import env_for, one_error_line
from terminal import converse

pytestmark = pytest.mark.slow

PASSWORD = "pw-Zq81-never-shown"
KEY_HEX = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318"
ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"  # eth-account's documented example key


def cli(home: Path, cwd: Path, *args: str, stdin: str | None = None, limit_file_size: int | None = None,
        **env: str) -> subprocess.CompletedProcess:
    """botctl with no terminal: stdin is what is given, else empty (never the test runner's terminal).
    Started warm (tests/terminal.py), but for a file-size limit, which only a fresh process can take."""
    if not limit_file_size:
        return terminal.run(args, env_for(home, **env), cwd=cwd, timeout=120, input=stdin or "", evm=True)

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_file_size, limit_file_size))

    return subprocess.run([sys.executable, "-m", "console.cli", *args], input=stdin if stdin is not None else "",
                          capture_output=True, text=True, env=env_for(home, **env), cwd=cwd, timeout=120,
                          preexec_fn=limited)


def secrets_of(key_hex: str) -> list[bytes]:
    key = bytes.fromhex(key_hex)
    return [PASSWORD.encode(), key_hex.lower().encode(), key_hex.upper().encode(), key]


def assert_nowhere(secrets: list[bytes], results: list[subprocess.CompletedProcess], home: Path) -> None:
    """Not in what any command printed, nor in any file of the home (the keystore holds them encrypted)."""
    for result in results:
        for secret in secrets:
            assert secret not in (result.stdout + result.stderr).encode()
    files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.parent.name == "logs" for p in files) and any(p.name == "botctl.db" for p in files)
    for path in files:
        content = path.read_bytes()
        for secret in secrets:
            assert secret not in content, f"{path} holds a secret"


def write_keystore(path: Path, mode: int = 0o600) -> None:
    """A real keystore at a cheap scrypt cost, made by the test itself (no CLI cost)."""
    from eth_account import Account

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(json.dumps(Account.encrypt(bytes.fromhex(KEY_HEX), PASSWORD, iterations=2**4)))
    path.chmod(mode)


# --------------------------------------------------------------------------- new


def test_keys_new_writes_a_private_keystore_that_opens_to_the_printed_address(home, tmp_path):
    from eth_account import Account

    made = cli(home, tmp_path, "keys", "new", "evm", BOTCTL_EVM_PASSWORD=PASSWORD)
    assert made.returncode == 0, made.stderr
    path = home / "keys" / "evm.json"
    assert f"keystore {path}" in made.stdout.splitlines()
    printed = made.stdout.splitlines()[0].removeprefix("address ")
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["evm.json"]
    data = json.loads(path.read_text())
    assert data["crypto"]["kdfparams"]["n"] == 2**18, "the product writes eth-account's full scrypt cost"
    key = Account.decrypt(data, PASSWORD)
    assert Account.from_key(key).address == printed

    shown = cli(home, tmp_path, "keys", "show", "evm", "--json")  # no password: the address is not encrypted
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {"kind": "evm", "address": printed, "keystore": str(path)}

    wrong = cli(home, tmp_path, "keys", "show", "evm", "--unlock", BOTCTL_EVM_PASSWORD=PASSWORD + "x")
    assert wrong.returncode == 1
    assert one_error_line(wrong) == f"error: keystore {path}: wrong password (from BOTCTL_EVM_PASSWORD)"

    before = path.read_bytes()
    again = cli(home, tmp_path, "keys", "new", "evm", BOTCTL_EVM_PASSWORD=PASSWORD)
    assert again.returncode == 1
    assert one_error_line(again).startswith(f"error: keystore {path} already exists: nothing was written")
    assert path.read_bytes() == before

    # an engine run and the read commands with the password in the environment: the logs and the book appear
    ran = cli(home, tmp_path, "run", "--duration", "5", BOTCTL_EVM_PASSWORD=PASSWORD)
    assert ran.returncode == 0, ran.stderr
    config = cli(home, tmp_path, "config", "show", "--json", BOTCTL_EVM_PASSWORD=PASSWORD)
    assert config.returncode == 0, config.stderr
    secrets = secrets_of(key.hex())
    assert_nowhere(secrets, [made, shown, wrong, again, ran, config], home)
    for secret in secrets:
        assert secret not in path.read_bytes()


def test_a_keystore_write_that_fails_midway_leaves_no_file(home, tmp_path):
    """The file system refuses the keystore's bytes (RLIMIT_FSIZE: EFBIG after the temp file exists)."""
    failed = cli(home, tmp_path, "keys", "new", "evm", limit_file_size=100, BOTCTL_EVM_PASSWORD=PASSWORD)
    assert failed.returncode == 1
    assert one_error_line(failed).startswith(f"error: cannot write keystore {home / 'keys' / 'evm.json'}: "
                                             "File too large")
    assert list((home / "keys").iterdir()) == []


def test_without_a_terminal_or_password_keys_new_says_how_to_give_it(home, tmp_path):
    result = cli(home, tmp_path, "keys", "new", "evm")
    assert result.returncode == 2
    assert "set BOTCTL_EVM_PASSWORD" in one_error_line(result)
    assert not (home / "keys" / "evm.json").exists()


def test_on_a_terminal_the_password_is_asked_twice_and_never_shown(home, tmp_path):
    code, shown = converse(["keys", "new", "evm"], env_for(home), [PASSWORD, PASSWORD + "x"])
    assert code == 2
    assert "error: the two passwords typed differ: nothing was written" in shown
    assert PASSWORD not in shown
    assert not (home / "keys" / "evm.json").exists()


# --------------------------------------------------------------------------- import


def test_keys_import_reads_the_key_from_stdin_and_never_echoes_it(home, tmp_path):
    path = home / "keys" / "evm.json"
    imported = cli(home, tmp_path, "keys", "import", "evm", "--json", stdin=f"0x{KEY_HEX}\n",
                   BOTCTL_EVM_PASSWORD=PASSWORD)
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout) == {"kind": "evm", "address": ADDRESS, "keystore": str(path)}
    assert path.stat().st_mode & 0o777 == 0o600

    bad_key = KEY_HEX[:-1] + "g"
    other = home / "keys" / "other.json"
    bad = cli(home, tmp_path, "keys", "import", "evm", "--keystore", "keys/other.json", stdin=bad_key + "\n",
              BOTCTL_EVM_PASSWORD=PASSWORD)
    assert bad.returncode == 2
    assert one_error_line(bad).startswith("error: not a private key: expected 64 hex digits")
    on_argv = cli(home, tmp_path, "keys", "import", "evm", "--keystore", "keys/other.json", KEY_HEX,
                  BOTCTL_EVM_PASSWORD=PASSWORD)
    assert on_argv.returncode == 2
    assert "never taken from the command line" in one_error_line(on_argv)
    assert not other.exists()
    assert sorted(p.name for p in path.parent.iterdir()) == ["evm.json"]
    for result in (imported, bad, on_argv):
        assert KEY_HEX[:40] not in result.stdout + result.stderr and PASSWORD not in result.stdout + result.stderr
        assert bad_key[20:] not in result.stdout + result.stderr

    unlocked = cli(home, tmp_path, "keys", "show", "evm", "--unlock", BOTCTL_EVM_PASSWORD=PASSWORD)
    assert unlocked.returncode == 0, unlocked.stderr
    assert unlocked.stdout.splitlines()[0] == f"address {ADDRESS}"


def test_keys_import_on_a_terminal_hides_the_key_and_the_password(home, tmp_path):
    code, shown = converse(["keys", "import", "evm"], env_for(home), [KEY_HEX, PASSWORD, PASSWORD])
    assert code == 0, shown
    assert f"address {ADDRESS}" in shown
    assert KEY_HEX[:40] not in shown and PASSWORD not in shown
    assert (home / "keys" / "evm.json").stat().st_mode & 0o777 == 0o600


# --------------------------------------------------------------------------- what doctor and show refuse


EVM_CHAIN = '[chains.base]\nkind = "evm"\nrpc_url = "http://127.0.0.1:9"\nkeystore = "keys/evm.json"\n'


def test_doctor_and_keys_show_refuse_a_missing_or_exposed_keystore_in_one_line(home, tmp_path):
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(EVM_CHAIN)
    (home / "config.toml").chmod(0o600)
    path = home / "keys" / "evm.json"

    missing = cli(home, tmp_path, "doctor")
    assert missing.returncode == 1
    assert one_error_line(missing) == (f"error: 2 check(s) failed: key base: keystore {path} not found: create one "
                                       "with `botctl keys new evm` (or `botctl keys import evm`)")

    write_keystore(path, mode=0o644)
    exposed = cli(home, tmp_path, "doctor")
    assert exposed.returncode == 1
    assert one_error_line(exposed) == (f"error: 2 check(s) failed: key base: keystore {path} is readable by others: "
                                       f"chmod 600 {path}")
    shown = cli(home, tmp_path, "keys", "show", "evm")  # the configured keystore is the default
    assert shown.returncode == 2
    assert one_error_line(shown) == f"error: keystore {path} is readable by others: chmod 600 {path}"

    path.chmod(0o600)
    fixed = cli(home, tmp_path, "doctor", "--json")
    key_check = next(c for c in json.loads(fixed.stdout)["checks"] if c["check"] == "key base")
    assert key_check == {"check": "key base", "ok": True, "detail": "present and private"}

    path.write_text('{"version": 3, "address": "' + KEY_HEX + '"}')
    garbage = cli(home, tmp_path, "keys", "show", "evm", "--unlock", BOTCTL_EVM_PASSWORD=PASSWORD)
    assert garbage.returncode == 2
    assert one_error_line(garbage) == (f"error: keystore {path} is not a v3 JSON keystore "
                                       "(its crypto section is incomplete)")
