"""The EVM key at rest: an eth-account (Web3 Secret Storage v3) keystore, encrypted with scrypt.

Whoever holds the key spends the funds, so the key lives only in an encrypted file that no one
else may read, and the clear key exists only in memory. Neither the key nor the password ever
enters a message, a repr or a log line: every error below names the file and the fix, never what
was typed, and an error of the crypto library (whose message or arguments might hold either) is
never chained to it: the decrypt's failure is raised outside the `except` that caught it.

eth_account costs half a second to import and scrypt ~0.7 s and 256 MB per encrypt or decrypt:
it is imported inside the functions that need it, and an engine decrypts through `unlock_async`,
off the event loop.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:
    from eth_account.signers.local import LocalAccount

PASSWORD_VARIABLE = "BOTCTL_EVM_PASSWORD"
DEFAULT_KEYSTORE = "keys/evm.json"
# secp256k1's group order: a private key is an integer in [1, N).
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HOW_TO_CREATE = "create one with `botctl keys new evm` (or `botctl keys import evm`)"


class KeystoreError(Exception):
    """A keystore problem the operator can act on, in one line naming the file and the fix.

    `code` is the exit code the console gives it: 2 for a file or setting to fix, 1 for a refusal
    (a wrong password, a file that would be overwritten)."""

    code = 2

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        if code is not None:
            self.code = code


@dataclass(frozen=True)
class Password:
    """A password and where it came from (for the wrong-password message). Shown, it is only its
    source: a log line or a repr that catches one by mistake still says nothing."""

    value: str = field(repr=False)
    source: str  # "from BOTCTL_EVM_PASSWORD", "typed", ...

    def __repr__(self) -> str:
        return f"Password({self.source})"

    __str__ = __repr__


def resolve(home: Path | str, rel: Path | str) -> Path:
    """A keystore setting is relative to $BOTCTL_HOME (an absolute path stays as it is)."""
    path = Path(rel).expanduser()
    return path if path.is_absolute() else Path(home) / path


def check(path: Path | str) -> dict[str, Any]:
    """The keystore at `path`, parsed, if it is a private v3 JSON keystore; else KeystoreError.
    Reads the encrypted file only: nothing is decrypted, no password is needed."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise KeystoreError(f"keystore {path} not found: {HOW_TO_CREATE}") from None
    except OSError as exc:
        raise KeystoreError(f"keystore {path} cannot be read: {exc.strerror or type(exc).__name__}") from None
    if not _is_file(mode):
        raise KeystoreError(f"keystore {path} is not a file: {HOW_TO_CREATE}")
    if mode & 0o077:
        raise KeystoreError(f"keystore {path} is readable by others: chmod 600 {path}")
    problem, data = _read(path)
    if problem:
        raise KeystoreError(f"keystore {path} {problem}")
    return data


def address_of(data: Mapping[str, Any]) -> str | None:
    """The address a keystore says it holds (0x, EIP-55 checksummed), read without decrypting."""
    raw = str(data.get("address") or "").lower().removeprefix("0x")
    if len(raw) != 40:
        return None
    return checksum(raw)


def checksum(hex40: str) -> str:
    """EIP-55 casing, with eth_hash alone (eth_utils would cost a quarter second to import)."""
    from eth_hash.auto import keccak

    lower = hex40.lower().removeprefix("0x")
    digest = keccak(lower.encode()).hex()
    return "0x" + "".join(c.upper() if int(digest[i], 16) >= 8 else c for i, c in enumerate(lower))


