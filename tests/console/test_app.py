"""The console driven by keys (Pilot), on a seeded paper engine ticked by the test.

The app is given the engine and does not run the tick loop itself: each test
ticks by hand, so what happens is the same on every run. `app.sync()` repaints
at once (the app otherwise coalesces repaints to one per 50 ms).
"""

from __future__ import annotations

import time

from console.tui.app import BotctlApp
from console.tui.dialogs import ConfirmClose, InfoScreen, QuitDialog, TypeToConfirm
from console.tui.messages import OperatorResult
from console.tui.model import nonce_accounts
from engine.core.messages import EntryReserved, RequestClose, TradingState

SIZE = (120, 40)


async def done(app, pilot, *keys):
    """Press keys, then wait until what they started (workers, repaints) has finished."""
    await pilot.press(*keys)
    await app.workers.wait_for_complete()
    await pilot.pause()


def recorder():
    seen = []

    def hook(message):
        if isinstance(message, OperatorResult):
            seen.append(message)

    return seen, hook


async def test_close_selected_position_confirmed_closes_it_and_the_row_leaves(engine):
    results, hook = recorder()
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        table = app.positions.table
        assert len(table) == len(engine.book.positions.base) == 8
        await pilot.press("down", "down")
        pid = table.keys[2]
        assert table.cursor_key == pid
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmClose) and app.screen.position_id == pid
        await pilot.press("y")
        await app.workers.wait_for_complete()
        assert engine.book.positions.base[pid].state == "closing"
        assert [r.accepted for r in results] == [True]
        await app.sync()
        assert table.row_text(pid).endswith("closing")
        for _ in range(10):  # the exit order is signed, broadcast and lands a block or two later
            await engine.tick()
            if pid not in engine.book.positions.base:
                break
        await app.sync()
        await pilot.pause()
        assert pid not in engine.book.positions.base
        assert pid not in table and len(table) == 7
        assert any(f"closed #{pid}" in line for line in app.events.lines)
        assert any(f"closing #{pid} (operator close (tui)) by tui" in line for line in app.events.lines)


async def test_close_cancelled_changes_nothing(engine):
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE) as pilot:
        pid = app.positions.table.cursor_key
        await pilot.press("c")
        assert isinstance(app.screen, ConfirmClose)
        await pilot.press("n")
        await app.workers.wait_for_complete()
        assert not isinstance(app.screen, ConfirmClose)
        assert engine.book.positions.base[pid].state == "open"
        assert not engine.book.orders.base


async def test_close_refused_shows_the_reason(engine):
    results, hook = recorder()
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE, message_hook=hook) as pilot:
        pid = app.positions.table.cursor_key
        await pilot.press("c")
        # another terminal closes it first, while the dialog is open
        fee = await engine.executors[engine.book.positions.base[pid].chain].fee_reserve()
        assert (await engine.sequencer.submit(RequestClose(pid, "elsewhere", fee, engine.now()))).accepted
        await pilot.press("y")
        await app.workers.wait_for_complete()
        assert [r.accepted for r in results] == [False]
        assert "already closing" in results[0].detail
        await app.sync()
        assert any("refused" in line and "already closing" in line for line in app.events.lines)


async def test_pause_takes_no_new_entries_and_resume_takes_them_again(seeded):
    engine = await seeded(40)  # a few positions: free tokens left, so entries would come
    reserved = []
    engine.sequencer.subscribe(lambda events: reserved.extend(e for e in events if isinstance(e, EntryReserved)))
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        await app.workers.wait_for_complete()
        assert engine.book.trading_state is TradingState.REDUCING
        await app.sync()
        assert app.header.view.state == "PAUSED"
        entries_held = {r.id for r in engine.book.reservations.base.values() if r.kind == "entry"}
        for _ in range(60):
            await engine.tick()
        assert reserved == []
        await app.sync()
        table = app.reservations.table
        assert {rid for rid in table.keys if engine.book.reservations.base[rid].kind == "entry"} <= entries_held

        await pilot.press("p")  # resume
        await app.workers.wait_for_complete()
        assert engine.book.trading_state is TradingState.ACTIVE
        for _ in range(60):
            await engine.tick()
        assert reserved, "unpaused, the same market does take entries (the pause was what stopped them)"
        await app.sync()
        assert app.header.view.state == "RUNNING"


