"""Helpers for tests that run the real CLI as a subprocess: one environment, one error-line check.

A module of its own (not conftest) so that test modules import it by a name no other
directory's conftest shadows.
"""

from __future__ import annotations

import os
from pathlib import Path

QUIET = {"BOTCTL_MAX_HOLD_S": "100000", "BOTCTL_STOP_LOSS_BPS": "0", "BOTCTL_TAKE_PROFIT_BPS": "0"}


def env_for(home: Path, **extra: str) -> dict:
    """This process's environment without any BOTCTL_ variable, a home of the test's, an unpaced
    paper world and no automatic exits (what a test does to a position is all that happens to it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    env.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0", **QUIET})
    env.update(extra)
    return env


def one_error_line(result) -> str:
    """The contract: exactly one `error:` line on stderr, never a traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def put_book_in_stage(home, name: str) -> None:
    """Move a book's stage through the engine's own commands, evidence taken as given.

    A test seam, used only to reach a stage beyond paper (whose evidence takes hours of trading):
    the promotion path itself is tested with real evidence in tests/cli/test_rollout.py."""
    import asyncio

    from engine.core.messages import ChangeStage
    from engine.core.stages import ORDER
    from engine.kernel import open_book
    from engine.settings import load_settings

    async def go():
        owner = await open_book(load_settings(home=home, profile="paper"), "test")
        try:
            for previous, following in zip(ORDER, ORDER[1:ORDER.index(name) + 1]):
                result = await owner.sequencer.submit(ChangeStage(following, previous, (), "{}", "test", owner.now()))
                assert result.accepted, result.reason
        finally:
            await owner.close()

    asyncio.run(go())
