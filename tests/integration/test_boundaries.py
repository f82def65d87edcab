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


def test_the_core_contract_names_every_shell_module():
    """A new engine module outside engine.core is shell until proven pure: the contract must forbid it."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c.get("source_modules") == ["engine.core"])
    forbidden = set(contract["forbidden_modules"])
    shell = {f"engine.{p.stem}" for p in (ROOT / "engine").iterdir()
             if p.name != "core" and p.name != "__init__.py" and (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert shell, "no engine modules found"
    assert shell - forbidden == set(), "engine modules the core contract does not forbid"


def test_no_import_circle_through_the_core():
    """The decider once imported the inbox, which imported the rollout, the audit and the decider again."""
    code = ("import sys\nimport engine.core.decider\n"
            "print(sorted(m for m in sys.modules if m.startswith('engine.') and not m.startswith('engine.core')))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.stdout.strip() == "[]", result.stdout + result.stderr


def test_only_the_venue_chooser_names_the_paper_venue():
    """The kernel knows the port, not the paper world: a live engine must not depend on the simulation."""
    named = []
    for package in ("console", "engine", "storage", "wallet"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("engine/venues/paper/") or rel == "engine/venues/choose.py":
                continue
            text = path.read_text()
            if "venues.paper" in text or "PaperVenue" in text or "paper-venue.db" in text:
                named.append(rel)
    assert named == ["engine/settings.py"], named  # settings validates the paper venue's own settings


def test_every_package_is_installed():
    """A package missing from pyproject's list installs from a clean checkout without it (an editable
    install in a long-lived venv hides that): every folder with an __init__.py is listed, and nothing else."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for root in ("console", "engine", "storage", "wallet",
                                                                     "profiles")
             for p in (ROOT / root).rglob("__init__.py")}
    assert listed == found
