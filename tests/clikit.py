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
