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
    "test_random_kills_from_outside",
    "test_promotion_rests_on_evidence_from_real_runs_and_drills",
    "test_signals_open_positions_on_chain_and_close_them_with_the_book_equal_to_the_chain",
    "test_testnet_evidence_counts_live_round_trips_hours_and_the_failure_drill_but_not_paper",
    "test_a_drill_right_after_round_trips_waits_out_the_cooldown",
    "test_keys_new_writes_a_private_keystore_that_opens_to_the_printed_address",
    "runTest",  # the hypothesis state machines of the book
    "test_a_chain_whose_quote_is_its_coin_opens_and_closes_positions_through_weth",
    "test_a_close_whose_exits_all_fail_exits_1_naming_the_position_and_each_close_gets_a_fresh_budget",
    "test_a_paper_run_after_live_trading_in_the_same_home_runs_and_counts_elsewhere",
    "test_a_one_off_close_the_chain_does_not_mine_answers_in_its_timeout_and_leaves_the_exit_held",
    "test_a_node_cut_off_after_the_sends_holds_the_funds_until_it_answers_again",
)


def pytest_collection_modifyitems(items):
    """Start the longest tests first, in LONGEST_FIRST's order; the rest keep theirs."""
    first = {name: index for index, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: first.get(item.originalname, len(first)))
