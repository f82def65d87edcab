"""Issue 16 on a real EVM node: what the operator's `botctl` does when the chain misbehaves.

Each test drives the real CLI as a subprocess against the worker's shared anvil (the
`evm_chain` fixture, reverted after each test) with the canonical Uniswap V2, and reads the
chain back from its blocks and receipts to compare with what the book says. Where a test
must act between two steps of the engine (mine a block, move the pool, cut the node), it
turns anvil's automine off and mines itself; the engine then runs in the background
(`start`) and is stopped with SIGTERM, a clean stop, once the book shows what is awaited.
"""

from __future__ import annotations

import fcntl
import json
import sqlite3
import time
from decimal import Decimal

import pytest
from evmkit import (
    FUNDS_ETH,
    GWEI,
    PASSWORD,
    USDC,
    add_tokens,
    approve_router_from_another_account,
    automine,
    block_number,
    book,
    book_json,
    botctl,
    buy_from_another_account,
    in_flight,
    live_home,  # noqa: F401 (a fixture)
    make_home,
    mine,
    native_balance,
    nonce_counts,
    orders,
    output,
    positions_settled,
    relay,  # noqa: F401 (a fixture)
    run_until,
    send_from_our_key,
    settled_cleanly,
    start,
    stop,
    transactions_from,
    wait_for,
)

from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)
from clikit import one_error_line

pytestmark = pytest.mark.slow

CAP_GWEI = 50  # the testnet stage's max_gas_price_gwei


def signals(path, *lines: tuple[str, str, str]) -> str:
    path.write_text("".join(json.dumps({"id": i, "chain": "anvil", "token": t, "size": s}) + "\n"
                            for i, t, s in lines))
    return str(path)


def wei(ether: str) -> int:
    """An amount of the chain's coin as the CLI shows it (ether, exact) in wei."""
    value = Decimal(ether) * 10**18
    assert value == value.to_integral_value(), ether
    return int(value)


def open_positions(home) -> list[tuple[str, str]]:
    """(token, cost in base units) of each position not closed, read from the book."""
    return book(home, "SELECT token, cost FROM positions WHERE state != 'closed' ORDER BY id")


