"""What every command needs: the settings, the book's path and the policy; the owner's name."""

from __future__ import annotations

import sys
from pathlib import Path

from console.errors import Failed


def context():
    """(settings, database path, policy) for a command that reads or commands an existing book."""
    from engine.kernel import DB_NAME, policy_for
    from engine.settings import load_settings

    settings = load_settings()
    db = Path(settings.home) / DB_NAME
    if not db.exists():
        raise Failed(f"no book at {db}: start the engine once with `botctl run`")
    return settings, db, policy_for(settings)


def command_line() -> str:
    """How this process names itself as the owner of the book."""
    return " ".join(["botctl", *sys.argv[1:]])[:200]