def unlock(path: Path | str, password: Password | str) -> "LocalAccount":
    """Decrypt the keystore (checked first) into an account that signs. Blocks ~0.7 s: from async
    code, use `unlock_async`."""
    path = Path(path)
    data = check(path)
    source = password.source if isinstance(password, Password) else "given"
    secret = password.value if isinstance(password, Password) else password
    from eth_account import Account

    account, wrong, unreadable = None, False, None
    try:
        account = Account.from_key(Account.decrypt(data, secret))
    except ValueError as exc:  # MAC mismatch; nothing of the key or the password in what is kept
        wrong = "mac mismatch" in str(exc).lower()
        unreadable = None if wrong else type(exc).__name__
    except Exception as exc:  # an unsupported kdf or cipher, a field of the wrong type
        unreadable = type(exc).__name__
    if wrong:
        raise KeystoreError(f"keystore {path}: wrong password ({source})", code=1)
    if account is None:
        raise KeystoreError(f"keystore {path} cannot be decrypted ({unreadable}): not an eth-account v3 keystore?")
    stated = address_of(data)
    if stated is not None and stated != account.address:
        raise KeystoreError(f"keystore {path}: its address field ({stated}) is not the address of the key it "
                            f"holds ({account.address}): the file was altered; restore it from a backup")
    return account


async def unlock_async(path: Path | str, password: Password | str) -> "LocalAccount":
    """`unlock` in a worker thread: scrypt would stall the event loop (and the sequencer) ~0.7 s."""
    import asyncio

    return await asyncio.to_thread(unlock, path, password)


def password_from_env_or_prompt(
    *,
    confirm: bool = False,
    environ: Mapping[str, str] | None = None,
    dotenv: Mapping[str, str] | None = None,
    dotenv_name: str = ".env",
    interactive: bool | None = None,
    ask: Callable[[str], str] | None = None,
) -> Password:
    """BOTCTL_EVM_PASSWORD from the environment, then from .env (`dotenv`, already read), else a
    hidden prompt, but only on a terminal (`confirm`: asked twice, must match). Never empty."""
    environ = os.environ if environ is None else environ
    for value, source in ((environ.get(PASSWORD_VARIABLE), f"from {PASSWORD_VARIABLE}"),
                          ((dotenv or {}).get(PASSWORD_VARIABLE), f"from {PASSWORD_VARIABLE} in {dotenv_name}")):
        if value is None:
            continue
        if not value:
            raise KeystoreError(f"{PASSWORD_VARIABLE} is set but empty: a keystore needs a password")
        return Password(value, source)
    if interactive is None:
        interactive = sys.stdin.isatty()
    if not interactive:
        raise KeystoreError(f"the keystore password: set {PASSWORD_VARIABLE} in the environment (or .env), or run "
                            "botctl on a terminal to be asked for it")
    if ask is None:
        import getpass

        ask = getpass.getpass
    typed = ask("keystore password: ")
    if not typed:
        raise KeystoreError("an empty password: a keystore needs one")
    if confirm and ask("the same password again: ") != typed:
        raise KeystoreError("the two passwords typed differ: nothing was written")
    return Password(typed, "typed")


def parse_key(text: str) -> bytes:
    """A private key as typed or piped: 64 hex digits, 0x optional, surrounding blanks ignored. The
    error never repeats the input, nor its length."""
    raw = text.strip()
    if raw[:2].lower() == "0x":
        raw = raw[2:]
    key = None
    if len(raw) == 64 and all(c in "0123456789abcdefABCDEF" for c in raw):
        key = bytes.fromhex(raw)
    if key is None or not 0 < int.from_bytes(key, "big") < SECP256K1_N:
        raise KeystoreError("not a private key: expected 64 hex digits (32 bytes, 0x optional) of a valid "
                            "secp256k1 key; nothing was written")
    return key


def new_key() -> bytes:
    """32 random bytes from the OS that are a valid secp256k1 key (all but ~2^-128 of them are)."""
    while True:
        key = secrets.token_bytes(32)
        if 0 < int.from_bytes(key, "big") < SECP256K1_N:
            return key