def audited(home) -> None:
    audit = botctl(home, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr


# ---------------------------------------------------------------------------------------------- 1


MORE_TOKENS = ["TKC", "TKD", "TKE", "TKF", "TKG", "TKH", "TKI", "TKJ"]


def test_fifty_transactions_from_one_run_use_each_nonce_once_with_no_gap(tmp_path, evm_chain):  # noqa: F811
    """Three waves with mining held back, so that each wave's transactions are all in the node's
    pool at once: ten entries (an approve and a swap each; ten is the testnet stage's ceiling of
    open positions), `close --all` (ten approves and ten swaps), five entries again. Fifty
    transactions from one `botctl run`, twenty in flight at a time. Then `botctl nonces` shows the
    chain's count as our next nonce."""
    added = add_tokens(evm_chain, MORE_TOKENS)
    home = tmp_path / "home"
    address = make_home(home, evm_chain, tokens=["TKA", "TKB", *added])
    start_block = block_number(evm_chain)
    tokens = ["TKA", "TKB", *MORE_TOKENS]
    feed = tmp_path / "s.jsonl"
    signals(feed, *((f"a{i}", token, "20") for i, token in enumerate(tokens)))
    automine(evm_chain, False)
    run = start(home, "run", "--signals", str(feed), "--duration", "120", BOTCTL_COOLDOWN_S="0",
                BOTCTL_MAX_CONSECUTIVE_LOSSES="0")  # each round trip loses its fees: no breaker here
    mined = [0]

    def wave(sent: int, what: str, open_after: int) -> None:
        wait_for(lambda: nonce_counts(evm_chain, address)[1] == sent, 30, f"{what}: {sent} transactions sent in all")
        assert nonce_counts(evm_chain, address)[0] == mined[0]
        assert evm_chain.rpc("txpool_status")["pending"] == hex(sent - mined[0]), "the wave is in the pool at once"
        mine(evm_chain)
        wait_for(lambda: not in_flight(home) and len(open_positions(home)) == open_after, 30, f"{what} settled")
        mined[0] = sent

    try:
        wave(20, "ten entries", 10)
        closing = botctl(home, "close", "--all", "--yes", "--no-wait")
        assert closing.returncode == 0, closing.stderr
        wave(40, "ten exits", 0)
        with open(feed, "a") as more:
            more.write("".join(json.dumps({"id": f"b{i}", "chain": "anvil", "token": token, "size": "20"}) + "\n"
                               for i, token in enumerate(tokens[:5])))
        wave(50, "five entries", 5)
    finally:
        stop(run, home)
    automine(evm_chain, True)

    sent = transactions_from(evm_chain, address, start_block)
    assert sorted(t.nonce for t in sent) == list(range(50)), [t.nonce for t in sent]  # each once, none missing
    assert all(t.status == 1 for t in sent), [t for t in sent if t.status != 1]
    assert nonce_counts(evm_chain, address) == (50, 50), "all mined, nothing queued behind a gap"
    signed = sorted((o["nonce"], o["tx_id"]) for o in orders(home) if o["tx_id"] is not None)
    assert signed == sorted((t.nonce, t.hash) for t in sent), "the book has every transaction the chain has"
    assert sorted(token for token, _cost in open_positions(home)) == tokens[:5]
    (row,) = book_json(home, "nonces")
    assert (row["address"], row["next_nonce"], row["in_flight"]) == (address, 50, []), row
    settled_cleanly(home)


# ---------------------------------------------------------------------------------------------- 2


def test_a_swap_that_reverts_on_amount_out_min_posts_its_gas_and_releases_the_rest(live_home, tmp_path,  # noqa: F811
                                                                                   evm_chain):  # noqa: F811
    """The pool moves between the quote and the mining: another account's big buy with a higher tip is
    mined in the same block before our swap, so ours falls below amountOutMin and reverts on chain."""
    home, address = live_home
    start_block = block_number(evm_chain)
    approve_router_from_another_account(evm_chain)
    automine(evm_chain, False)
    run = start(home, "run", "--signals", signals(tmp_path / "s.jsonl", ("s1", "TKA", "20")), "--duration", "60")
    try:
        wait_for(lambda: nonce_counts(evm_chain, address)[1] == 2, 20, "the approve and the swap in the pool")
        buy_from_another_account(evm_chain, "TKA", 20_000 * USDC, 10 * GWEI)  # 2% of the pool, 4x our slippage
        mine(evm_chain)
        wait_for(lambda: not in_flight(home), 20, "the engine to settle both orders")
    finally:
        stop(run, home)
    automine(evm_chain, True)

    sent = transactions_from(evm_chain, address, start_block)
    assert [(t.nonce, t.status) for t in sent] == [(0, 1), (1, 0)], sent  # the approve landed, the swap reverted
    entry = [o for o in orders(home) if o["intent"] == "entry"]
    assert [(o["state"], o["nonce"]) for o in entry] == [("failed", 1)], entry
    assert "reverted on chain" in entry[0]["reason"] and sent[1].hash in entry[0]["reason"], entry

    status = book_json(home, "status")
    assert status["open_positions"] == 0 and status["orders_in_flight"] == 0, status
    anvil = status["chains"]["anvil"]
    lost = FUNDS_ETH - native_balance(evm_chain, address)
    assert lost == sum(t.fee for t in sent) == wei(anvil["network_fees"]), (lost, sent, anvil)
    assert wei(anvil["native_cash"]) == native_balance(evm_chain, address) and anvil["native_reserved"] == "0"
    assert Decimal(anvil["cash"]) == 2000 and anvil["reserved"] == "0", anvil  # the quote is back in full
    assert book_json(home, "reservations") == [], "every reservation is released"
    audited(home)


# ---------------------------------------------------------------------------------------------- 3


def test_a_kill_after_the_write_ahead_commit_sends_the_same_bytes_after_the_restart(live_home, tmp_path,  # noqa: F811
                                                                                     evm_chain):  # noqa: F811
    """SIGKILL right after the signed bytes are committed, before they are sent (the approve's, the
    first to get there): the restart sends those very bytes, and no other transaction takes the nonce."""
    home, address = live_home
    start_block = block_number(evm_chain)
    feed = signals(tmp_path / "s.jsonl", ("s1", "TKA", "20"))
    killed = botctl(home, "run", "--signals", feed, "--duration", "30", BOTCTL_CRASH_AT="after_submit_commit")
    assert killed.returncode == -9, killed.stderr
    signed = {o["nonce"]: o["tx_id"] for o in orders(home) if o["state"] == "signed"}
    assert signed, orders(home)
    assert nonce_counts(evm_chain, address) == (0, 0), "killed before the broadcast: the node has nothing"

    run_until(home, feed, lambda: positions_settled(home, 1), "the restart to open the position")
    sent = transactions_from(evm_chain, address, start_block)
    assert sorted(t.nonce for t in sent) == [0, 1] and all(t.status == 1 for t in sent), sent  # one per nonce
    mined = {t.nonce: t.hash for t in sent}
    assert {n: mined[n] for n in signed} == signed, "the bytes committed before the kill are the ones mined"
    status = book_json(home, "status")
    assert status["open_positions"] == 1 and status["orders_in_flight"] == 0, status
    audited(home)


def test_a_kill_after_the_broadcast_finds_the_receipt_after_the_restart(live_home, tmp_path, evm_chain):  # noqa: F811
    """SIGKILL after the swap was sent (and mined) but before the book heard so: the restart finds the
    receipt, opens the position once and sends nothing more."""
    home, address = live_home
    start_block = block_number(evm_chain)
    feed = signals(tmp_path / "s.jsonl", ("s1", "TKA", "20"))
    # The approve and the swap are broadcast concurrently: skip one kill point to die after the second.
    killed = botctl(home, "run", "--signals", feed, "--duration", "30", BOTCTL_CRASH_AT="after_broadcast",
                    BOTCTL_CRASH_SKIP="1")
    assert killed.returncode == -9, killed.stderr
    flown = [o for o in orders(home) if o["intent"] in ("approve", "entry")]
    assert "signed" in [o["state"] for o in flown], flown  # the book never heard that one was sent ...
    sent = transactions_from(evm_chain, address, start_block)
    assert sorted((t.nonce, t.hash, t.status) for t in sent) == \
        sorted((o["nonce"], o["tx_id"], 1) for o in flown), sent  # ... and both are mined, as stored

    run_until(home, feed, lambda: positions_settled(home, 1), "the restart to open the position")
    assert transactions_from(evm_chain, address, start_block) == sent, "nothing more was sent"
    entry = [o for o in orders(home) if o["intent"] == "entry"]
    assert [(o["state"], o["tx_id"]) for o in entry] == [("filled", sent[-1].hash)], entry
    status = book_json(home, "status")
    assert status["open_positions"] == 1 and status["chains"]["anvil"]["open_cost"] == "20", status  # once
    audited(home)


# ---------------------------------------------------------------------------------------------- 4


def test_a_base_fee_above_the_cap_refuses_the_entry_and_sends_nothing(live_home, tmp_path, evm_chain):  # noqa: F811
    """The next block's base fee is above max_gas_price_gwei: the entry is refused with the reason, nothing
    is signed or sent, and nothing stays held."""
    home, address = live_home
    start_block = block_number(evm_chain)
    usual = int(evm_chain.rpc("eth_getBlockByNumber", ["pending", False])["baseFeePerGas"], 16)
    automine(evm_chain, False)  # no block is mined, so the next block's base fee stays where it is set
    evm_chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex((CAP_GWEI + 10) * GWEI)])

    def decided() -> bool:
        return bool(book(home, "SELECT 1 FROM signals WHERE id = 's1'")) and not [
            o for o in orders(home) if o["intent"] in ("approve", "entry") and o["state"] == "new"]

    try:
        run_until(home, signals(tmp_path / "s.jsonl", ("s1", "TKA", "20")), decided, "the signal decided", linger=1)
    finally:  # it outlives evm_revert: the next test would start above the cap
        evm_chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(usual)])

    assert nonce_counts(evm_chain, address) == (0, 0), "nothing was sent from our address"
    assert evm_chain.rpc("txpool_status") == {"pending": "0x0", "queued": "0x0"}
    automine(evm_chain, True)
    assert transactions_from(evm_chain, address, start_block) == []
    assert [o for o in orders(home) if o["tx_id"] is not None] == [], "nothing was signed"
    reason = f"base fee {CAP_GWEI + 10} gwei is above the cap {CAP_GWEI} gwei"
    assert reason in (home / "logs" / "botctl.log").read_text(), "the reason is told"
    status = book_json(home, "status")
    assert status["open_positions"] == 0 and Decimal(status["chains"]["anvil"]["cash"]) == 2000, status
    assert status["chains"]["anvil"]["network_fees"] == "0", status
    audited(home)
    assert status["orders_in_flight"] == 0, status
    assert book_json(home, "reservations") == [], "every reservation is released"


