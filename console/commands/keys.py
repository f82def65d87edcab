"""`botctl keys`: create, import and show the EVM key's encrypted keystore.

A private key never comes from argv (any user sees argv in `ps`) nor goes to the terminal, the
log or the book: it is typed at a hidden prompt or piped on stdin, encrypted at once, and only the
address is printed.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer

from console.errors import Failed, Usage
from console.output import emit_json

app = typer.Typer(help="The EVM key, kept in an encrypted keystore (eth-account v3, scrypt).",
                  no_args_is_help=True)

MAX_KEY_INPUT = 4096  # more than one line of hex on stdin is not a key


class Kind(str, Enum):
    evm = "evm"


KIND = typer.Argument(..., help="Which key: evm (one keystore for the EVM chains).")
KEYSTORE = typer.Option(None, "--keystore", metavar="PATH",
                        help="The keystore file, relative to $BOTCTL_HOME unless absolute. Default: the "
                             "configured [chains.NAME] kind=\"evm\" keystore, else keys/evm.json.")
JSON = typer.Option(False, "--json", help="One JSON object on stdout.")


@contextmanager
def _said():
    """A keystore problem as the console's own error: one line, its exit code."""
    from wallet.keystore import KeystoreError

    try:
        yield
    except KeystoreError as exc:
        raise (Failed if exc.code == 1 else Usage)(str(exc)) from None


def _target(flag: str | None, create: bool) -> Path:
    """The keystore a command works on: --keystore, else the one the evm chains are configured
    with, else keys/evm.json in the home."""
    from engine.settings import load_settings
    from storage import ensure_home
    from wallet.keystore import DEFAULT_KEYSTORE, resolve

    settings = load_settings(check=False)  # no engine starts: a stage's ceilings are not this command's business
    home = Path(settings.home)
    if create:
        ensure_home(home)
    if flag:
        return resolve(home, flag)
    configured = sorted({str(resolve(home, c.keystore)) for c in settings.chains.values()
                         if c.kind == "evm" and c.keystore})
    if len(configured) > 1:
        raise Usage(f"the evm chains name {len(configured)} keystores ({', '.join(configured)}): "
                    "say which with --keystore")
    return Path(configured[0]) if configured else resolve(home, DEFAULT_KEYSTORE)


def _password(confirm: bool):
    from engine.settings import DOTENV, read_dotenv
    from wallet.keystore import password_from_env_or_prompt

    return password_from_env_or_prompt(confirm=confirm, dotenv=read_dotenv(Path(DOTENV)), dotenv_name=DOTENV)


def _said_address(address: str, path: Path, json_out: bool, note: str | None = None) -> None:
    if json_out:
        emit_json({"kind": "evm", "address": address, "keystore": str(path)})
        return
    print(f"address {address}")
    print(f"keystore {path}")
    if note:
        print(note)


BACKUP = "back up this file and its password: without both, the key and its funds are lost"


def new(kind: Kind = KIND, keystore: str | None = KEYSTORE, json_out: bool = JSON) -> None:
    """Make a new random key and write it to a new keystore (never over an existing one).

    The password comes from BOTCTL_EVM_PASSWORD, or is asked twice on a terminal."""
    from wallet.keystore import new_key, refuse_existing, write_new

    path = _target(keystore, create=True)
    with _said():
        refuse_existing(path)  # before asking for anything
        password = _password(confirm=True)
        address = write_new(path, new_key(), password)
    _said_address(address, path, json_out, BACKUP)


def import_key(ctx: typer.Context, kind: Kind = KIND, keystore: str | None = KEYSTORE,
               json_out: bool = JSON) -> None:
    """Encrypt an existing private key into a new keystore (never over an existing one).

    The key is typed at a hidden prompt, or piped on stdin (one line of hex, 0x optional); never
    an argument, which others could read in `ps`. The password comes from BOTCTL_EVM_PASSWORD, or
    is asked twice on a terminal."""
    from wallet.keystore import parse_key, refuse_existing, write_new

    if ctx.args:  # taken, not refused by the parser, so that the error does not print the key again
        raise Usage("`keys import` takes no argument but the kind and its options, and a private key is never "
                    "taken from the command line (others can read it in `ps` and it stays "
                    "in the shell's history): pipe it on stdin or type it at the prompt")
    path = _target(keystore, create=True)
    with _said():
        refuse_existing(path)
        key = parse_key(_key_input())
        password = _password(confirm=True)
        address = write_new(path, key, password)
    _said_address(address, path, json_out, BACKUP)


def _key_input() -> str:
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("private key (hex, hidden): ")
    text = sys.stdin.read(MAX_KEY_INPUT + 1)
    lines = [line for line in text.splitlines() if line.strip()]
    if len(text) > MAX_KEY_INPUT or len(lines) != 1:
        raise Usage("stdin must hold one line, the private key in hex: nothing was written")
    return lines[0]


def show(kind: Kind = KIND, keystore: str | None = KEYSTORE,
         unlock: bool = typer.Option(False, "--unlock", help="Decrypt it too, to prove the password "
                                     "(BOTCTL_EVM_PASSWORD or a prompt) opens it (~1 s, 256 MB)."),
         json_out: bool = JSON) -> None:
    """The keystore's address, read from the file without decrypting it (unless --unlock)."""
    from wallet.keystore import address_of, check
    from wallet.keystore import unlock as open_keystore

    path = _target(keystore, create=False)
    with _said():
        data = check(path)
        if unlock:
            address = open_keystore(path, _password(confirm=False)).address
        else:
            address = address_of(data)
    if address is None:
        raise Failed(f"keystore {path} records no address: `botctl keys show evm --unlock` decrypts it")
    _said_address(address, path, json_out, "unlocked: the password opens it" if unlock else None)


app.command("new")(new)
app.command("import", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(import_key)
app.command("show")(show)