def write_new(path: Path | str, key_bytes: bytes, password: Password | str, *, scrypt_n: int | None = None) -> str:
    """Encrypt `key_bytes` into a new keystore at `path` and return its address.

    Never overwrites: a file already there (even one appearing meanwhile) is refused, naming it.
    The file is 0600 from its creation and appears whole or not at all (a temp file in the same
    directory, fsynced, then linked into place); a directory it creates is 0700. `scrypt_n`: the
    scrypt cost, for tests only; the product always leaves eth-account's default (2**18)."""
    path = Path(path)
    secret = password.value if isinstance(password, Password) else password
    if not secret:
        raise KeystoreError("an empty password: a keystore needs one; nothing was written")
    if len(key_bytes) != 32 or not 0 < int.from_bytes(key_bytes, "big") < SECP256K1_N:
        raise KeystoreError("not a private key (32 bytes of a valid secp256k1 key); nothing was written")
    refuse_existing(path)
    from eth_account import Account

    data = Account.encrypt(key_bytes, secret, kdf="scrypt", iterations=scrypt_n)
    address = address_of(data)
    body = json.dumps(data, sort_keys=True).encode()
    failed = None
    try:
        _make_private_dirs(path.parent)
        _place(path, body)
    except OSError as exc:
        failed = exc.strerror or type(exc).__name__
        where = Path(os.fsdecode(exc.filename)) if exc.filename else path.parent
        where = where.parent if where.name.endswith(".tmp") else where  # the folder, not our temp name
    if failed is not None:
        raise KeystoreError(f"cannot write keystore {path}: {failed}: {where}; nothing was written", code=1)
    return address


def refuse_existing(path: Path | str) -> None:
    """A keystore is never replaced: it may hold the only copy of a funded key."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        raise KeystoreError(f"keystore {path} already exists: nothing was written (move it away first if you "
                            "really mean to replace it: it may hold the only copy of a funded key)", code=1)


# --------------------------------------------------------------------------- files


def _is_file(mode: int) -> bool:
    import stat

    return stat.S_ISREG(mode)


def _read(path: Path) -> tuple[str | None, dict[str, Any]]:
    """(what is wrong, the parsed keystore)."""
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        return f"cannot be read: {exc.strerror or type(exc).__name__}", {}
    except ValueError:  # the parser's message may quote the file: never shown
        return f"is not a JSON file: {HOW_TO_CREATE}", {}
    if not isinstance(data, dict) or data.get("version") != 3:
        return "is not a v3 JSON keystore (version 3 expected)", {}
    crypto = data.get("crypto", data.get("Crypto"))
    needed = ("cipher", "cipherparams", "ciphertext", "kdf", "kdfparams", "mac")
    if not isinstance(crypto, dict) or any(name not in crypto for name in needed):
        return "is not a v3 JSON keystore (its crypto section is incomplete)", {}
    if crypto.get("kdf") not in ("scrypt", "pbkdf2"):
        return "is not a v3 JSON keystore (kdf must be scrypt or pbkdf2)", {}
    if data.get("address") is not None and address_of(data) is None:
        return "is not a v3 JSON keystore (its address field is not 20 bytes of hex)", {}
    return None, data


def _make_private_dirs(folder: Path) -> None:
    """Create the missing directories down to `folder`, each 0700 (umask aside); existing ones are
    left as they are."""
    missing = []
    for parent in (folder, *folder.parents):
        if parent.exists():
            break
        missing.append(parent)
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue
        os.chmod(directory, 0o700)


def _place(path: Path, body: bytes) -> None:
    """Write `body` to a temp file beside `path` (0600 from its creation), fsync it, then link it
    to `path`, which fails if anything is there. The temp file never outlives this call."""
    temp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(temp, flags, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask left
            view = memoryview(body)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        _link(temp, path)
        _fsync_dir(path.parent)
    finally:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass


def _link(temp: Path, path: Path) -> None:
    """Put `temp` at `path` unless something is there: a hard link fails atomically if it is. A file
    system without hard links gets a rename after a last look (a race there is only with the
    operator's own second `keys new`)."""
    try:
        os.link(temp, path)
        return
    except FileExistsError:
        refuse_existing(path)
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
    refuse_existing(path)
    os.rename(temp, path)


def _fsync_dir(folder: Path) -> None:
    """The new name itself survives a power cut only once its directory is synced."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
