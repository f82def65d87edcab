"""The operator's emergency commands on a live EVM book when its node is down and no engine runs.

A pause, a resume or a halt moves no funds: each is decided on the book alone, so it works while
the node cannot be reached (the operator's last resort must not depend on the thing that failed).
A `halt --close-all` then halts and refuses each close saying why; the halt keeps its word when
the node is back: the next engine start closes what the halt could not. Real CLI, real anvil with
the canonical Uniswap V2, the node cut by a relay the test controls."""

from __future__ import annotations

import json

import pytest
from evmkit import book, book_json, botctl, make_home, relay, settled_cleanly, wait_for  # noqa: F401 (relay)

from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


def test_pause_resume_and_halt_work_with_the_node_down_and_the_halt_closes_when_it_is_back(
        tmp_path, evm_chain, relay):  # noqa: F811
    home = tmp_path / "home"
    make_home(home, evm_chain, rpc_url=relay.url)
    feed = tmp_path / "s.jsonl"
    feed.write_text(json.dumps({"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}) + "\n")
    run = botctl(home, "run", "--signals", str(feed), "--duration", "6")
    assert run.returncode == 0, run.stderr
    (position,) = book_json(home, "positions")
    relay.set("down")

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
    run = botctl(home, "run", "--duration", "8")
    assert run.returncode == 0, run.stderr
    wait_for(lambda: book(home, "SELECT state FROM positions WHERE id = ?", (position["id"],)) == [("closed",)],
             1, "the halt's close carried out by the next engine")
    assert book_json(home, "status")["trading_state"] == "halted", "the halt holds"
    settled_cleanly(home)
