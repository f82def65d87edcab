"""Snapshots (pytest-textual-snapshot) of the main screen and the close dialog.

A fixed seed, a venue whose genesis time is frozen, and a frozen clock for ages:
the same pixels on every run. The book is prepared on disk first; the app then
builds its engine from it on mount, as `botctl tui` does. Update after a
deliberate change with `pytest tests/console --snapshot-update`, and look.
"""

from __future__ import annotations

import asyncio

import pytest

from console.tui.app import BotctlApp

from tuikit import GENESIS_S, make_settings, prepare_home

BLOCKS = 150
NOW = GENESIS_S * 1000 + (BLOCKS + 30) * 1000  # frozen: 30 s after the last block


@pytest.fixture
def home(tmp_path, frozen_genesis):
    home = tmp_path / "home"
    prepare_home(home, BLOCKS)
    return home


def make_app(home) -> BotctlApp:
    return BotctlApp(make_settings(home), run_engine=False, clock=lambda: NOW)


async def ready(pilot) -> None:
    app = pilot.app
    await asyncio.wait_for(app.wait_ready(), 30)
    await app.sync()
    await pilot.pause()


async def with_an_exit_in_flight(pilot) -> None:
    """Close position 2 (base: an EVM nonce) and sign + broadcast its exit: every panel has rows."""
    app = pilot.app
    await ready(pilot)
    await pilot.press("down", "c", "y")
    await app.workers.wait_for_complete()
    await app.engine.driver.advance_all()
    app.clear_notifications()
    await app.sync()
    await pilot.pause()


def test_main_screen_80x24(snap_compare, home):
    assert snap_compare(make_app(home), terminal_size=(80, 24), run_before=ready)


def test_main_screen_120x40_with_an_exit_in_flight(snap_compare, home):
    assert snap_compare(make_app(home), terminal_size=(120, 40), run_before=with_an_exit_in_flight)


def test_close_dialog(snap_compare, home):
    assert snap_compare(make_app(home), terminal_size=(80, 24), press=["down", "c"], run_before=ready)
