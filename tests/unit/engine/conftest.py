"""Fixtures shared by the engine's unit tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No BOTCTL_ variable from the caller's shell, an empty working directory, a fresh private home."""
    for key in list(os.environ):
        if key.startswith("BOTCTL_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BOTCTL_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(mode=0o700)
    return tmp_path
