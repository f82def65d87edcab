"""`botctl audit`: recompute everything from the journal and check the invariants.

Three independent views must agree: the journal (replayed through `evolve`),
the postings, and the read-model tables. Every value the engine keeps is
either replayed and compared (every persisted table, every meta key, missing
meta rows read as the defaults the engine would load) or checked against the
journal (meta.seq is the last journal seq, seqs have no gaps, each row's `at`
is its event's). Then the invariants of DESIGN section 1 are checked on the
tables. Each violation is one line an operator can act on.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from enum import Enum
from typing import Callable, Iterable, NamedTuple

from engine.core.book import LIVE_ORDER_STATES, META_DEFAULTS, Book, Policy
from engine.core.decider import evolve
from engine.persist import PERSISTED, decode_event, table_images
from storage.schema import SCHEMA_VERSION

Query = Callable[[str], Iterable[tuple]]


class Replay(NamedTuple):
    """The journal replayed: table images as it says they must be (closed rows included), the
    postings its events carry, what in it is wrong, and whether that stopped the replay."""

    images: dict[str, dict]
    postings: Counter
    problems: list[str]
    stopped: bool


def replay_journal(rows: Iterable[tuple[int, int, str, str]], policy: Policy) -> Replay:
    """Replay (seq, at, kind, data) rows in seq order. An event that cannot be read or applied
    stops the replay there: every comparison after it would only repeat that finding."""
    book = Book(policy).overlay()
    postings: Counter = Counter()
    problems: list[str] = []
    last, stopped = 0, False
    for seq, at, kind, data in rows:
        if seq != last + 1:
            problems.append(f"journal seq jumps from {last} to {seq}: events are missing")
        last = seq
        try:
            event = decode_event(kind, data)
        except Exception as exc:  # a row the engine did not write: say which, never crash
            problems.append(f"journal event {seq} ({kind}) cannot be read: {type(exc).__name__}: {exc}")
            stopped = True
            break
        if getattr(event, "at", at) != at:
            problems.append(f"journal event {seq} ({kind}) is dated {at} in its row but {event.at} in its data")
        try:
            evolve(book, event)
        except Exception as exc:
            problems.append(f"journal event {seq} ({kind}) cannot be replayed: {type(exc).__name__}: {exc}")
            stopped = True
            break
        for p in getattr(event, "postings", ()):
            postings[(seq, p.chain, p.asset, p.dr, p.cr, p.amount)] += 1
    images = {name: {k: v for k, v in getattr(book, name).local.items() if v is not None} for name in PERSISTED}
    # meta as the engine would load it: defaults, what events set, and the sequencer's seq (the last event's)
    images["meta"] = {**META_DEFAULTS, **images["meta"], "seq": last}
    return Replay(images, postings, problems, stopped)


UNREADABLE = (ValueError, ArithmeticError, TypeError)  # int(), Decimal() and enum lookups of bad text


def _one_table(query: Query, name: str, rows: list | None = None) -> Query:
    """`query` with every table but `name` read as empty (and `name` as `rows`, if given): how
    `read_tables` finds the rows holding a value botctl cannot read."""

    def only(sql: str):
        if re.search(rf"\bFROM {name}\b", sql):
            return query(sql) if rows is None else rows
        return []

    return only


def _readable(query: Query) -> bool:
    try:
        table_images(query)
    except UNREADABLE:
        return False
    return True


def _unreadable_rows(query: Query, name: str) -> list[tuple]:
    """The rows of table `name` that botctl cannot read, fetched with the very SQL the loader uses."""
    asked: list[str] = []
    table_images(_one_table(lambda sql: asked.append(sql) or [], name))
    return [row for sql in asked for row in query(sql) if not _readable(_one_table(query, name, [row]))]


def read_tables(query: Query) -> tuple[dict[str, dict], list[str]]:
    """The tables as the engine would load them, and the rows in them it could not read
    (a table holding one is left out of the images: nothing else is checked on it)."""
    try:
        return table_images(query), []
    except UNREADABLE:
        pass
    images, problems = {}, []
    for name in PERSISTED:
        if _readable(_one_table(query, name)):
            images[name] = table_images(_one_table(query, name))[name]
            continue
        rows = _unreadable_rows(query, name)
        problems += [f"table {name} row {row!r} holds a value botctl cannot read" for row in rows[:5]]
        if len(rows) > 5:
            problems.append(f"table {name}: {len(rows) - 5} more row(s) hold values botctl cannot read")
        elif not rows:
            problems.append(f"table {name} holds a value botctl cannot read")
    return images, problems


def read_postings(query: Query) -> tuple[Counter, list[str]]:
    """The postings table as (seq, chain, asset, dr, cr, amount) -> how many such rows."""
    rows: Counter = Counter()
    problems = []
    for seq, chain, asset, dr, cr, amount in query("SELECT seq, chain, asset, dr, cr, amount FROM postings"):
        try:
            rows[(seq, chain, asset, dr, cr, int(amount))] += 1
        except UNREADABLE:
            problems.append(f"posting of event {seq} ({chain} {asset} {dr}/{cr}) holds amount {amount!r}, "
                            "which is not an integer")
    return rows, problems


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


def _shown(value) -> str:
    if value is None:
        return "missing"
    if isinstance(value, Enum):
        return value.value
    return repr(value) if isinstance(value, (tuple, str)) else str(value)


def compare_meta(expected: dict, actual: dict) -> list[str]:
    """Every meta key as the engine would load it: a missing row reads as its default."""
    actual = {**META_DEFAULTS, **actual}
    problems = []
    for key in sorted(set(expected) | set(actual)):
        want, have = expected.get(key), actual.get(key)
        if want == have:
            continue
        if key == "seq":
            problems.append(f"meta seq is {have} but the journal's last event is {want}: "
                            + ("the next commit would reuse a journal seq" if have < want else "seqs would skip"))
        elif want is None:
            problems.append(f"meta {key} is {_shown(have)}, a key no journal event sets")
        else:
            problems.append(f"meta {key} is {_shown(have)} but the journal says {_shown(want)}")
    return problems


def _rows(diffs: list, expected, actual) -> str:
    def what(key) -> str:
        return "missing" if key not in actual else "not in the journal" if key not in expected else "changed"

    return ", ".join(f"{key!r} ({what(key)})" for key in diffs[:5]) + (" ..." if len(diffs) > 5 else "")


def compare_images(journal_view: dict[str, dict], tables: dict[str, dict]) -> list[str]:
    """Each table the engine writes against the journal's replay (a table missing from `tables`
    could not be read, and is reported as such)."""
    problems = []
    for name in PERSISTED:
        if name not in tables:
            continue
        expected, actual = journal_view.get(name, {}), tables[name]
        if name == "meta":
            problems += compare_meta(expected, actual)
            continue
        if name == "balances":
            expected, actual = _nonzero(expected), _nonzero(actual)
        if expected == actual:
            continue
        diffs = [k for k in sorted(set(expected) | set(actual), key=repr) if expected.get(k) != actual.get(k)]
        problems.append(f"table {name} differs from a replay of the journal at {len(diffs)} row(s): "
                        + _rows(diffs, expected, actual))
    return problems


def compare_postings(journal: Counter, table: Counter) -> list[str]:
    """The postings table holds exactly the journal's postings: a pair that cancels out, which
    no balance shows, still counts."""
    if journal == table:
        return []
    diffs = sorted(set((journal - table) + (table - journal)))
    shown = ", ".join(f"event {seq} {chain} {asset} {dr}/{cr} {amount} "
                      f"({'missing' if journal[k] > table[k] else 'not in the journal'})"
                      for k in diffs[:5] for seq, chain, asset, dr, cr, amount in [k])
    return [f"table postings differs from the journal's postings at {len(diffs)} row(s): {shown}"
            + (" ..." if len(diffs) > 5 else "")]


def audit(query: Query, policy: Policy) -> list[str]:
    """All violations found in the database behind `query` (empty list: clean)."""
    tables, problems = read_tables(query)
    posted, unreadable = read_postings(query)
    problems += unreadable
    journal = replay_journal(query("SELECT seq, at, kind, data FROM journal ORDER BY seq"), policy)
    problems += journal.problems
    if not journal.stopped:
        problems += compare_images(journal.images, tables)
        if not unreadable:
            problems += compare_postings(journal.postings, posted)
    if len(tables) == len(PERSISTED):
        sums = None if unreadable else sum_postings(
            (chain, asset, dr, cr, amount * n) for (_seq, chain, asset, dr, cr, amount), n in posted.items())
        problems += check_invariants(tables, sums)
    return problems


def audit_book(book: Book, images: dict[str, dict]) -> list[str]:
    """The in-memory book equals the database's live rows."""
    from engine.persist import book_from_images

    loaded = book_from_images(images, book.policy)
    if loaded.snapshot() != book.snapshot():
        return ["the in-memory book differs from the database"]
    return []


def schema_problem(version: int) -> str | None:
    """What is wrong with a book at schema `version`, said as the read commands say it, with the fix."""
    if version == SCHEMA_VERSION:
        return None
    fix = "start the engine once to migrate" if version < SCHEMA_VERSION else "upgrade botctl"
    return f"database schema version {version}, this botctl reads {SCHEMA_VERSION} ({fix})"


def audit_file(db, policy: Policy) -> tuple[list[str], int]:
    """The audit of a database file on a read-only connection, in one read transaction:
    (violations, journal events replayed). A schema this botctl does not know is refused
    (StorageError), as every read command refuses it: its tables cannot be read as ours."""
    from storage import open_reader

    conn = open_reader(db)  # checked first: a file, SQLite, this botctl's schema, not truncated
    try:
        conn.execute("BEGIN")
        problems = audit(lambda sql: conn.execute(sql).fetchall(), policy)
        events = conn.execute("SELECT count(*) FROM journal").fetchone()[0]
        conn.execute("COMMIT")
    finally:
        conn.close()
    return problems, events
