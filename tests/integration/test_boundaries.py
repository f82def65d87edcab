"""Imports point down only: engine/, wallet/ and storage/ never import the console's libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_layers_hold():
    result = subprocess.run([sys.executable, "-m", "importlinter.cli", "--config", str(ROOT / "pyproject.toml")],
                            capture_output=True, text=True, cwd=ROOT)
    if "No module named importlinter.cli" in result.stderr:  # older entry point name
        result = subprocess.run(["lint-imports"], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_packages_load_without_console_libraries():
    code = (
        "import sys\n"
        "import engine.kernel, engine.views, engine.audit, storage, wallet.paper\n"
        "bad = sorted(m for m in ('textual', 'typer', 'rich', 'console', 'web3', 'solana') if m in sys.modules)\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