async def test_halt_needs_the_word_and_resume_needs_it_too(engine):
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("H")
        assert isinstance(app.screen, TypeToConfirm) and app.screen.word == "HALT"
        await pilot.press("h", "a", "l", "t", "enter")  # not the word: nothing happens
        assert isinstance(app.screen, TypeToConfirm)
        assert engine.book.trading_state is TradingState.ACTIVE
        await pilot.press("H", "A", "L", "T", "enter")
        await app.workers.wait_for_complete()
        assert engine.book.trading_state is TradingState.HALTED
        await app.sync()
        assert app.header.view.state == "HALTED"
        assert any("trading active -> halted by tui" in line for line in app.events.lines)

        await pilot.press("p")  # leaving a halt: RESUME, typed
        assert isinstance(app.screen, TypeToConfirm) and app.screen.word == "RESUME"
        await pilot.press("escape")
        assert engine.book.trading_state is TradingState.HALTED
        await pilot.press("p", *"RESUME", "enter")
        await app.workers.wait_for_complete()
        assert engine.book.trading_state is TradingState.ACTIVE


async def test_quit_with_orders_in_flight_asks_and_settling_leaves_nothing_in_flight(engine):
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c", "y")
        await app.workers.wait_for_complete()
        assert engine.book.orders.base, "the exit order is in flight"
        await pilot.press("q")
        assert isinstance(app.screen, QuitDialog) and app.screen.in_flight == len(engine.book.orders.base)
        await pilot.press("escape")  # stay
        assert not isinstance(app.screen, QuitDialog) and app.is_running
        await pilot.press("q")
        assert isinstance(app.screen, QuitDialog)
        await pilot.press("s")  # settle, then quit
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert not engine.book.orders.base
        assert not app.is_running


async def test_quit_with_nothing_in_flight_quits_at_once(engine):
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE) as pilot:
        await done(app, pilot, "q")
        assert not app.is_running


async def test_audit_shows_a_clean_result(engine):
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE) as pilot:
        await done(app, pilot, "a")
        assert isinstance(app.screen, InfoScreen)
        assert str(app.screen.query_one("#dialog-title").render()).startswith("Audit clean")
        await pilot.press("escape")
        assert not isinstance(app.screen, InfoScreen)


async def test_r_shows_the_rollout_checklist_measured_from_the_database(engine):
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE) as pilot:
        await done(app, pilot, "r")
        assert isinstance(app.screen, InfoScreen)
        title = str(app.screen.query_one("#dialog-title").render())
        assert title.startswith("Rollout: paper -> testnet,") and "done" in title
        body = str(app.screen.query_one("#dialog-body").render())
        assert "round trips closed on paper" in body and "MISS" in body and "drill crash" in body
        await pilot.press("escape")
        assert not isinstance(app.screen, InfoScreen)


async def test_command_palette_offers_the_operator_commands(engine):
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE):
        titles = [c.title for c in app.get_system_commands(app.screen)]
        for wanted in ("Close position", "Pause / resume", "Halt", "Audit", "Rollout checklist", "Quit", "Help"):
            assert wanted in titles


async def test_sort_by_pnl_orders_rows_by_pnl(engine):
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")  # id -> pnl (biggest first)
        model = app.model
        assert model.sort_column == "pnl"
        keys = app.positions.table.keys
        pnls = [model.value[pid] - engine.book.positions.base[pid].cost for pid in keys]
        assert pnls == sorted(pnls, reverse=True)


async def test_live_engine_loop_updates_the_panels(seeded):
    engine = await seeded(0)
    app = BotctlApp(engine=engine, run_engine=True)
    opened = []
    engine.sequencer.subscribe(lambda events: opened.extend(e for e in events if type(e).__name__ == "PositionOpened"))
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.monotonic() + 30
        while len(opened) < 2:  # the engine runs on the app's loop, unpaced (speed 0)
            assert time.monotonic() < deadline, f"the engine loop opened {len(opened)} position(s) in 30 s"
            await pilot.pause()
        engine.stop()  # stop at a tick boundary, then look
        await app._engine_worker.wait()
        await app.sync()
        assert set(app.positions.table.keys) == set(engine.book.positions.base)
        assert set(app.orders.table.keys) == set(engine.book.orders.base)
        assert set(app.reservations.table.keys) == set(engine.book.reservations.base)
        assert app.header.view.height == engine.world.height


