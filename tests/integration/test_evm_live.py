"""Live trading on a real EVM node, through the real CLI: `botctl run --signals FILE` with a
`[chains.NAME] kind = "evm"` config pointing at anvil with the canonical Uniswap V2. Positions
open and close on chain, `botctl audit` is clean and `botctl reconcile` finds the book equal to
the chain's balances (quote, native, tokens) to the base unit."""

from __future__ import annotations

import json

import pytest
from evmkit import botctl, live_home, positions_settled, relay, run_until  # noqa: F401 (fixtures)

from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def test_signals_open_positions_on_chain_and_close_them_with_the_book_equal_to_the_chain(live_home, tmp_path):  # noqa: F811
    home, address = live_home
    signals = tmp_path / "signals.jsonl"
    signals.write_text('{"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}\n'
                       '{"id": "s2", "chain": "anvil", "token": "tkb", "size": "30"}\n')
    run_until(home, signals, lambda: positions_settled(home, 2), "two positions opened")
    positions = json.loads(botctl(home, "positions", "--json").stdout)
    assert sorted((p["token"], p["cost"]) for p in positions) == [("TKA", "20"), ("TKB", "30")], \
        botctl(home, "logs").stdout[-3000:]

    closed = botctl(home, "close", "--all", "--yes")
    assert closed.returncode == 0, closed.stderr + closed.stdout
    assert json.loads(botctl(home, "positions", "--json").stdout) == []

    audit = botctl(home, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    reconcile = botctl(home, "reconcile")
    assert reconcile.returncode == 0 and "balances agree" in reconcile.stdout, reconcile.stdout + reconcile.stderr
    history = json.loads(botctl(home, "history", "--json").stdout)
    assert sorted((f["side"], f["token"]) for f in history) == [("buy", "TKA"), ("buy", "TKB"), ("sell", "TKA"),
                                                                ("sell", "TKB")], history


def test_a_live_start_with_dry_run_on_sends_nothing_and_says_so(live_home):  # noqa: F811
    home, _address = live_home
    result = botctl(home, "run", "--duration", "1", BOTCTL_DRY_RUN="true")
    assert result.returncode == 2 and "dry run on sends nothing" in result.stderr, result.stderr



@pytest.mark.asyncio
async def test_a_signal_line_and_an_operator_close_are_acted_on_as_they_land_not_at_the_next_poll(
        live_home, tmp_path, monkeypatch):  # noqa: F811
    """A live engine steps every poll interval; what arrives between two steps (a signal line, an
    operator's command) wakes it at once. The interval is an hour here: a step that waited for it
    would time out."""
    import asyncio

    from evmkit import live_engine

    from engine import inbox

    home, _address = live_home
    signals = tmp_path / "signals.jsonl"
    signals.write_text("")
    db = home / "botctl.db"
    async with live_engine(home, monkeypatch, signals) as engine:
        engine.world.poll_s = 3600
        engine.start_inbox(fallback_s=3600)
        await asyncio.wait_for(engine.tick(), 30)  # the watcher's first look at the file wakes one step
        step = asyncio.ensure_future(engine.tick())
        with open(signals, "a") as f:
            f.write('{"id": "w1", "chain": "anvil", "token": "TKA", "size": "10"}\n')
        await asyncio.wait_for(step, 15)
        assert engine.book.orders.base or engine.book.open_positions(), "the step it woke did not take the line"

        [position] = await opened(engine)

        engine.world.poll_s = 3600
        step = asyncio.ensure_future(engine.tick())
        row = inbox.post(db, "close", {"id": position.id})
        inbox.nudge(home)
        await asyncio.wait_for(step, 15)
        assert (await inbox.wait(db, row, 5))["state"] == "done"
        sent = [o for o in engine.book.orders.base.values() if o.intent == "exit" and o.state != "new"]
        assert engine.book.positions.get(position.id) is None or sent, "the step it woke did not send the close"


@pytest.mark.asyncio
async def test_a_burst_of_signal_lines_sends_each_entry_at_once_but_reads_the_orders_in_flight_once(
        live_home, evm_chain, tmp_path, monkeypatch):  # noqa: F811
    """Every line wakes a step, and each step sends what is new; the orders already in flight are
    looked up once per sweep interval, not once per line (fifty receipts read per line would be an
    RPC storm on a paid node). The engine's clock is held still here: one sweep in all, and one more
    when the clock steps back."""
    import asyncio

    from evmkit import automine, live_engine

    home, _address = live_home
    signals = tmp_path / "signals.jsonl"
    signals.write_text('{"id": "b0", "chain": "anvil", "token": "TKA", "size": "10"}\n')
    automine(evm_chain, False)
    async with live_engine(home, monkeypatch, signals, BOTCTL_COOLDOWN_S="0") as engine:
        engine.world.poll_s = 3600
        await asyncio.wait_for(engine.tick(), 30)  # the first line: its approve and swap sent, pending
        in_flight = {o.id for o in engine.book.live_orders()}
        assert len(in_flight) == 2 and all(o.state == "submitted" for o in engine.book.live_orders())
        executor = engine.executors["anvil"]
        looked_up = []
        real_lookup = executor.lookup

        async def counted(order):
            looked_up.append(order.id)
            return await real_lookup(order)

        monkeypatch.setattr(executor, "lookup", counted)
        held = engine.now()
        monkeypatch.setattr(engine.world, "now_ms", lambda: held + 1_000)  # one sweep interval later, then still
        for number in range(1, 6):
            with open(signals, "a") as f:
                f.write(f'{{"id": "b{number}", "chain": "anvil", "token": "TKB", "size": "1"}}\n')
            await asyncio.wait_for(engine.tick(), 30)
        assert sum(1 for o in looked_up if o in in_flight) == 2, looked_up  # each once, in the one sweep
        sent = [o for o in engine.book.live_orders() if o.id not in in_flight]
        assert sent and all(o.state == "submitted" for o in sent), "the woken steps sent nothing new"

        # The wall clock steps back a minute (NTP, a VM resumed): the next step sweeps at once, rather
        # than leave the orders unread (and positions unpriced) until the clock has caught up.
        monkeypatch.setattr(engine.world, "now_ms", lambda: held - 60_000)
        with open(signals, "a") as f:
            f.write('{"id": "b9", "chain": "anvil", "token": "TKB", "size": "1"}\n')
        await asyncio.wait_for(engine.tick(), 30)
        assert sum(1 for o in looked_up if o in in_flight) == 4, looked_up


def test_a_node_behind_user_and_secret_in_the_url_is_reached_with_them_and_the_secret_shows_nowhere(
        tmp_path, evm_chain, relay):  # noqa: F811
    """Some providers take their key as `https://user:KEY@host/`: the start's probes and the engine's
    client both send it as HTTP Basic (a node refusing anything else answers 401), and the key is
    in no output, log line or byte of the book."""
    from evmkit import make_home

    secret = "k3y-Vq7-never-shown"
    relay.credentials = f"botctl:{secret}"
    home = tmp_path / "home"
    make_home(home, evm_chain, rpc_url=relay.url.replace("http://", f"http://botctl:{secret}@"))
    signals = tmp_path / "signals.jsonl"
    signals.write_text('{"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}\n')
    out, err = run_until(home, signals, lambda: positions_settled(home, 1), "the position opened")
    said = [out, err]
    for args in (("doctor",), ("config", "show"), ("status",), ("nonces",), ("reconcile",), ("logs",)):
        result = botctl(home, *args)
        assert result.returncode == 0, (args, result.stdout + result.stderr)
        said += [result.stdout, result.stderr]
    assert relay.unauthorized == 0, "a request went to the node without the credentials"
    assert not any(secret in text for text in said)
    for path in home.rglob("*"):
        if path.is_file() and path.name != "config.toml":
            assert secret.encode() not in path.read_bytes(), path


def test_open_positions_are_priced_every_marks_every_s_not_every_step(tmp_path, evm_chain, relay):  # noqa: F811
    """A mark is a router quote (eth_call) per held token; a live engine steps every 0.2 s, and a quote
    per step per position would cost a paid node five calls a second each. With an hour's interval,
    the position is priced as it opens (not an hour later), and never again in the steps after."""
    from evmkit import book, make_home

    home = tmp_path / "home"
    make_home(home, evm_chain, rpc_url=relay.url)
    (home / "config.toml").write_text((home / "config.toml").read_text() + "marks_every_s = 3600\n")
    signals = tmp_path / "signals.jsonl"
    signals.write_text('{"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}\n')
    quoted = []

    def priced_then_counted() -> bool:  # opened, and priced once at once (not an hour later)
        if positions_settled(home, 1) and book(home, "SELECT seq FROM journal WHERE kind = 'PricesMarked'") \
                and not quoted:
            quoted.append(relay.methods.get("eth_call", 0))
        return bool(quoted)

    run_until(home, signals, priced_then_counted, "the position opened and priced", linger=1.5)  # ~7 steps more
    assert relay.methods.get("eth_call", 0) == quoted[0], relay.methods


@pytest.mark.asyncio
async def test_the_nonces_panel_shows_each_transactions_fees_and_its_replacement(  # noqa: F811
        live_home, evm_chain, tmp_path, monkeypatch):  # noqa: F811
    """The console as `botctl tui` builds it, over a live engine on anvil with mining paused: the
    Nonces panel shows the chain's count, each transaction in flight at its nonce with the fees of
    its current attempt in gwei, and how many attempts a stuck one took (replaced with fees +10%)."""
    import asyncio

    from evmkit import automine, live_engine

    from console.tui.app import BotctlApp
    from engine.venues.evm.fees import format_gwei

    home, address = live_home
    signals = tmp_path / "signals.jsonl"
    signals.write_text('{"id": "n1", "chain": "anvil", "token": "TKA", "size": "10"}\n')
    automine(evm_chain, False)
    async with live_engine(home, monkeypatch, signals) as engine:
        engine.world.poll_s = 0.05
        engine.executors["anvil"].stuck_after_ms = 0  # not mined at the first look: replaced
        for _ in range(200):
            await asyncio.wait_for(engine.tick(), 30)
            replaced = [o for o in engine.book.live_orders() if len(o.all_attempts()) >= 2]
            if replaced:
                break
        assert replaced, [(o.id, o.state, len(o.all_attempts())) for o in engine.book.live_orders()]
        engine.executors["anvil"].stuck_after_ms = 10**9
        order = replaced[0]
        last = order.all_attempts()[-1]
        app = BotctlApp(engine=engine, run_engine=False)
        async with app.run_test(size=(130, 40)):
            await app.sync()
            shown = str(app.nonces.body.render())
        state = engine.book.nonces.get(("anvil", address))
        assert f"{address[:6]}…{address[-4:]}" in shown and f"next {state.next}" in shown, shown
        assert f"n{order.nonce} " in shown, shown
        assert f"{format_gwei(last.max_fee)}/{format_gwei(last.tip)} gwei" in shown, shown
        assert f"×{len(order.all_attempts())}" in shown, shown


@pytest.mark.asyncio
async def test_a_close_confirmed_in_the_console_wakes_the_live_engine_at_once(  # noqa: F811
        live_home, tmp_path, monkeypatch):  # noqa: F811
    """The console submits the operator's close and wakes the engine: the exit is sent by the step
    that was waiting, not an hour of poll interval later."""
    import asyncio

    from evmkit import live_engine

    from console.tui.app import BotctlApp
    from console.tui.dialogs import ConfirmClose

    home, _address = live_home
    signals = tmp_path / "signals.jsonl"
    signals.write_text('{"id": "c1", "chain": "anvil", "token": "TKA", "size": "10"}\n')
    async with live_engine(home, monkeypatch, signals) as engine:
        [position] = await opened(engine)
        engine.world.poll_s = 3600
        step = asyncio.ensure_future(engine.tick())  # waiting for its next step, as the engine's loop does
        app = BotctlApp(engine=engine, run_engine=False)
        async with app.run_test(size=(130, 40)) as pilot:
            await app.sync()
            await pilot.press("c")
            assert isinstance(app.screen, ConfirmClose) and app.screen.position_id == position.id
            await pilot.press("y")
            await app.workers.wait_for_complete()
            await asyncio.wait_for(step, 15)
        sent = [o for o in engine.book.orders.base.values() if o.intent == "exit" and o.state != "new"]
        assert engine.book.positions.get(position.id) is None or sent, "the step it woke did not send the close"


async def opened(engine, steps: int = 200) -> list:
    """Step an engine driven in this process (poll 0.05 s) until a position is open and nothing is in
    flight: its open positions."""
    engine.world.poll_s = 0.05
    for _ in range(steps):
        if engine.book.open_positions() and not engine.book.orders.base:
            break
        await engine.tick()
    return engine.book.open_positions()
