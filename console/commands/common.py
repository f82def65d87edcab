"""What every command needs: the settings, the book's path and the policy; the owner's name."""

from __future__ import annotations

import sys
from pathlib import Path

from console.errors import Failed


def context(book: bool = True):
    """(settings, database path, policy) for a command that reads or commands an existing book
    (`book`: refused, naming the file and what to do, if there is none or it cannot be read)."""
    from engine.kernel import DB_NAME, policy_for
    from engine.settings import load_settings
    from storage import check_book

    settings = load_settings(check=False)  # no engine starts here; `build` checks the ceilings
    db = Path(settings.home) / DB_NAME
    if book:
        if not db.exists():
            raise Failed(f"no book at {db}: start the engine once with `botctl run`")
        check_book(db)
    return settings, db, policy_for(settings)


def command_line() -> str:
    """How this process names itself as the owner of the book."""
    return " ".join(["botctl", *sys.argv[1:]])[:200]


def confirm_live(settings) -> None:
    """Live funds: every guard first (a refusal is not a question), then the word LIVE, typed on a
    terminal. Nothing else starts an engine that moves real money."""
    import asyncio

    from engine.guards import check_live, live_funds

    if not live_funds(settings):
        return
    asyncio.run(check_live(settings))
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise Failed("live funds need a typed confirmation: start botctl from a terminal")
    import typer

    chains = ", ".join(sorted(settings.chains))
    typed = typer.prompt(f"this start trades REAL funds on {chains} (stage {settings.profile}, dry run off); "
                         "type LIVE to go on")
    if typed.strip() != "LIVE":
        raise Failed("not started: confirmation not typed")
