"""ERC20 approvals on a live EVM router chain: each swap that spends a token is preceded, at the
nonce right before its own, by an approve for exactly what it spends. Approve SETS an allowance,
so a pair that interleaved with another could let one swap spend the other's allowance; deciding
both in one command, on consecutive nonces, makes that impossible."""

from __future__ import annotations

from engine.core.messages import (
    ApprovalRequested,
    CloseDenied,
    CloseRequested,
    EntryDenied,
    EntryReserved,
    NoopRequested,
    OrderFailed,
    OrderFilled,
)

from builders import (
    FEE,
    NOW,
    RecordFailure,
    broadcast,
    close,
    deposit,
    failure,
    fill,
    funded,
    given,
    native,
    policy,
    quote,
    reserve,
    sign,
    start_engine,
    then_apply,
    usd,
    when,
)

APPROVING = policy(approvals=True)


def test_an_entry_is_preceded_by_an_approval_of_exactly_its_amount_at_the_nonce_before():
    book = given(*funded("base"), pol=APPROVING)
    approval, reserved = when(book, reserve("base", "T1", usd(50)))
    assert isinstance(approval, ApprovalRequested) and isinstance(reserved, EntryReserved)
    assert (approval.asset, approval.amount, approval.nonce) == ("quote", usd(50), 0)
    assert reserved.nonce == approval.nonce + 1 and reserved.order_id == approval.order_id + 1
    assert approval.for_order == reserved.order_id
    assert reserved.reservation_id == approval.reservation_id + 1


def test_an_approval_reserves_its_own_gas_and_takes_its_nonce():
    book = given(*funded("base"), reserve("base", "T1", usd(50)), pol=APPROVING)
    assert native(book, "base", "reserved") == 2 * FEE
    assert quote(book, "base", "reserved") == usd(50)
    orders = sorted(book.live_orders(), key=lambda o: o.id)
    assert [(o.intent, o.nonce, o.token, o.amount_in) for o in orders] == [
        ("approve", 0, "quote", usd(50)), ("entry", 1, "T1", usd(50))]
    assert book.nonces.get(("base", orders[0].address)).next == 2


def test_pairs_never_interleave():
    book = given(*funded("base"), reserve("base", "T1", usd(50)), reserve("base", "T2", usd(40)), pol=APPROVING)
    orders = sorted(book.live_orders(), key=lambda o: o.nonce)
    assert [(o.intent, o.token) for o in orders] == [("approve", "quote"), ("entry", "T1"),
                                                       ("approve", "quote"), ("entry", "T2")]
    assert [o.amount_in for o in orders] == [usd(50), usd(50), usd(40), usd(40)]


def test_no_approval_to_spend_the_native_coin_but_one_to_sell_the_token():
    pol = policy(approvals=True, quote_native=True)
    book = given(*funded("base"), pol=pol)
    events = when(book, reserve("base", "T1", usd(50)))
    assert [type(e) for e in events] == [EntryReserved] and events[0].nonce == 0
    book = given(*funded("base"), reserve("base", "T1", usd(50)), sign(1), broadcast(1), fill(1, usd(50), 7 * 10**18),
                 pol=pol)
    approval, requested = when(book, close(1))
    assert isinstance(approval, ApprovalRequested) and isinstance(requested, CloseRequested)
    assert (approval.asset, approval.amount) == ("T1", 7 * 10**18)
    assert requested.nonce == approval.nonce + 1 == 2


def test_paper_and_solana_chains_never_approve():
    book = given(*funded("base"), *funded("solana"))
    assert [type(e) for e in when(book, reserve("base", "T1", usd(50)))] == [EntryReserved]
    book = given(*funded("solana"), pol=APPROVING)
    assert [type(e) for e in when(book, reserve("solana", "T1", usd(50)))] == [EntryReserved]


