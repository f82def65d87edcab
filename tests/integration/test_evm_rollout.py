"""The testnet stage's promotion evidence, gathered on a real EVM node through the real CLI.

An operator in the testnet stage trades test money on anvil (a local dev chain: network testnet),
runs the drills the stage asks for and reads the checklist. What counts is measured from the
journal: round trips and hours of runs on testnet, drills run on testnet; a paper run in the same
home (`--profile paper`) is shown as done elsewhere and counts for nothing. The drills drive real
orders through the EVM executor, so the chain is read back afterwards (blocks, receipts, nonce
counts) and compared with the book: every transaction mined is one the book recorded, each nonce
is used once, and nothing waits behind a gap.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from evmkit import (
    block_number,
    book,
    book_json,
    botctl,
    live_home,  # noqa: F401 (a fixture)
    nonce_counts,
    positions_settled,
    run_until,
    settled_cleanly,
    transactions_from,
)

from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)
from clikit import one_error_line

pytestmark = pytest.mark.slow

PAPER = {"BOTCTL_PROFILE": "paper", "BOTCTL_DRY_RUN": "true"}  # the home's config turns dry run off for anvil
COOLDOWN_S = 5  # seconds a token waits after a round trip, in the cooldown test
HOURS_S = 2.5  # a live run lasts at least this: hours are shown to 0.001 h (3.6 s), rounded
ITEMS = ["trades", "hours", "consistency", "audit", "drill:failure", "drill:crash", "attest:logs", "attest:explorer"]


def checklist(home, **env) -> dict:
    return book_json(home, "rollout", "status", **env)


def item(summary: dict, key: str) -> dict:
    return next(i for i in summary["items"] if i["key"] == key)


def missing(summary: dict) -> list[str]:
    return [i["key"] for i in summary["items"] if not i["ok"]]


def line_of(text: str, label: str) -> str:
    return next(line for line in text.splitlines() if label in line)


def check_names(home, keys: list[str]) -> str:
    """`botctl rollout check`: exit 1, one error line naming exactly the items of `keys` as missing."""
    done = botctl(home, "rollout", "check")
    assert done.returncode == 1, done.stdout + done.stderr
    error = one_error_line(done)
    summary = checklist(home)
    assert missing(summary) == keys, summary["missing"]
    assert error.startswith(f"error: {len(keys)} item(s) missing for soft-launch: "), error
    for text in summary["missing"]:
        assert text in error, (text, error)
    for other in summary["items"]:
        if other["ok"]:
            assert other["label"] + ":" not in error, (other, error)
    return error


def anvil_orders(home) -> list[dict]:
    """The book's orders on anvil (a paper run in the same home has orders, with nonces, of its own)."""
    keys = ("id", "intent", "token", "state", "nonce", "tx_id", "reason")
    rows = book(home, f"SELECT {', '.join(keys)} FROM orders WHERE chain = 'anvil' ORDER BY id")
    return [dict(zip(keys, row)) for row in rows]


def chain_agrees_with_the_book(chain, home, address, start_block: int, first_nonce: int) -> list[dict]:
    """Every transaction our key got mined since `start_block` is an order of the book that the book
    says landed, at its own nonce and hash; the nonces from `first_nonce` are used once each with no
    gap; nothing is pooled or queued. Returns the book's orders from `first_nonce` on."""
    sent = transactions_from(chain, address, start_block)
    mined, pending = nonce_counts(chain, address)
    assert mined == pending, f"a transaction waits in the pool behind a gap: {mined} mined, {pending} pending"
    assert [t.nonce for t in sent] == list(range(first_nonce, mined)), [t.nonce for t in sent]
    assert all(t.status == 1 for t in sent), sent
    ours = [o for o in anvil_orders(home) if o["nonce"] is not None and o["nonce"] >= first_nonce]
    landed = sorted((o["nonce"], o["tx_id"]) for o in ours if o["state"] == "filled")
    assert landed == [(t.nonce, t.hash) for t in sent], (ours, sent)
    assert not [o for o in ours if o["state"] not in ("filled", "failed")], ours  # nothing left in flight
    return ours


# ---------------------------------------------------------------------------------------------- the walk