# ---------------------------------------------------------------------------------------------- 5


OUTAGE_S = 6  # longer than the engine's periodic reads of the chain (kernel FLOOR_SYNC_MS is 5 s)


def test_a_node_cut_off_after_the_sends_holds_the_funds_until_it_answers_again(tmp_path, evm_chain,  # noqa: F811
                                                                               relay):  # noqa: F811
    """A position is open (its price is read every tick) when the next entry's two transactions
    reach the node but their answers do not reach botctl, and then the node stays unreachable for
    longer than any periodic read's interval. The engine keeps running and holds the funds; when
    the node answers again, everything settles from the chain."""
    home = tmp_path / "home"
    address = make_home(home, evm_chain, rpc_url=relay.url)
    start_block = block_number(evm_chain)
    feed = tmp_path / "s.jsonl"
    signals(feed, ("s0", "TKB", "30"))
    run = start(home, "run", "--signals", str(feed), "--duration", "60")
    try:
        wait_for(lambda: positions_settled(home, 1), 20, "the TKB position open")
        automine(evm_chain, False)
        relay.set("lose_sends")  # the node takes each transaction; its answer never reaches botctl
        with open(feed, "a") as more:
            more.write(json.dumps({"id": "s1", "chain": "anvil", "token": "TKA", "size": "20"}) + "\n")
        wait_for(lambda: relay.sends_lost == 2 and [o["state"] for o in in_flight(home)] == ["unknown", "unknown"],
                 20, "the approve and the swap sent, their outcome unknown")
        relay.set("down")
        cut = time.monotonic()
        mine(evm_chain)  # both land while botctl cannot see the node
        time.sleep(1)  # a few ticks of failed reads

        status = book_json(home, "status")
        assert status["orders_unknown"] == 2 and status["open_positions"] == 1, status
        anvil = status["chains"]["anvil"]
        assert Decimal(anvil["reserved"]) == 20 and wei(anvil["native_reserved"]) > 0, anvil  # nothing released
        held = book_json(home, "reservations")
        assert [(r["kind"], r["state"], r["order_state"]) for r in held] == \
            [("approve", "unknown outcome", "unknown"), ("entry", "unknown outcome", "unknown")], held
        time.sleep(max(0.0, cut + OUTAGE_S - time.monotonic()))
        assert run.poll() is None, f"the engine stopped while the node was away: {output(home)[1]}"
        assert [o["state"] for o in in_flight(home)] == ["unknown", "unknown"]

        relay.set("pass")
        wait_for(lambda: len(open_positions(home)) == 2 and not in_flight(home), 20,
                 "the engine to settle both orders once the node answers")
    finally:
        stop(run, home)
    automine(evm_chain, True)

    sent = transactions_from(evm_chain, address, start_block)
    assert sorted((t.nonce, t.status) for t in sent) == [(0, 1), (1, 1), (2, 1), (3, 1)], sent
    assert sorted(open_positions(home)) == [("TKA", str(20 * USDC)), ("TKB", str(30 * USDC))], "each opened once"
    settled_cleanly(home)


