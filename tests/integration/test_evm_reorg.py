"""Issue 16 on a real EVM node: a transaction the chain loses after it was sent, through `botctl run`.

Two ways a sent transaction vanishes: a node drops it from its pool (eviction, a restart), or a
reorg takes the block that held it. Either way the book must hold the funds, record no fill, and
get the transaction mined again by sending the bytes it committed before the first broadcast:
never a new signature, never a new nonce (another signature at the same nonce could be mined
beside a late copy of the first one's effects in the operator's records; a new nonce would spend
twice).

Mining is paused (automine off) and the next block's base fee pinned before each block, so that
the test decides what the chain holds at every step; the run is stopped with SIGTERM (a clean stop).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from decimal import Decimal

import pytest
from evmkit import (
    GWEI,
    USDC,
    automine,
    block_number,
    book,
    book_json,
    in_flight,
    live_home,  # noqa: F401 (a fixture)
    orders,
    settled_cleanly,
    start,
    stop,
    transactions_from,
    wait_for,
)

from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

EMPTY_POOL = {"pending": "0x0", "queued": "0x0"}
SIZE = "20"  # USDC spent by the one entry


@pytest.fixture
def paused(evm_chain):  # noqa: F811
    """Mining off and the next base fee pinned (it outlives evm_revert: put back after)."""
    before = int(evm_chain.rpc("eth_getBlockByNumber", ["latest", False])["baseFeePerGas"], 16)
    automine(evm_chain, False)
    yield evm_chain
    evm_chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(before)])


def mine_one(chain) -> None:
    """One block at a base fee of 1 gwei: empty blocks would otherwise lower it block by block."""
    chain.rpc("anvil_setNextBlockBaseFeePerGas", [hex(GWEI)])
    chain.rpc("evm_mine")


def run_one_entry(home, tmp_path):
    feed = tmp_path / "signals.jsonl"
    feed.write_text(json.dumps({"id": "s1", "chain": "anvil", "token": "TKA", "size": SIZE}) + "\n")
    return start(home, "run", "--signals", str(feed), "--duration", "60")


def submitted(home) -> dict[int, str] | None:
    """{nonce: tx hash} of the approve and the swap once the book has both as submitted."""
    sent = [o for o in orders(home) if o["intent"] in ("approve", "entry")]
    if len(sent) == 2 and all(o["state"] == "submitted" for o in sent):
        return {o["nonce"]: o["tx_id"] for o in sent}
    return None


def pooled(chain, address: str) -> dict[int, str]:
    """{nonce: hash} of our transactions waiting in the node's pool."""
    content = chain.rpc("txpool_content")
    found = {}
    for part in ("pending", "queued"):
        ours = next((txs for who, txs in content[part].items() if who.lower() == address.lower()), {})
        found.update({int(nonce): tx["hash"] for nonce, tx in ours.items()})
    return found


def signatures(home) -> list[tuple]:
    """What the book signed: every order's nonce, hash, stored bytes and earlier attempts."""
    return book(home, "SELECT id, nonce, tx_id, raw, attempts FROM orders ORDER BY id")


def open_positions(home) -> list[tuple]:
    return book(home, "SELECT token, cost FROM positions WHERE state != 'closed'")


def opened(home) -> bool:
    return bool(open_positions(home)) and not in_flight(home)


def mined_once_as_signed(chain, home, address: str, start_block: int, sent: dict[int, str]):
    """One transaction per nonce on the chain, each the book's stored hash, both succeeded."""
    on_chain = transactions_from(chain, address, start_block)
    assert sorted((t.nonce, t.hash, t.status) for t in on_chain) == \
        [(n, h, 1) for n, h in sorted(sent.items())], (on_chain, sent)
    return on_chain


# ---------------------------------------------------------------------------------------------- 1



def entry_in_the_pool(chain, home, tmp_path, address: str):
    """`botctl run` with one entry signal, once the approve and the swap are submitted in the book and
    in the node's pool as the book has them: (the run, {nonce: hash}, the stored signatures)."""
    run = run_one_entry(home, tmp_path)
    try:
        sent = wait_for(lambda: submitted(home), 20, "the approve and the swap submitted")
        wait_for(lambda: pooled(chain, address) == sent, 10, "both in the node's pool as the book has them")
        return run, sent, signatures(home)
    except BaseException:
        run.kill()
        raise


