"""`botctl audit`: recompute everything from the journal and check the invariants.

Three independent views must agree: the journal (replayed through `evolve`),
the postings (summed), and the read-model tables. Then the invariants of
DESIGN section 1 are checked on the tables. Each violation is one line an
operator can act on.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

from engine.book import LIVE_ORDER_STATES, Book, Policy
from engine.decider import evolve
from engine.persist import PERSISTED, decode_event, table_images

Query = Callable[[str], Iterable[tuple]]


def replay(journal: Iterable[tuple[str, str]], policy: Policy) -> dict[str, dict]:
    """Table images as the journal says they must be (closed rows included)."""
    book = Book(policy).overlay()
    for kind, data in journal:
        evolve(book, decode_event(kind, data))
    images = {}
    for name in PERSISTED:
        table = getattr(book, name)
        images[name] = {k: v for k, v in table.local.items() if v is not None}
    return images


def sum_postings(rows: Iterable[tuple]) -> dict[tuple, int]:
    balances: dict[tuple, int] = defaultdict(int)
    for chain, asset, dr, cr, amount in rows:
        value = int(amount)
        balances[(chain, asset, dr)] += value
        balances[(chain, asset, cr)] -= value
    return {k: v for k, v in balances.items()}


def _nonzero(balances: dict) -> dict:
    return {k: v for k, v in balances.items() if v != 0}


def check_invariants(images: dict[str, dict], posted: dict[tuple, int] | None = None) -> list[str]:
    """Pure checks over table images; `posted` is the postings' sum when known."""
    problems: list[str] = []
    balances = images["balances"]
    positions = images["positions"]
    reservations = images["reservations"]
    orders = images["orders"]

    if posted is not None and _nonzero(posted) != _nonzero(balances):
        for key in sorted(set(posted) | set(balances)):
            if posted.get(key, 0) != balances.get(key, 0):
                chain, asset, account = key
                problems.append(f"{chain} {asset} {account}: balance {balances.get(key, 0)} "
                                f"but postings sum to {posted.get(key, 0)} (changed without a posting)")

    per: dict[tuple, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (chain, asset, account), amount in balances.items():
        per[(chain, asset)][account] += amount
    held = defaultdict(int)
    for r in reservations.values():
        if r.state == "held":
            held[(r.chain, "quote")] += r.amount
            held[(r.chain, "native")] += r.fee_amount
    open_cost = defaultdict(int)
    for p in positions.values():
        if p.state != "closed":
            open_cost[(p.chain, "quote")] += p.cost
    for key in sorted(set(per) | set(held) | set(open_cost)):
        chain, asset = key
        acct = per.get(key, {})
        if acct.get("cash", 0) < 0:
            problems.append(f"{chain} {asset} cash is negative: {acct['cash']}")
        if acct.get("reserved", 0) != held.get(key, 0):
            problems.append(f"{chain} {asset} reserved is {acct.get('reserved', 0)} "
                            f"but held reservations sum to {held.get(key, 0)}")
        if acct.get("positions", 0) != open_cost.get(key, 0):
            problems.append(f"{chain} {asset} positions account is {acct.get('positions', 0)} "
                            f"but open positions cost {open_cost.get(key, 0)}")
        deposits, pnl, fees = -acct.get("deposits", 0), -acct.get("pnl", 0), acct.get("fees", 0)
        assets = acct.get("cash", 0) + acct.get("reserved", 0) + acct.get("positions", 0)
        if deposits + pnl - fees != assets:
            problems.append(f"{chain} {asset}: deposits + pnl - fees = {deposits + pnl - fees} "
                            f"but cash + reserved + positions = {assets}")

    taken: dict[tuple, list[str]] = defaultdict(list)
    for p in positions.values():
        if p.state != "closed":
            taken[(p.chain, p.token)].append(f"position {p.id}")
    for r in reservations.values():
        if r.state == "held" and r.kind == "entry":
            taken[(r.chain, r.token)].append(f"reservation {r.id}")
    for (chain, token), holders in sorted(taken.items()):
        if len(holders) > 1:
            problems.append(f"{chain}/{token} is held twice: {', '.join(holders)}")

    for o in orders.values():
        r = reservations.get(o.reservation_id)
        if o.state in LIVE_ORDER_STATES:
            if r is None or r.state != "held":
                problems.append(f"order {o.id} is {o.state} but its reservation {o.reservation_id} is not held")
        elif r is not None and r.state == "held":
            problems.append(f"reservation {r.id} is held but its order {o.id} is {o.state}")
        if o.intent == "exit" and o.state in LIVE_ORDER_STATES:
            p = positions.get(o.position_id)
            if p is None or p.state != "closing":
                problems.append(f"exit order {o.id} is in flight but position {o.position_id} is not closing")
    for r in reservations.values():
        if r.state == "held" and r.order_id not in orders:
            problems.append(f"reservation {r.id} is held by no order")

    used: dict[tuple, list[int]] = defaultdict(list)
    for o in orders.values():  # in flight or landed: at most one per nonce
        if o.nonce is not None and o.tx_id is not None and (o.state in LIVE_ORDER_STATES or o.state == "filled"):
            used[(o.chain, o.address, o.nonce)].append(o.id)
    for (chain, address, nonce), ids in sorted(used.items()):
        if len(ids) > 1:
            problems.append(f"{chain} nonce {nonce} of {address} is used by orders {', '.join(map(str, ids))}")
    return problems


def compare_images(journal_view: dict[str, dict], tables: dict[str, dict]) -> list[str]:
    problems = []
    for name in PERSISTED:
        expected, actual = journal_view.get(name, {}), tables.get(name, {})
        if name == "meta":
            actual = {k: v for k, v in actual.items() if k in expected}
        if name == "balances":
            expected, actual = _nonzero(expected), _nonzero(actual)
        if expected == actual:
            continue
        keys = sorted(set(expected) | set(actual), key=repr)
        diffs = [k for k in keys if expected.get(k) != actual.get(k)]
        shown = ", ".join(repr(k) for k in diffs[:5]) + (" ..." if len(diffs) > 5 else "")
        problems.append(f"table {name} differs from a replay of the journal at {len(diffs)} row(s): {shown}")
    return problems


def audit(query: Query, policy: Policy) -> list[str]:
    """All violations found in the database behind `query` (empty list: clean)."""
    tables = table_images(query)
    posted = sum_postings(query("SELECT chain, asset, dr, cr, amount FROM postings"))
    journal_view = replay(query("SELECT kind, data FROM journal ORDER BY seq"), policy)
    problems = compare_images(journal_view, tables)
    problems += check_invariants(tables, posted)
    return problems


def audit_book(book: Book, images: dict[str, dict]) -> list[str]:
    """The in-memory book equals the database's live rows."""
    loaded = Book(book.policy)
    from engine.persist import book_from_images

    loaded = book_from_images(images, book.policy)
    if loaded.snapshot() != book.snapshot():
        return ["the in-memory book differs from the database"]
    return []


def audit_file(db, policy: Policy) -> tuple[list[str], int]:
    """The audit of a database file on a read-only connection, in one read transaction:
    (violations, journal events replayed)."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("BEGIN")
        problems = audit(lambda sql: conn.execute(sql).fetchall(), policy)
        events = conn.execute("SELECT count(*) FROM journal").fetchone()[0]
        conn.execute("COMMIT")
    finally:
        conn.close()
    return problems, events
