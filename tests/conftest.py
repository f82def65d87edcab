"""Test-wide setup: make tests/builders.py importable, and an engine factory fixture."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)

from builders import start_engine  # noqa: E402


@pytest.fixture
async def make_engine(tmp_path):
    """`h = await make_engine(policy, cash={...})`: a real Sequencer on tmp_path/botctl.db, closed after."""
    started = []

    async def make(pol=None, cash=None, native=None, **kw):
        h = await start_engine(tmp_path, pol, cash=cash, native=native, **kw)
        started.append(h)
        return h

    yield make
    for h in started:
        try:
            await h.close()
        except Exception:  # a test may have left the sequencer dead: still free the writer
            await h.writer.close()


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """`prepared(home, name, make)`: the home `make(path)` builds (a book from a seeded paper run, say),
    built once per test process under `name` and copied to `home` for each test that asks: a seed
    replays exactly, so every copy is the book that test would have built itself, minus the time."""
    made: dict[str, Path] = {}

    def copy(home: Path, name: str, make) -> Path:
        if name not in made:
            source = tmp_path_factory.mktemp("prepared") / "home"
            make(source)
            made[name] = source
        shutil.copytree(made[name], home, symlinks=True)  # modes too: a home is 0700, its files 0600
        return home

    return copy


# The longest tests, longest first (seconds each; the promotion test's simulated day first). With
# `--dist worksteal` a long test collected last becomes the tail the other worker waits out.
LONGEST_FIRST = (
    "test_promotion_rests_on_evidence_from_real_runs_and_drills",
    "test_random_kills_from_outside",
    "test_a_sender_that_cannot_withdraw_says_its_command_may_still_run",
    "test_signals_open_positions_on_chain_and_close_them_with_the_book_equal_to_the_chain",
)


def pytest_collection_modifyitems(items):
    """Start the longest tests first, in LONGEST_FIRST's order; the rest keep theirs."""
    first = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: first.get(item.originalname, len(first)))
