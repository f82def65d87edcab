"""The EVM keystore: what it writes (private, whole or not at all, never over another), what it
refuses (and how it says so), and that neither the key nor the password shows anywhere.

Keystores here are written with a cheap scrypt cost (`scrypt_n`, a test-only argument) so each
test takes milliseconds; the CLI tests check the product's full cost."""

from __future__ import annotations

import errno
import json
import os
import threading
import traceback
from pathlib import Path

import pytest

from wallet import keystore
from wallet.keystore import KeystoreError, Password

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"  # eth-account's documented example key
PASSWORD = "correct horse battery staple"
CHEAP = 2**4
SECRETS = (KEY.hex(), KEY.hex().upper(), PASSWORD)


def written(tmp_path: Path, name: str = "keys/evm.json", password: str | Password = PASSWORD) -> Path:
    path = tmp_path / name
    assert keystore.write_new(path, KEY, password, scrypt_n=CHEAP) == ADDRESS
    return path


def said(exc: BaseException) -> str:
    """Everything a log line with exc_info would carry: the message, the chain, the traceback."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# --------------------------------------------------------------------------- round trip


def test_a_written_keystore_unlocks_to_the_same_key_and_is_private(tmp_path):
    path = written(tmp_path)
    account = keystore.unlock(path, Password(PASSWORD, "typed"))
    assert account.key == KEY and account.address == ADDRESS
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert os.listdir(path.parent) == ["evm.json"], "no temp file left beside it"
    data = json.loads(path.read_text())
    assert data["version"] == 3 and data["crypto"]["kdf"] == "scrypt"
    assert keystore.address_of(data) == ADDRESS
    assert_no_secret(path.read_text())


def test_the_file_is_0600_whatever_the_umask(tmp_path):
    old = os.umask(0o000)
    try:
        path = written(tmp_path)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700


def test_a_keystore_path_is_relative_to_the_home(tmp_path):
    assert keystore.resolve(tmp_path, "keys/evm.json") == tmp_path / "keys" / "evm.json"
    assert keystore.resolve(tmp_path, "/abs/k.json") == Path("/abs/k.json")


async def test_unlock_async_decrypts_off_the_event_loop(tmp_path, monkeypatch):
    path = written(tmp_path)
    threads = []
    real = keystore.unlock

    def spy(*args):
        threads.append(threading.current_thread())
        return real(*args)

    monkeypatch.setattr(keystore, "unlock", spy)
    account = await keystore.unlock_async(path, PASSWORD)
    assert account.address == ADDRESS
    assert threads and threads[0] is not threading.main_thread()


# --------------------------------------------------------------------------- refusals, in one line each


def test_a_wrong_password_is_refused_naming_where_it_came_from(tmp_path):
    path = written(tmp_path)
    for source in (f"from {keystore.PASSWORD_VARIABLE}", "typed"):
        with pytest.raises(KeystoreError) as info:
            keystore.unlock(path, Password(PASSWORD + "!", source))
        assert str(info.value) == f"keystore {path}: wrong password ({source})"
        assert info.value.code == 1
        assert_no_secret(said(info.value))
        assert PASSWORD + "!" not in said(info.value)


def test_a_missing_keystore_says_how_to_make_one(tmp_path):
    path = tmp_path / "keys" / "evm.json"
    with pytest.raises(KeystoreError) as info:
        keystore.check(path)
    assert str(info.value) == (f"keystore {path} not found: create one with `botctl keys new evm` "
                               "(or `botctl keys import evm`)")


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o602, 0o644])
def test_a_keystore_others_may_read_or_write_is_refused(tmp_path, mode):
    path = written(tmp_path)
    path.chmod(mode)
    with pytest.raises(KeystoreError) as info:
        keystore.check(path)
    assert str(info.value) == f"keystore {path} is readable by others: chmod 600 {path}"
    with pytest.raises(KeystoreError, match="readable by others"):
        keystore.unlock(path, PASSWORD)  # an unlock checks first: never decrypts a file others can read


@pytest.mark.parametrize("content, reason", [
    (b"not json " + KEY.hex().encode(), "is not a JSON file"),
    (b"[1, 2]", "is not a v3 JSON keystore (version 3 expected)"),
    (b'{"version": 1}', "is not a v3 JSON keystore (version 3 expected)"),
    (b'{"version": 3, "crypto": {"kdf": "scrypt"}}', "is not a v3 JSON keystore (its crypto section is incomplete)"),
])
def test_a_file_that_is_no_v3_keystore_is_refused_without_quoting_it(tmp_path, content, reason):
    path = tmp_path / "evm.json"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(KeystoreError) as info:
        keystore.check(path)
    assert str(info.value).startswith(f"keystore {path} {reason}")
    assert_no_secret(said(info.value))


def test_a_keystore_whose_address_field_was_altered_is_refused(tmp_path):
    path = written(tmp_path)
    data = json.loads(path.read_text())
    data["address"] = "00" * 20
    path.write_text(json.dumps(data))
    with pytest.raises(KeystoreError, match="address field .* is not the address of the key"):
        keystore.unlock(path, PASSWORD)


# --------------------------------------------------------------------------- writing: whole, new, or nothing


def test_an_existing_keystore_is_never_overwritten(tmp_path):
    path = written(tmp_path)
    before = path.read_bytes()
    with pytest.raises(KeystoreError) as info:
        keystore.write_new(path, keystore.new_key(), "other password", scrypt_n=CHEAP)
    assert str(info.value).startswith(f"keystore {path} already exists: nothing was written")
    assert info.value.code == 1
    assert path.read_bytes() == before
    assert os.listdir(path.parent) == ["evm.json"]


def test_a_keystore_appearing_while_encrypting_is_not_overwritten(tmp_path, monkeypatch):
    """Another `keys new` finishing first: the last look before writing is not trusted, the link is."""
    from eth_account import Account

    path = tmp_path / "keys" / "evm.json"
    real = Account.encrypt

    def racing(*args, **kwargs):
        path.parent.mkdir(mode=0o700)
        path.write_text("theirs")
        return real(*args, **kwargs)

    monkeypatch.setattr(Account, "encrypt", staticmethod(racing))
    with pytest.raises(KeystoreError, match="already exists"):
        keystore.write_new(path, KEY, PASSWORD, scrypt_n=CHEAP)
    assert path.read_text() == "theirs"
    assert os.listdir(path.parent) == ["evm.json"], "the temp file was removed"


@pytest.mark.parametrize("failing", ["fsync", "link"])
def test_a_failure_after_the_temp_file_exists_leaves_no_file_behind(tmp_path, monkeypatch, failing):
    path = tmp_path / "keys" / "evm.json"
    created = []
    real_open = os.open

    def spy_open(name, *args, **kwargs):
        created.append(Path(name))
        return real_open(name, *args, **kwargs)

    def broken(*args, **kwargs):
        assert any(p.name.endswith(".tmp") and p.exists() for p in created), "the temp file exists by now"
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(keystore.os, "open", spy_open)
    monkeypatch.setattr(keystore.os, failing, broken)
    with pytest.raises(KeystoreError) as info:
        keystore.write_new(path, KEY, PASSWORD, scrypt_n=CHEAP)
    assert str(info.value) == f"cannot write keystore {path}: Input/output error: {path.parent}; nothing was written"
    assert os.listdir(path.parent) == []


def test_an_interrupt_while_writing_leaves_no_file_behind(tmp_path, monkeypatch):
    path = tmp_path / "keys" / "evm.json"

    def interrupted(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(keystore.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        keystore.write_new(path, KEY, PASSWORD, scrypt_n=CHEAP)
    assert os.listdir(path.parent) == []


def test_a_folder_that_cannot_be_made_is_one_line_and_nothing_written(tmp_path):
    (tmp_path / "keys").write_text("a file where the folder should be")
    path = tmp_path / "keys" / "evm.json"
    with pytest.raises(KeystoreError, match=f"cannot write keystore {path}: "):
        keystore.write_new(path, KEY, PASSWORD, scrypt_n=CHEAP)
    assert sorted(os.listdir(tmp_path)) == ["keys"]


def test_an_empty_password_is_refused(tmp_path):
    with pytest.raises(KeystoreError, match="empty password"):
        keystore.write_new(tmp_path / "evm.json", KEY, "", scrypt_n=CHEAP)
    assert not (tmp_path / "evm.json").exists()


# --------------------------------------------------------------------------- the key and the password as given


@pytest.mark.parametrize("text", [KEY.hex(), "0x" + KEY.hex(), "  0X" + KEY.hex().upper() + "\n"])
def test_a_private_key_is_hex_with_0x_optional(text):
    assert keystore.parse_key(text) == KEY


@pytest.mark.parametrize("text", [KEY.hex()[:-1], KEY.hex() + "00", KEY.hex()[:-1] + "g", "", "00" * 32,
                                  "ff" * 32, f"{keystore.SECP256K1_N:064x}"])
def test_a_bad_private_key_is_refused_without_echoing_it(text):
    with pytest.raises(KeystoreError) as info:
        keystore.parse_key(text)
    assert str(info.value).startswith("not a private key: expected 64 hex digits")
    if text:
        assert text.strip() not in said(info.value)
        assert text.strip()[4:40] not in said(info.value)


def test_new_keys_are_valid_and_different():
    keys = {keystore.new_key() for _ in range(20)}
    assert len(keys) == 20
    assert all(len(k) == 32 and 0 < int.from_bytes(k, "big") < keystore.SECP256K1_N for k in keys)


def test_the_password_comes_from_the_environment_then_dotenv():
    got = keystore.password_from_env_or_prompt(environ={"BOTCTL_EVM_PASSWORD": PASSWORD}, interactive=False)
    assert got.value == PASSWORD and got.source == "from BOTCTL_EVM_PASSWORD"
    got = keystore.password_from_env_or_prompt(environ={}, dotenv={"BOTCTL_EVM_PASSWORD": PASSWORD},
                                               interactive=False)
    assert got.value == PASSWORD and got.source == "from BOTCTL_EVM_PASSWORD in .env"


def test_without_a_terminal_the_password_must_be_in_the_environment():
    asked = []
    with pytest.raises(KeystoreError, match="set BOTCTL_EVM_PASSWORD"):
        keystore.password_from_env_or_prompt(environ={}, interactive=False, ask=asked.append)
    assert asked == [], "no prompt without a terminal"
    with pytest.raises(KeystoreError, match="set but empty"):
        keystore.password_from_env_or_prompt(environ={"BOTCTL_EVM_PASSWORD": ""}, interactive=True)


def test_a_typed_password_is_confirmed_and_never_empty():
    def typing(*answers):
        it = iter(answers)
        return lambda prompt: next(it)

    got = keystore.password_from_env_or_prompt(environ={}, interactive=True, confirm=True,
                                               ask=typing(PASSWORD, PASSWORD))
    assert got.value == PASSWORD and got.source == "typed"
    with pytest.raises(KeystoreError, match="differ") as info:
        keystore.password_from_env_or_prompt(environ={}, interactive=True, confirm=True,
                                             ask=typing(PASSWORD, PASSWORD + "x"))
    assert_no_secret(said(info.value))
    with pytest.raises(KeystoreError, match="empty password"):
        keystore.password_from_env_or_prompt(environ={}, interactive=True, ask=typing(""))


def test_nothing_shows_the_password_or_the_key(tmp_path):
    password = Password(PASSWORD, "typed")
    assert_no_secret(repr(password) + str(password) + f"{password}" + f"{password!r}")
    account = keystore.unlock(written(tmp_path), password)
    assert_no_secret(repr(account) + str(account))


# --------------------------------------------------------------------------- the guards say what check says


def test_the_live_guard_and_doctor_report_what_check_reports(tmp_path):
    from engine.guards import key_problem, live_problems
    from engine.settings import ChainSettings, Settings
    from engine.stages import stage

    chain = ChainSettings(kind="evm", keystore="keys/evm.json")
    path = tmp_path / "keys" / "evm.json"
    with pytest.raises(KeystoreError) as missing:
        keystore.check(path)
    assert key_problem(tmp_path, chain) == str(missing.value)

    written(tmp_path)
    assert key_problem(tmp_path, chain) is None
    path.chmod(0o644)
    problem = key_problem(tmp_path, chain)
    assert problem == f"keystore {path} is readable by others: chmod 600 {path}"
    settings = Settings(home=tmp_path, profile="testnet", mode="live", dry_run=False, chains={"base": chain})
    assert live_problems(stage("testnet"), settings, {}, {"base": problem}) == [f"chains.base: {problem}"]
    assert key_problem(tmp_path, ChainSettings(kind="evm")) == "no keystore configured"
