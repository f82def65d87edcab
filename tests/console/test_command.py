"""`botctl tui` as a command: lazy imports, and one error line when the book is owned elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from textual.app import App

from console.errors import Failed
from storage import ensure_home
from storage.owner import acquire

from tuikit import prepare_home


def test_the_command_module_does_not_import_textual():
    code = ("import sys, console.commands.tui\n"
            "assert 'textual' not in sys.modules and 'console.tui.app' not in sys.modules, sorted(sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


@pytest.fixture
def botctl_logger():
    """The command sets up its log file on the "botctl" logger (no propagation): put it back after."""
    import logging

    logger = logging.getLogger("botctl")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    yield
    for handler in logger.handlers:
        if handler not in saved[0]:
            handler.close()
    logger.handlers[:], logger.propagate, logger.level = saved


def test_tui_refuses_a_book_owned_by_another_process(tmp_path, monkeypatch, botctl_logger):
    from console.commands.tui import tui_command
    from console.tui.app import BotctlApp

    home = tmp_path / "home"
    prepare_home(home, 1)
    monkeypatch.setenv("BOTCTL_HOME", str(home))
    monkeypatch.setattr(BotctlApp, "run", lambda self, **kw: App.run(self, headless=True))
    owner = acquire(ensure_home(home), "botctl run")
    try:
        with pytest.raises(Failed, match="owned by pid"):
            tui_command(profile=None, seed=None, signals=None)
    finally:
        owner.release()
