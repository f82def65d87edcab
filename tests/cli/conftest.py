from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def botctl(home: Path, tmp_path: Path):
    """Run the real CLI in a subprocess with its own $BOTCTL_HOME and an empty working directory."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        full = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
        full.update({"BOTCTL_HOME": str(home), "BOTCTL_PAPER__SPEED": "0"})
        full.update(env or {})
        return subprocess.run([sys.executable, "-m", "console.cli", *args], capture_output=True, text=True,
                              env=full, cwd=tmp_path, timeout=timeout)

    return run
