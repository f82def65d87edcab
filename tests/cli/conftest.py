from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import terminal


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def botctl(home: Path, tmp_path: Path):
    """Run the real CLI in a subprocess with its own $BOTCTL_HOME and an empty working directory
    (warm: tests/terminal.py's `run`; `cold=True` starts a fresh interpreter)."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120,
            cold: bool = False) -> subprocess.CompletedProcess:
        full = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
        full.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0"})
        full.update(env or {})
        return terminal.run(args, full, cwd=tmp_path, timeout=timeout, cold=cold)

    return run