@contextlib.contextmanager
def frozen(run):
    """The engine stopped (SIGSTOP) while the test changes the chain under it and reads it back:
    it would otherwise act within one 0.2 s step."""
    os.kill(run.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(run.pid, signal.SIGCONT)


def sent_again(chain, home, address: str, sent: dict, signed) -> None:
    """Our two transactions back in the pool as the very bytes the book stored: nothing re-signed."""
    again = wait_for(lambda: len(pooled(chain, address)) == 2 and pooled(chain, address), 10,
                     "our two transactions in the pool again")
    assert again == sent, "the same bytes again: no new signature, no new nonce"
    assert signatures(home) == signed, "nothing re-signed, no order added"

def test_a_transaction_dropped_from_the_pool_is_sent_again_as_the_same_bytes(live_home, paused,  # noqa: F811
                                                                             tmp_path):
    """The node forgets both transactions of an entry (anvil_dropTransaction) before any block holds
    them: the engine finds them neither mined nor known ("missing") and sends its stored bytes
    again. The engine is paused (SIGSTOP) while the pool is emptied, so that the empty pool is
    seen before its rebroadcast, not raced."""
    home, address = live_home
    start_block = block_number(paused)
    run, sent, signed = entry_in_the_pool(paused, home, tmp_path, address)
    try:
        with frozen(run):
            for tx_hash in sent.values():
                paused.rpc("anvil_dropTransaction", [tx_hash])
            assert paused.rpc("txpool_status") == EMPTY_POOL, "the node dropped both"
            assert [paused.rpc("eth_getTransactionByHash", [h]) for h in sent.values()] == [None, None]
        sent_again(paused, home, address, sent, signed)
        mine_one(paused)
        wait_for(lambda: opened(home), 15, "the position open")
    finally:
        stop(run, home)

    mined_once_as_signed(paused, home, address, start_block, sent)
    assert open_positions(home) == [("TKA", str(int(SIZE) * USDC))], "opened once"
    settled_cleanly(home)


# ---------------------------------------------------------------------------------------------- 2


def confirmations(home, n: int) -> None:
    config = home / "config.toml"
    text = config.read_text()
    assert "confirmations = 1\n" in text, text
    config.write_text(text.replace("confirmations = 1\n", f"confirmations = {n}\n"))


def test_a_reorg_before_the_confirmations_takes_no_fill_and_the_same_bytes_are_mined_again(live_home, paused,  # noqa: F811
                                                                                            tmp_path):
    """confirmations = 2. The block that mines the entry is taken back (evm_snapshot before it,
    evm_revert after it) while it is the only confirmation. On anvil 1.7.1 evm_revert does NOT put
    the reverted block's transactions back in the pool: they are unknown to the node, as after a
    reorg on a node that never saw them. So the engine must have recorded nothing from the vanished
    receipt and must send its stored bytes again; mined anew and confirmed twice, the position
    opens, with the network fee of the receipt that stands."""
    home, address = live_home
    confirmations(home, 2)
    start_block = block_number(paused)
    run, sent, signed = entry_in_the_pool(paused, home, tmp_path, address)
    try:
        snapshot = paused.rpc("evm_snapshot")
        mine_one(paused)
        first = transactions_from(paused, address, start_block)
        assert sorted((t.nonce, t.hash) for t in first) == sorted(sent.items()), first
        time.sleep(1.5)  # the engine looks its orders up every 0.2 s: several look-ups see one confirmation

        status = book_json(home, "status")
        assert submitted(home) == sent, f"one confirmation of two decides nothing: {orders(home)}"
        assert book(home, "SELECT * FROM fills") == [] and open_positions(home) == [], "no fill, no position"
        assert Decimal(status["chains"]["anvil"]["reserved"]) == Decimal(SIZE), status  # the funds stay held
        held = book(home, "SELECT r.kind, r.state FROM reservations r JOIN orders o ON o.reservation_id = r.id "
                          "WHERE o.intent = 'entry'")
        assert held == [("entry", "held")], held

        with frozen(run):  # while the chain is read back: the engine resends within 0.2 s
            assert paused.rpc("evm_revert", [snapshot]) is True
            assert block_number(paused) == start_block, "the block and its receipt are gone"
            assert [paused.rpc("eth_getTransactionReceipt", [h]) for h in sent.values()] == [None, None]
            assert paused.rpc("txpool_status") == EMPTY_POOL, "anvil's revert does not put them back in the pool"
        sent_again(paused, home, address, sent, signed)
        assert submitted(home) == sent and book(home, "SELECT * FROM fills") == [], "still nothing recorded"

        mine_one(paused)  # mined again: one confirmation, still nothing
        time.sleep(1)
        assert submitted(home) == sent and open_positions(home) == [], orders(home)
        mine_one(paused)  # the second confirmation decides it
        wait_for(lambda: opened(home), 10, "the position open after two confirmations")
    finally:
        stop(run, home)

    mined = mined_once_as_signed(paused, home, address, start_block, sent)
    swap = next(t for t in mined if t.hash == sent[max(sent)])
    fills = book(home, "SELECT f.tx_id, f.network_fee FROM fills f JOIN orders o ON o.id = f.order_id "
                       "WHERE o.intent = 'entry'")
    assert fills == [(swap.hash, str(swap.fee))], (fills, swap)  # gasUsed x effectiveGasPrice of the receipt
    fees = Decimal(book_json(home, "status")["chains"]["anvil"]["network_fees"]) * 10**18
    assert fees == sum(t.fee for t in mined), (fees, mined)  # the approve's and the swap's, each once
    settled_cleanly(home)