async def test_nonce_gap_is_flagged_and_solana_shows_blocks_left(engine):
    """The lowest nonce in flight above the chain's pending nonce is a gap, shown in red."""
    book = engine.book
    base = next(p for p in book.positions.base.values() if p.chain == "base")
    sol = next(p for p in book.positions.base.values() if p.chain == "solana")
    for position in (base, sol):
        fee = await engine.executors[position.chain].fee_reserve()
        assert (await engine.sequencer.submit(RequestClose(position.id, "test", fee, engine.now()))).accepted
    await engine.driver.advance_all()  # signed: the solana one now has its expiry
    order = next(o for o in book.orders.base.values() if o.chain == "base")
    address, nonce = order.address, order.nonce
    height = engine.world.height
    accounts = {a.chain: a for a in nonce_accounts(book, {("base", address): nonce - 2}, height, engine.now())}
    assert accounts["base"].gap == (nonce - 2, nonce - 1)
    assert [t.nonce for t in accounts["base"].txs] == [nonce]
    [tx] = accounts["solana"].txs
    assert tx.blocks_left == engine.settings.paper.expiry_blocks
    accounts = {a.chain: a for a in nonce_accounts(book, {("base", address): nonce}, height, engine.now())}
    assert accounts["base"].gap is None

    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE):
        await app.sync()
        text = app.nonces.render_accounts(
            nonce_accounts(book, {("base", address): nonce - 2}, height, engine.now())).plain
        assert f"GAP: nonce {nonce - 2}..{nonce - 1}" in text
        shown = app.nonces.body.render()
        assert "GAP" not in str(shown) and f"n{nonce}" in str(shown) and "blocks left" in str(shown)


async def test_80x24_shows_every_panel(engine):
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await app.sync()
        await pilot.pause()
        for panel in (app.positions, app.reservations, app.orders, app.nonces, app.events):
            region = panel.region
            assert region.height >= 4 and region.width >= 30, (panel, region)
        assert app.positions.table.size.height >= 6  # a header and at least five rows
        shown = app.positions.table.visible_labels()
        for column in ("id", "token", "mark", "value", "pnl", "state"):
            assert column in shown, shown
        assert app.header.region.height == 1 + len(engine.book.policy.chains)


async def test_navigation_click_and_help(engine):
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE) as pilot:
        table = app.positions.table
        await pilot.press("end")
        assert table.cursor_key == table.keys[-1]
        await pilot.press("home")
        assert table.cursor_key == table.keys[0]
        await pilot.click("#positions-table", offset=(5, 3))  # line 0 is the column header
        assert table.cursor_key == table.keys[2]
        await pilot.press("question_mark")
        assert isinstance(app.screen, InfoScreen)
        await pilot.press("c")  # keys of the main screen do not reach through a dialog
        assert isinstance(app.screen, InfoScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, InfoScreen)
        assert not engine.book.orders.base


async def test_each_mode_badge_has_its_own_colour(engine):
    from types import SimpleNamespace

    from console.tui.header import StatusHeader
    from console.tui.model import HeaderView, mode_badge

    assert [mode_badge(SimpleNamespace(mode=m, profile=p)) for m, p in
            (("paper", "testnet"), ("live", "testnet"), ("live", "soft-launch"))] == ["PAPER", "TESTNET", "LIVE"]
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE):
        header = app.query_one(StatusHeader)
        backgrounds = {}
        for mode in ("PAPER", "TESTNET", "LIVE"):
            header.view = HeaderView(mode, "paper", "RUNNING", False, 1, 0, 0, 0, ())
            text = header.render()
            badge = next(span for span in text.spans if text.plain[span.start:span.end].strip() == mode)
            backgrounds[mode] = badge.style.bgcolor
        assert len(set(backgrounds.values())) == 3, backgrounds


async def test_a_stage_change_from_another_terminal_shows_in_the_header_and_the_log(engine):
    from engine import inbox

    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=SIZE):
        db = engine.settings.home / "botctl.db"
        inbox.post(db, "attest", {"stage": "paper", "item": "logs"}, sender="ann@desk pid 1")
        await engine.inbox.drain()
        await app.sync()
        assert any("attested for paper by ann@desk pid 1: logs" in line for line in app.events.lines), app.events.lines[-5:]
        from engine.core.messages import ChangeStage

        await engine.sequencer.submit(ChangeStage("testnet", "paper", (), "{}", "test", engine.now()))
        await app.sync()
        assert app.header.view.stage == "testnet (running paper)"
        assert any("stage paper -> testnet by operator: test" in line for line in app.events.lines)


async def test_a_node_refusing_every_broadcast_trips_the_chains_breaker_in_the_header(seeded):
    from engine.venues.paper.executor import Faults

    engine = await seeded(5)
    for executor in engine.executors.values():
        executor.faults = Faults(10_000, 0, executor.faults.expiry_blocks)  # the node refuses everything
    app = BotctlApp(engine=engine, run_engine=False)
    async with app.run_test(size=(200, 40)):
        for _ in range(120):
            await engine.tick()
        await app.sync()
        assert any("rejection breaker" in b for b in app.header.view.breakers), app.header.view
        assert "BREAKER" in app.header.render().plain
        assert any("rejection breaker" in line for line in app.events.lines), app.events.lines[-5:]