def test_an_entry_is_denied_without_native_for_both_transactions():
    book = given(deposit("base", usd(1000)), deposit("base", FEE + FEE // 2, "native"), pol=APPROVING)
    (denied,) = when(book, reserve("base", "T1", usd(50)))
    assert isinstance(denied, EntryDenied) and "a swap and its approval" in denied.reason
    book = given(deposit("base", usd(1000)), deposit("base", 2 * FEE, "native"), pol=APPROVING)
    assert isinstance(when(book, reserve("base", "T1", usd(50)))[-1], EntryReserved)


def test_a_close_is_denied_without_native_for_both_transactions():
    book = given(*funded("base", native=3 * FEE), reserve("base", "T1", usd(50)), sign(1), broadcast(1),
                 fill(1, usd(50), 0, network_fee=FEE), sign(2), broadcast(2), fill(2, usd(50), 10**18, network_fee=FEE),
                 pol=APPROVING)
    assert native(book, "base") == FEE  # 3 fees deposited, two paid
    (denied,) = when(book, close(1))
    assert isinstance(denied, CloseDenied) and "insufficient native" in denied.reason


def test_a_landed_approval_posts_its_gas_and_releases_the_rest_and_nothing_else():
    book = given(*funded("base"), reserve("base", "T1", usd(50)), sign(1), broadcast(1), pol=APPROVING)
    cash_before = quote(book, "base")
    (filled,) = when(book, fill(1, usd(50), 0, network_fee=300))
    assert isinstance(filled, OrderFilled) and filled.position_id == 0
    book = given(*funded("base"), reserve("base", "T1", usd(50)), sign(1), broadcast(1),
                 fill(1, usd(50), 0, network_fee=300), pol=APPROVING)
    assert native(book, "base", "fees") == 300 and native(book, "base", "reserved") == FEE  # the swap's
    assert quote(book, "base") == cash_before and not book.open_positions()
    assert book.meta.get("next_fill") == 1 and book.meta.get("next_position") == 1  # no fill, no position


def test_an_approval_the_node_refused_leaves_its_nonce_to_a_noop():
    book = given(*funded("base"), reserve("base", "T1", usd(50)), sign(1), pol=APPROVING)
    events = when(book, RecordFailure(1, "insufficient funds", 0, NOW, nonce_unused=True, refill_fee_reserve=FEE))
    assert isinstance(events[0], OrderFailed)
    (noop,) = [e for e in events if isinstance(e, NoopRequested)]
    assert noop.nonce == 0 and noop.replaces == 1
    book = then_apply(book, events)  # the swap it was for is untouched: it goes on at its own nonce
    assert [(o.intent, o.state, o.nonce) for o in sorted(book.live_orders(), key=lambda o: o.id)] == [
        ("entry", "new", 1), ("noop", "new", 0)]
    assert quote(book, "base", "reserved") == usd(50) and book.slots.get(("base", "T1")) == "r2"


def test_a_reverted_exit_retries_with_a_fresh_approval_and_a_refused_one_at_its_own_nonce():
    opened = (*funded("base"), reserve("base", "T1", usd(50)), sign(1), broadcast(1), fill(1, usd(50), 0),
              sign(2), broadcast(2), fill(2, usd(50), 10**18), close(1), sign(3), broadcast(3),
              fill(3, 10**18, 0), sign(4))
    book = given(*opened, pol=APPROVING)
    exit_order = book.orders.get(4)
    assert exit_order.intent == "exit" and exit_order.nonce == 3
    refused = when(book, RecordFailure(4, "nonce gap", 0, NOW, nonce_unused=True, refill_fee_reserve=FEE))
    retry = [e for e in refused if isinstance(e, CloseRequested)]
    assert retry and retry[0].nonce == 3 and not [e for e in refused if isinstance(e, ApprovalRequested)]
    book = given(*opened, broadcast(4), pol=APPROVING)
    reverted = when(book, failure(4, "reverted on chain", network_fee=200))
    approval = [e for e in reverted if isinstance(e, ApprovalRequested)]
    retry = [e for e in reverted if isinstance(e, CloseRequested)]
    assert approval and retry and (approval[0].nonce, retry[0].nonce) == (4, 5)
    assert retry[0].order_id == approval[0].order_id + 1 and approval[0].amount == 10**18


async def test_a_round_trip_with_approvals_on_a_real_database_audits_clean(tmp_path):
    h = await start_engine(tmp_path, APPROVING, cash={"base": usd(1000)})
    try:
        for cmd in (reserve("base", "T1", usd(50)), sign(1), broadcast(1), fill(1, usd(50), 0, network_fee=100),
                    sign(2), broadcast(2), fill(2, usd(50), 10**18, network_fee=400), close(1), sign(3),
                    broadcast(3), fill(3, 10**18, 0, network_fee=100), sign(4), broadcast(4),
                    fill(4, 10**18, usd(55), network_fee=400)):
            await h.ok(cmd)
        book = await h.load()
        assert not book.live_orders() and not book.open_positions()
        assert native(book, "base", "fees") == 1000 and native(book, "base", "reserved") == 0
        assert quote(book, "base") == usd(1005)
        assert h.invariants() == [] and h.audit() == []
        tables = h.dump()
        assert [row[1] for row in tables["orders"]] == ["approve", "entry", "approve", "exit"]
        assert [row[3] for row in tables["fills"]] == ["buy", "sell"]  # approvals fill nothing
    finally:
        await h.close()


def test_a_book_from_before_approvals_is_upgraded_in_place_with_every_row_kept(tmp_path):
    """Schema 4 rebuilds the orders and reservations tables (SQLite cannot widen a CHECK): every
    row and index of a version-3 book survives, and an approve order can then be written."""
    import sqlite3

    from storage.db import migrate
    from storage.schema import MIGRATIONS

    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    migrate(conn, MIGRATIONS[:3])
    conn.execute("INSERT INTO reservations VALUES (1, 'entry', 'base', 'T1', '50', '1000', 'held', 1, NULL, 5, NULL)")
    conn.execute("INSERT INTO orders (id, intent, chain, token, reservation_id, state, amount_in, nonce, address, "
                 "created_at, updated_at, tx_id, raw) VALUES (1, 'entry', 'base', 'T1', 1, 'signed', '50', 7, '0xabc', "
                 "5, 6, '0xtx', x'01')")
    columns = {t: [d[0] for d in conn.execute(f"SELECT * FROM {t}").description] for t in ("orders", "reservations")}
    before = [conn.execute(f"SELECT {', '.join(c)} FROM {t}").fetchall() for t, c in columns.items()]
    assert migrate(conn) == len(MIGRATIONS) == conn.execute("PRAGMA user_version").fetchone()[0]
    assert [conn.execute(f"SELECT {', '.join(c)} FROM {t}").fetchall() for t, c in columns.items()] == before
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"orders_state", "reservations_held", "reservations_one_held_entry_per_token"} <= indexes
    conn.execute("INSERT INTO orders (id, intent, chain, token, reservation_id, state, amount_in, created_at, "
                 "updated_at) VALUES (2, 'approve', 'base', 'quote', 2, 'new', '50', 7, 7)")


def test_on_a_chain_whose_quote_is_its_coin_reconciliation_compares_the_one_balance():
    from engine.core.reconcile import differences

    pol = policy(approvals=True, quote_native=True)
    book = given(deposit("base", usd(1000)), deposit("base", 5 * FEE, "native"), reserve("base", "T1", usd(50)),
                 pol=pol)
    assert differences(book, {"base": {"quote": usd(1000) + 5 * FEE, "native": 0}}) == ()
    assert differences(book, {"base": {"quote": usd(1000), "native": 5 * FEE}}) != ()
