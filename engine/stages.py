"""The shipped rollout stages, read from profiles/*.toml, and the stage a book is in.

The stages' rules (ceilings, criteria, what breaches them) are pure and live in
engine/core/stages.py; this module only reads files and the database.
"""

from __future__ import annotations

import sqlite3
import tomllib
from dataclasses import replace
from functools import cache
from importlib import resources
from pathlib import Path

from engine.core.stages import ORDER, Ceiling, Stage, StageError, from_profile


def profile_file(name: str) -> Path:
    return Path(str(resources.files("profiles").joinpath(f"{name}.toml")))


@cache
def stages() -> dict[str, Stage]:
    """Every stage, from the shipped profiles (the ceilings nobody's config can loosen)."""
    out = {}
    for name in ORDER:
        with open(profile_file(name), "rb") as fh:
            out[name] = from_profile(name, tomllib.load(fh))
    return out


def unbounded() -> dict[str, Stage]:
    """Every stage with no ceiling at all: for load benchmarks (10,000 positions) and the few tests
    whose scenario is beyond every stage by design. Nothing in the product asks for it."""
    return {name: replace(s, ceiling=Ceiling()) for name, s in stages().items()}


def stage(name: str) -> Stage:
    try:
        return stages()[name]
    except KeyError:
        raise StageError(f"unknown stage {name!r} (one of: {', '.join(ORDER)})") from None


def stored_stage(db: Path) -> str | None:
    """The stage the book is in (None: no book yet). A read-only peek, no lock."""
    if not Path(db).exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None, timeout=5)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'stage'").fetchone()
    except sqlite3.Error:  # a book from before stages (or not migrated yet): the first stage
        return None
    finally:
        conn.close()
    return row[0] if row else ORDER[0]