def test_testnet_evidence_counts_live_round_trips_hours_and_the_failure_drill_but_not_paper(  # noqa: F811
        live_home, tmp_path, evm_chain):  # noqa: F811
    home, address = live_home
    start_block = block_number(evm_chain)

    # 1. Nothing counted yet: the testnet checklist, every evidence item at zero.
    shown = botctl(home, "rollout", "status")
    assert shown.returncode == 0, shown.stderr
    assert "stage testnet" in shown.stdout and "-> soft-launch: 2/8 done (evidence counted on testnet)" in shown.stdout
    assert "[MISS] round trips closed on testnet: 0  (needs >= 50)" in shown.stdout, shown.stdout
    assert "[MISS] hours run on testnet (engine clock, from heartbeats): 0.0 h  (needs >= 48 h)" in shown.stdout
    assert "never run" in line_of(shown.stdout, "drill failure") and "never run" in line_of(shown.stdout, "drill crash")
    summary = checklist(home)
    assert (summary["stage"], summary["next"], summary["network"], summary["ready"]) == \
        ("testnet", "soft-launch", "testnet", False), summary
    assert [i["key"] for i in summary["items"]] == ITEMS
    ev = summary["evidence"]
    assert (ev["trades"], ev["hours"], ev["drills"], ev["attestations"], ev["audit_clean"]) == \
        (0, "0.000", {}, {}, True), ev
    check_names(home, ["trades", "hours", "drill:failure", "drill:crash", "attest:logs", "attest:explorer"])

    # 2. A paper run in the same home (every stage may run paper) trades elsewhere: shown, not counted.
    paper = botctl(home, "run", "--seed", "3", "--duration", "200", **PAPER)
    assert paper.returncode == 0 and "paper mode, stage paper" in paper.stderr, paper.stderr
    closed = botctl(home, "close", "--all", "--yes", **PAPER)
    assert closed.returncode == 0, closed.stdout + closed.stderr
    on_paper = book_json(home, "positions", "--all")
    assert on_paper and all(p["state"] == "closed" and p["chain"] != "anvil" for p in on_paper), on_paper
    elsewhere = f" (+{len(on_paper)} elsewhere, not counted)"
    summary = checklist(home)
    assert (summary["evidence"]["trades"], summary["evidence"]["hours"]) == (0, "0.000"), summary["evidence"]
    assert item(summary, "trades")["have"] == f"0{elsewhere}", item(summary, "trades")
    assert item(summary, "hours")["have"] == "0.0 h (+0.1 h elsewhere, not counted)", item(summary, "hours")  # 200 s
    assert checklist(home, **PAPER)["evidence"]["trades"] == 0, "the paper profile reads the same stored stage"
    # The paper round trips count for nothing here, but the loss breaker is the book's: the paper run's
    # losing streak stops new entries, on anvil too; the operator re-arms it.
    resumed = botctl(home, "resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr

    # 3. The failure drill on the live EVM engine. Its entry buys a token with USDC: an approve at
    # nonce 0, the swap at nonce 1. The drill refuses the swap's broadcast (never sent); the approve
    # is a real transaction and lands; the refused nonce 1 is filled by a no-op, leaving no gap.
    drill = botctl(home, "drill", "failure", "--yes")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert "running on the live engine (stage testnet)" in drill.stdout, drill.stdout
    assert "drill failure passed: 1 refused entries rolled back, cash restored (recorded)" in drill.stdout, drill.stdout
    ours = chain_agrees_with_the_book(evm_chain, home, address, start_block, 0)
    assert [(o["intent"], o["nonce"], o["state"]) for o in ours] == [
        ("approve", 0, "filled"), ("entry", 1, "failed"), ("noop", 1, "filled")], ours
    refused = ours[1]
    assert refused["reason"] == "refused by the failure drill (never sent)", refused
    assert refused["tx_id"] not in {t.hash for t in transactions_from(evm_chain, address, start_block)}
    assert book_json(home, "reservations") == [], "every reservation of the drill is released"
    status = book_json(home, "status")
    assert status["open_positions"] == 0 and status["orders_in_flight"] == 0, status
    settled_cleanly(home)
    summary = checklist(home)
    failure = item(summary, "drill:failure")
    assert failure["ok"] and failure["have"].startswith("passed (latest, by "), failure
    assert summary["evidence"]["drills"]["failure"]["passed"] is True, summary["evidence"]
    assert not item(summary, "drill:crash")["ok"], summary
    ev = summary["evidence"]
    assert (ev["trades"], ev["hours"], ev["inconsistencies"]) == (0, "0.000", 0), \
        "a drill's orders and time count as neither trades nor hours"
    shown = botctl(home, "rollout", "status")
    assert "[ok  ] drill failure (botctl drill failure): passed" in shown.stdout, shown.stdout

    # 4. A live run on anvil opens two positions from signals; the operator closes them: two round
    # trips on testnet, and the run's few seconds as testnet hours.
    feed = tmp_path / "signals.jsonl"
    feed.write_text('{"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}\n'
                    '{"id": "s2", "chain": "anvil", "token": "TKB", "size": "30"}\n')
    _out, err = run_until(home, feed, lambda: positions_settled(home, 2), "two positions opened",
                          linger=HOURS_S)
    assert "live EVM: anvil (chain id 31337" in err, err
    closed = botctl(home, "close", "--all", "--yes")
    assert closed.returncode == 0, closed.stdout + closed.stderr
    assert book_json(home, "positions") == []
    summary = checklist(home)
    ev = summary["evidence"]
    assert ev["trades"] == 2 and Decimal(0) < Decimal(ev["hours"]) < Decimal("0.01"), ev  # seconds: ~0.0005 h
    assert item(summary, "trades")["have"] == f"2{elsewhere}", item(summary, "trades")
    assert item(summary, "hours")["have"] == "0.0 h (+0.1 h elsewhere, not counted)", item(summary, "hours")
    assert item(summary, "drill:failure")["ok"], summary
    shown = botctl(home, "rollout", "status")
    assert f"round trips closed on testnet: 2{elsewhere}" in shown.stdout, shown.stdout
    ours = chain_agrees_with_the_book(evm_chain, home, address, start_block, 0)  # the whole history
    assert len(ours) == 3 + 8, "an approve and a swap for each entry and each exit"
    settled_cleanly(home)

    # 5. `rollout check` still exits 1, naming what is left: trades, hours, the crash drill, attestations.
    error = check_names(home, ["trades", "hours", "drill:crash", "attest:logs", "attest:explorer"])
    assert f"round trips closed on testnet: 2{elsewhere}" in error and "drill crash" in error, error
    assert "drill failure" not in error, error


# ---------------------------------------------------------------------------------------------- after trading


def test_a_drill_right_after_round_trips_waits_out_the_cooldown(live_home, tmp_path):  # noqa: F811
    """Every allow-listed token was just traded and closed, so each is cooling down (no position open)."""
    home, _address = live_home
    cooling = {"BOTCTL_COOLDOWN_S": str(COOLDOWN_S)}
    feed = tmp_path / "signals.jsonl"
    feed.write_text('{"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}\n'
                    '{"id": "s2", "chain": "anvil", "token": "TKB", "size": "20"}\n')
    run_until(home, feed, lambda: positions_settled(home, 2), "two positions opened", **cooling)
    closed = botctl(home, "close", "--all", "--yes", **cooling)
    assert closed.returncode == 0 and book_json(home, "positions") == [], closed.stdout + closed.stderr

    drill = botctl(home, "drill", "failure", "--yes", timeout=COOLDOWN_S + 60, **cooling)
    # it waits the cooldown out by the engine's clock (live: the wall clock), not by counting steps
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert "for a token to come off its cooldown" in drill.stdout and "drill failure passed" in drill.stdout, \
        drill.stdout
    settled_cleanly(home)


def test_a_paper_run_after_live_trading_in_the_same_home_runs_and_counts_elsewhere(live_home, tmp_path):  # noqa: F811
    """Every stage may still run paper (`--profile paper`), before or after trading live."""
    home, _address = live_home
    feed = tmp_path / "signals.jsonl"
    feed.write_text('{"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}\n')
    run_until(home, feed, lambda: positions_settled(home, 1), "the position opened", linger=HOURS_S)
    closed = botctl(home, "close", "--all", "--yes")
    assert closed.returncode == 0, closed.stdout + closed.stderr
    live = checklist(home)["evidence"]
    assert live["trades"] == 1 and Decimal(live["hours"]) > 0, live

    paper = botctl(home, "run", "--seed", "3", "--duration", "200", **PAPER)
    assert paper.returncode == 0 and "paper mode, stage paper" in paper.stderr, paper.stderr
    closed = botctl(home, "close", "--all", "--yes", **PAPER)
    assert closed.returncode == 0, closed.stdout + closed.stderr
    on_paper = [p for p in book_json(home, "positions", "--all") if p["chain"] != "anvil"]
    assert on_paper and all(p["state"] == "closed" for p in on_paper), on_paper
    summary = checklist(home)
    assert (summary["evidence"]["trades"], summary["evidence"]["hours"]) == (1, live["hours"]), summary["evidence"]
    assert item(summary, "trades")["have"] == f"1 (+{len(on_paper)} elsewhere, not counted)", item(summary, "trades")
    settled_cleanly(home)


# ---------------------------------------------------------------------------------------------- the crash drill


def test_the_crash_drill_on_evm_settles_the_killed_trade_from_the_chain_and_leaves_nothing_behind(  # noqa: F811
        live_home, evm_chain):  # noqa: F811
    home, address = live_home
    start_block = block_number(evm_chain)
    drill = botctl(home, "drill", "crash", "--yes")
    assert drill.returncode == 0, drill.stdout + drill.stderr
    assert "killed (SIGKILL)" in drill.stdout and "drill crash passed: killed after broadcast" in drill.stdout, \
        drill.stdout

    summary = checklist(home)
    crash = item(summary, "drill:crash")
    assert crash["ok"] and crash["have"].startswith("passed (latest, by "), crash
    ev = summary["evidence"]
    assert (ev["inconsistencies"], item(summary, "consistency")["ok"]) == (0, True), summary
    assert (ev["trades"], ev["hours"]) == (0, "0.000"), "the drill's round trip counts as no trade"
    # The drill's entry landed and the drill closed it again: approve + swap in, approve + swap out.
    ours = chain_agrees_with_the_book(evm_chain, home, address, start_block, 0)
    assert [(o["intent"], o["state"]) for o in ours if o["intent"] in ("entry", "exit")] == \
        [("entry", "filled"), ("exit", "filled")], ours
    assert book_json(home, "positions") == [] and book_json(home, "reservations") == []
    settled_cleanly(home)
    check_names(home, ["trades", "hours", "drill:failure", "attest:logs", "attest:explorer"])