# ---------------------------------------------------------------------------------------------- 6


def book_dump(home) -> list[str]:
    conn = sqlite3.connect(f"file:{home / 'botctl.db'}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def nothing_says(home, outputs: list[str], *secrets: str) -> None:
    """No output and no file of the home (the log, the book, the config) holds any of `secrets`."""
    said = outputs + [p.read_bytes().decode("utf-8", "replace") for p in home.rglob("*") if p.is_file()]
    assert not [text for text in said if any(secret in text for secret in secrets)], "a secret was written out"


def test_a_wrong_keystore_password_stops_the_start_with_one_line_and_takes_nothing(live_home, tmp_path):  # noqa: F811
    """BOTCTL_EVM_PASSWORD is wrong: one `error:` line, exit 1, the lock let go, the book untouched, and
    neither password anywhere (at debug level, so that any line that would carry it is written)."""
    home, _address = live_home
    wrong = "Tr0ub4dor&3-not-the-password"
    before = book_dump(home)
    run = botctl(home, "run", "--signals", signals(tmp_path / "s.jsonl", ("s1", "TKA", "20")), "--duration", "1",
                 BOTCTL_EVM_PASSWORD=wrong, BOTCTL_LOG_LEVEL="debug")
    line = one_error_line(run)
    assert run.returncode == 1 and "wrong password" in line, line  # console/errors.py: KeystoreError's code
    assert book_dump(home) == before, "the book is unchanged"
    lock = home / "botctl.lock"
    assert lock.read_text() == "", "no owner is left recorded"
    with open(lock) as held:  # and nobody holds the lock
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    nothing_says(home, [run.stdout, run.stderr], wrong, PASSWORD)


# ---------------------------------------------------------------------------------------------- 7


def test_nonces_shows_the_next_nonce_and_the_floor_a_transaction_from_elsewhere_raised(live_home, tmp_path,  # noqa: F811
                                                                                        evm_chain):  # noqa: F811
    """Our key sent one transaction before botctl ever ran: the engine takes the chain's pending count
    as the floor and hands out nonces above it. `botctl nonces` asks the chain for its pending count
    now (`--offline` shows only the floor the engine last raised ours to, as a floor)."""
    home, address = live_home
    send_from_our_key(evm_chain, home, address)
    run_until(home, signals(tmp_path / "s.jsonl", ("s1", "TKA", "20")), lambda: positions_settled(home, 1),
              "the position open")
    assert nonce_counts(evm_chain, address) == (3, 3), "ours, then the approve and the swap at 1 and 2"
    (row,) = book_json(home, "nonces")
    assert (row["chain"], row["address"], row["next_nonce"], row["chain_floor"], row["chain_pending"],
            row["in_flight"], row["gap"]) == ("anvil", address, 3, 1, 3, [], None), row
    table = botctl(home, "nonces")
    assert table.returncode == 0, table.stderr
    line = next(line for line in table.stdout.splitlines() if "anvil" in line)
    assert line.split() == ["anvil", address, "3", "3", "0", "-"], table.stdout
    offline = botctl(home, "nonces", "--offline")
    line = next(line for line in offline.stdout.splitlines() if "anvil" in line)
    assert line.split()[2:4] == ["?", "(floor"], offline.stdout
    audited(home)
    assert (home / "logs" / "botctl.log").stat().st_size > 0
    nothing_says(home, [table.stdout, table.stderr], PASSWORD)
