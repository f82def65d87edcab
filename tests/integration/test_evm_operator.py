"""The operator's emergency commands on a live EVM book when its node is down and no engine runs.

A pause, a resume or a halt moves no funds: each is decided on the book alone, so it works while
the node cannot be reached (the operator's last resort must not depend on the thing that failed).
A `halt --close-all` then halts and refuses each close saying why; the halt keeps its word when
the node is back: the next engine start closes what the halt could not. Real CLI, real anvil with
the canonical Uniswap V2, the node cut by a relay the test controls."""

from __future__ import annotations

import json
import re
import signal

import pytest
from evmkit import (  # noqa: E501, F401
    _env,
    automine,
    book,
    book_json,
    botctl,
    live_home,
    make_home,
    mine,
    output,
    positions_settled,
    relay,
    run_until,
    settled_cleanly,
    start,
    stop,
    wait_for,
)

import terminal
from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)
from clikit import one_error_line

pytestmark = pytest.mark.slow


def test_pause_resume_and_halt_work_with_the_node_down_and_the_halt_closes_when_it_is_back(
        tmp_path, evm_chain, relay):  # noqa: F811
    home = tmp_path / "home"
    key = "SECRETKEY-9f3b"  # a provider's key in the endpoint's path: shown nowhere, whatever fails
    make_home(home, evm_chain, rpc_url=f"{relay.url}/v3/{key}")
    feed = tmp_path / "s.jsonl"
    feed.write_text(json.dumps({"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}) + "\n")
    run_until(home, feed, lambda: positions_settled(home, 1), "the position open, nothing in flight")
    said = []
    (position,) = book_json(home, "positions")
    # A token dropped from the allow-list while a position holds it: its balance would go unread and
    # reconciling would call it a difference (accepting which would wipe a holding the chain has).
    config = home / "config.toml"
    listed = config.read_text()
    config.write_text(re.sub(r"tokens = \[.*\]", f'tokens = ["{evm_chain.uniswap.tokens["TKB"]}"]', listed))
    for refused in (botctl(home, "run", "--duration", "1"), botctl(home, "reconcile")):
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert f"position {position['id']} holds TKA, which is not in tokens any more" in refused.stderr
    config.write_text(listed)
    # A close needs the chain: refused like any close that did not happen (exit 1, which a script
    # retries), not as a setting to fix (2); nothing is queued to run behind the operator's back.
    # Over its quota, the node still says its chain id, then answers nothing else: the same.
    relay.set("rate_limited")
    for refused in (botctl(home, "close", str(position["id"]), "--yes"), botctl(home, "run", "--duration", "1")):
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "stopped answering (Too Many Requests)" in one_error_line(refused), refused.stderr
        said.append(refused.stderr)
    relay.set("down")
    for refused in (botctl(home, "close", str(position["id"]), "--yes"), botctl(home, "run", "--duration", "1")):
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "unreachable" in one_error_line(refused), refused.stderr
        said.append(refused.stderr)
    with terminal.Console(["tui"], _env(home, {}), cwd=str(home.parent)) as console:  # as the operator starts it
        assert console.wait(60) == 1, console.text()
        assert "unreachable" in console.text(), console.text()
        said.append(console.text())
    # `botctl nonces` says the chain's count is unknown, and shows the engine's floor as such
    nonces = botctl(home, "nonces")
    assert nonces.returncode == 0 and "anvil: pending count unknown (" in nonces.stdout, nonces.stdout
    assert "? (floor " in nonces.stdout, nonces.stdout
    (row,) = json.loads(botctl(home, "nonces", "--json").stdout)
    assert row["chain_pending"] is None and "unreachable" in row["chain_error"], row
    said += [nonces.stdout, row["chain_error"]]
    assert book(home, "SELECT count(*) FROM inbox WHERE state IN ('pending', 'taken')") == [(0,)]
    assert book_json(home, "positions")[0]["state"] == "open"

    paused = botctl(home, "pause")
    assert paused.returncode == 0 and "trading active -> reducing" in paused.stdout, paused.stderr
    resumed = botctl(home, "resume")
    assert resumed.returncode == 0 and "trading reducing -> active" in resumed.stdout, resumed.stderr

    halted = botctl(home, "halt", "--close-all", "--json")
    assert halted.returncode == 1, halted.stdout + halted.stderr  # a position asked to close is not closed
    answer = json.loads(halted.stdout)
    assert answer["state"] == "done" and "trading active -> halted" in answer["result"]["ok"][0], answer
    (refusal,) = answer["result"]["refused"]
    assert f"position {position['id']} stays open: the engine cannot start" in refusal, refusal
    assert "unreachable" in refusal, refusal
    assert [p["state"] for p in answer["positions"]] == ["open"], answer
    assert halted.stderr.count("\n") == 1 and halted.stderr.startswith("error: "), halted.stderr
    assert book_json(home, "status")["trading_state"] == "halted"
    assert book(home, "SELECT count(*) FROM orders WHERE intent = 'exit'") == [(0,)], "nothing reserved"

    relay.set("pass")
    run = start(home, "run", "--duration", "60")
    wait_for(lambda: book(home, "SELECT state FROM positions WHERE id = ?", (position["id"],)) == [("closed",)],
             30, "the halt's close carried out by the next engine")
    stop(run, home)
    assert book_json(home, "status")["trading_state"] == "halted", "the halt holds"
    settled_cleanly(home)
    said += [halted.stdout, halted.stderr, botctl(home, "history", "--commands").stdout, botctl(home, "logs").stdout]
    assert not any(key in text for text in said), "the endpoint's key was shown"
    for path in home.rglob("*"):
        if path.is_file() and path.name != "config.toml":
            assert key.encode() not in path.read_bytes(), path


def test_a_one_off_close_the_chain_does_not_mine_answers_in_its_timeout_and_leaves_the_exit_held(
        tmp_path, evm_chain):  # noqa: F811
    """No engine runs; the operator closes a position while the chain mines nothing. The one-off
    owner sends the exit and waits for it no longer than --timeout (not a thousand 0.2 s steps):
    the answer says the exit is in flight and who will carry it on; the next engine settles it."""
    home = tmp_path / "home"
    make_home(home, evm_chain)
    config = home / "config.toml"
    config.write_text(config.read_text().replace("confirmations = 1\n", "confirmations = 2\n"))
    feed = tmp_path / "s.jsonl"
    feed.write_text(json.dumps({"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}) + "\n")
    run = start(home, "run", "--signals", str(feed), "--duration", "60")
    wait_for(lambda: mine(evm_chain) or positions_settled(home, 1),  # each transaction needs a second block
             30, "the position open, nothing in flight", every=0.3)
    stop(run, home)
    (position,) = book_json(home, "positions")

    automine(evm_chain, False)
    try:
        # within its --timeout: 1,000 steps of 0.2 s (200 s) would outlast botctl()'s 90 s and fail here
        closing = botctl(home, "close", str(position["id"]), "--yes", "--timeout", "3", timeout=90)
        assert closing.returncode == 1, closing.stdout + closing.stderr
        assert f"position {position['id']} is still closing" in closing.stderr, closing.stderr
        assert "no engine is running to send it: `botctl run` does" in closing.stderr, closing.stderr
        held = book(home, "SELECT state FROM orders WHERE intent = 'exit'")
        assert held and all(state in ("submitted", "unknown") for (state,) in held), held
        # `close --all` then has nothing to send, but it does not call that success: a script would
        # read "everything closed" while the exit may still fail and leave the position open
        again = botctl(home, "close", "--all", "--yes", "--timeout", "1", timeout=90)
        assert again.returncode == 1 and f"position {position['id']} is still closing" in again.stderr, \
            again.stdout + again.stderr
        # Mined once, not yet confirmed twice: the chain has sold the tokens, the book has not recorded
        # it. Reconciling then must not call that a difference (it would block entries and count
        # against the stage's evidence for good): the chain is not compared until the order settles.
        mine(evm_chain)
        checked = botctl(home, "reconcile", "--json")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        report = json.loads(checked.stdout)
        assert report["differences"] == [] and report["not_compared"] == ["anvil"], report
        assert "not compared while an order is still in doubt" in botctl(home, "reconcile").stdout
    finally:
        automine(evm_chain, True)
    mine(evm_chain)  # the second confirmation
    run = start(home, "run", "--duration", "60")
    wait_for(lambda: book(home, "SELECT state FROM positions WHERE id = ?", (position["id"],)) == [("closed",)],
             30, "the next engine settles the exit")
    stop(run, home)
    settled_cleanly(home)


def test_a_send_error_nobody_can_classify_holds_the_funds_and_reconciles_once_settled(
        tmp_path, evm_chain, relay):  # noqa: F811
    """The node takes the entry's transactions but answers with words nobody knows (DESIGN 8: the
    outcome is unknown, funds stay held, and the balances are reconciled after it). The engine looks
    the orders up, finds them mined, opens the position, and then compares the book with the chain."""
    home = tmp_path / "home"
    make_home(home, evm_chain, rpc_url=relay.url)
    relay.set("strange_sends")
    feed = tmp_path / "s.jsonl"
    feed.write_text(json.dumps({"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}) + "\n")
    run = start(home, "run", "--signals", str(feed), "--duration", "60")
    try:
        wait_for(lambda: relay.sends_lost == 2, 30, "the approve and the swap sent, answered strangely")
        wait_for(lambda: positions_settled(home, 1), 30, "the position open from the chain's receipts")
        reconciled = wait_for(lambda: [json.loads(d) for (d,) in book(
            home, "SELECT data FROM journal WHERE kind = 'Reconciled' AND seq > "
                  "(SELECT max(seq) FROM journal WHERE kind = 'PositionOpened')")], 10,
            "a reconciliation once the chain settled")
    finally:
        stop(run, home)
    unknown = book(home, "SELECT data FROM journal WHERE kind = 'OrderOutcomeUnknown'")
    assert len(unknown) == 2 and all("pensive" in d for (d,) in unknown), unknown
    assert reconciled[0]["differences"] == [] and reconciled[0]["by"] == "engine", reconciled
    assert "reconciling after a send error nobody could classify" in (home / "logs" / "botctl.log").read_text()
    settled_cleanly(home)


def test_doctor_reads_the_market_a_start_would_read(live_home, evm_chain):  # noqa: F811
    """doctor passes only what `botctl run` would take: the router, the quote and each token answer."""
    home, _address = live_home
    ok = botctl(home, "doctor", "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    (market,) = [c for c in json.loads(ok.stdout)["checks"] if c["check"] == "market"]
    assert market["ok"] and "anvil: the router, the quote and 2 token(s) answer" in market["detail"], market
    config = home / "config.toml"
    config.write_text(re.sub(r'router = "[^"]*"', 'router = "0x000000000000000000000000000000000000dEaD"',
                             config.read_text()))
    bad = botctl(home, "doctor", "--json")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    (market,) = [c for c in json.loads(bad.stdout)["checks"] if c["check"] == "market"]
    assert not market["ok"] and "router" in market["detail"], market
    start = botctl(home, "run", "--duration", "1")
    assert start.returncode == 2 and market["detail"] in start.stderr, start.stderr  # the same words as run


def test_a_signal_during_a_slow_start_stops_the_run_right_after_the_start(tmp_path, evm_chain, relay):  # noqa: F811
    """Ctrl-C or SIGTERM while `botctl run` starts (reading the chain, reconciling: seconds on a slow
    endpoint) stops it cleanly as soon as the start is over, exit 0, no step taken; never a process
    killed mid-start, nor a start cancelled inside web3 (which can leave a lock held for ever)."""
    home = tmp_path / "home"
    make_home(home, evm_chain, rpc_url=relay.url)
    relay.set("slow")  # each read of the start waits SLOW_S at the relay
    run = start(home, "run", "--duration", "60")
    wait_for(lambda: relay.methods.get("eth_getBalance"), 30, "the start reading our balances")  # mid-start
    assert run.poll() is None, output(home)
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 0, output(home)
    err = output(home)[1]
    assert "stopping as soon as the start is over" in err and "stopped: 0 steps" in err, err
    relay.set("pass")
    settled_cleanly(home)
