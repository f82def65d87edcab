"""The console and `botctl close` from another process at once: the close shows up live."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest

from console.tui.app import BotctlApp

from tuikit import make_settings, prepare_home

pytestmark = pytest.mark.slow


async def test_close_from_another_terminal_shows_up_in_the_tui(tmp_path):
    home = tmp_path / "home"
    await asyncio.to_thread(prepare_home, home, 60)
    app = BotctlApp(make_settings(home), run_engine=False)  # builds and owns the engine, as `botctl tui`
    async with app.run_test(size=(120, 40)) as pilot:
        await asyncio.wait_for(app.wait_ready(), 30)
        engine, table = app.engine, app.positions.table
        pid = table.keys[0]
        env = {k: v for k, v in os.environ.items() if not k.startswith("BOTCTL_")}
        env["BOTCTL_HOME"] = str(home)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "console.cli", "close", str(pid), "--yes", "--json", env=env, cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        done = asyncio.ensure_future(proc.communicate())
        seen_closing = False
        blocks = 0
        while not done.done():
            # the other process waits for the exit to fill: the world has to move on
            await asyncio.wait([done], timeout=0.05)
            if engine.book.positions.base.get(pid) is not None and engine.book.positions.base[pid].state == "closing":
                await app.sync()
                seen_closing = seen_closing or table.row_text(pid).endswith("closing")
            await engine.tick()
            blocks += 1
            assert blocks < 2000, "the close never finished"
        out, err = done.result()
        assert proc.returncode == 0, err.decode()
        report = json.loads(out)
        assert report["state"] == "done" and report["positions"][0]["state"] == "closed"
        assert seen_closing, "the row showed the position closing while the other process waited"
        await app.sync()
        await pilot.pause()
        assert pid not in engine.book.positions.base and pid not in table
        lines = app.events.lines
        assert any(f"closing #{pid} (operator close) by " in line and "pid" in line for line in lines), lines
        assert any("from another terminal: done" in line for line in lines), lines
