"""The panels: Positions, Reservations, Orders in flight, Nonces, and the event log.

Each panel is told what changed (`apply`) and updates only that: rows are added,
removed or touched by key; nothing is cleared and rebuilt per event.
"""

from __future__ import annotations

import time
from typing import Callable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import RichLog, Static

from console.tui.format import short
from console.tui.model import (
    POSITION_SORTS,
    NonceAccount,
    PositionsModel,
    nonce_accounts,
    order_cells,
    reservation_cells,
)
from console.tui.table import Column, LiveTable

POSITION_COLUMNS = (
    Column("id", "id", 5, right=True, priority=10),
    Column("chain", "chain", 6, priority=6),
    Column("token", "token", 8, priority=9, flex=True),
    Column("size", "size", 10, right=True, priority=3),
    Column("entry", "entry", 10, right=True, priority=4),
    Column("mark", "mark", 10, right=True, priority=7),
    Column("value", "value", 9, right=True, priority=8),
    Column("pnl", "pnl", 9, right=True, priority=10),
    Column("age", "age", 5, right=True, priority=5),
    Column("state", "state", 7, priority=9),
)

RESERVATION_COLUMNS = (
    Column("id", "id", 4, right=True, priority=10),
    Column("chain", "chain", 6, priority=5),
    Column("token", "token", 7, priority=9, flex=True),
    Column("amount", "amount", 8, right=True, priority=9),
    Column("state", "state", 15, priority=10),
    Column("age", "age", 5, right=True, priority=4),
    Column("order", "order", 14, priority=7),
)

ORDER_COLUMNS = (
    Column("id", "id", 4, right=True, priority=10),
    Column("intent", "intent", 6, priority=8),
    Column("chain", "chain", 6, priority=5),
    Column("token", "token", 7, priority=7, flex=True),
    Column("state", "state", 9, priority=10),
    Column("where", "nonce/expiry", 12, priority=9),
    Column("tx", "tx", 14, priority=3),
    Column("age", "age", 5, right=True, priority=6),
)

Clock = Callable[[], int]


class Panel(Vertical):
    """A titled area (the title sits in the top border, so it costs one line)."""

    def __init__(self, title: str, **kwargs):
        super().__init__(**kwargs)
        self.border_title = title
        self.title = title

    def set_title(self, text: str) -> None:
        if self.border_title != text:
            self.border_title = text


# --------------------------------------------------------------------------- positions


class PositionsPanel(Panel):
    RESORT_EVERY_S = 0.5  # a table sorted by pnl re-sorts at most this often (rows must not dance)

    def __init__(self, clock: Clock, **kwargs):
        super().__init__("Positions", **kwargs)
        self.clock = clock
        self.model: PositionsModel | None = None
        self.reverse = False
        self._sorted_at = 0.0
        self._sort_pending = False
        self.table = LiveTable(POSITION_COLUMNS, self._cells, empty="no open positions", id="positions-table")

    def compose(self) -> ComposeResult:
        yield self.table

    def _cells(self, pid):
        model = self.model
        if model is None:
            return ()
        return model.cells(pid, self.clock())

    @property
    def sort_column(self) -> str:
        return self.model.sort_column if self.model else "id"

    def load(self, model: PositionsModel) -> None:
        self.model = model
        ids = model.load()
        self.table.set_rows(self._sorted(ids))
        self._title()

    def _sorted(self, ids) -> list:
        model = self.model
        if model.sort_column == "id":
            ordered = sorted(ids)
        else:
            ordered = sorted(ids, key=model.sort_key)
        if self.reverse:
            ordered.reverse()
        self._sorted_at = time.monotonic()
        self._sort_pending = False
        return ordered

    def apply(self, touched: set[int]) -> None:
        """`touched`: positions whose row may have changed (the model is already updated)."""
        model, table = self.model, self.table
        if model is None:
            return
        live = model.book.positions.base
        present = table._positions()
        gone = [pid for pid in touched if pid in present and pid not in live]
        new = sorted(pid for pid in touched if pid not in present and pid in live)
        if gone:
            table.remove_rows(gone)
        if new:
            in_order = model.sort_column == "id" and not self.reverse and (not table.keys or new[0] > table.keys[-1])
            table.add(new)  # at the end; anywhere else the next sort puts them in place
            self._sort_pending = self._sort_pending or not in_order
        if model.sort_column not in ("id", "age", "token", "chain") and touched:
            self._sort_pending = True
        table.touch(touched)
        if self._sort_pending and time.monotonic() - self._sorted_at >= self.RESORT_EVERY_S:
            table.set_rows(self._sorted(table.keys))  # rows keep their cached strips: only the order moves
        if gone or new:
            self._title()

    def maybe_resort(self) -> None:
        if self._sort_pending and self.model is not None:
            self.table.set_rows(self._sorted(self.table.keys))

    def cycle_sort(self) -> str:
        model = self.model
        if model is None:
            return "id"
        i = POSITION_SORTS.index(model.sort_column)
        model.sort_column = POSITION_SORTS[(i + 1) % len(POSITION_SORTS)]
        self.reverse = model.sort_column in ("pnl", "value")  # biggest first
        self.resort()
        return model.sort_column

    def reverse_sort(self) -> None:
        self.reverse = not self.reverse
        self.resort()

    def resort(self) -> None:
        if self.model is None:
            return
        self.table.set_rows(self._sorted(self.table.keys))
        self._title()

    def _title(self) -> None:
        arrow = "▼" if self.reverse else "▲"
        for column in POSITION_COLUMNS:
            self.table.set_label(column.key, column.label + (arrow if column.key == self.sort_column else ""))
        self.set_title(f"Positions {len(self.table)}")


# --------------------------------------------------------------------------- reservations and orders


class ReservationsPanel(Panel):
    def __init__(self, clock: Clock, **kwargs):
        super().__init__("Reservations", **kwargs)
        self.clock = clock
        self.book = None
        self.table = LiveTable(RESERVATION_COLUMNS, self._cells, empty="none held", id="reservations-table")

    def compose(self) -> ComposeResult:
        yield self.table

    def _cells(self, rid):
        reservation = self.book.reservations.base.get(rid) if self.book else None
        if reservation is None:
            return (str(rid), "", "", "", "released", "", "")
        return reservation_cells(self.book, reservation, self.clock())

    def sync(self, book) -> None:
        self.book = book
        _sync_table(self.table, book.reservations.base)
        held = len(self.table)
        unknown = sum(1 for r in book.reservations.base.values()
                      if (o := book.orders.base.get(r.order_id)) is not None and o.state == "unknown")
        self.set_title(f"Reservations {held}" + (f" ({unknown} unknown outcome)" if unknown else ""))


class OrdersPanel(Panel):
    def __init__(self, clock: Clock, height: Callable[[], int | None], **kwargs):
        super().__init__("Orders in flight", **kwargs)
        self.clock = clock
        self.height = height
        self.book = None
        self.table = LiveTable(ORDER_COLUMNS, self._cells, empty="nothing in flight", id="orders-table")

    def compose(self) -> ComposeResult:
        yield self.table

    def _cells(self, oid):
        order = self.book.orders.base.get(oid) if self.book else None
        if order is None:
            return (str(oid), "", "", "", "done", "", "", "")
        return order_cells(self.book, order, self.clock(), self.height())

    def sync(self, book) -> None:
        self.book = book
        _sync_table(self.table, book.orders.base)
        self.set_title(f"Orders in flight {len(self.table)}")


def _sync_table(table: LiveTable, rows: dict) -> None:
    """Rows keyed like `rows` (small: things in flight): add the new, drop the gone, repaint the rest."""
    present = table._positions()
    gone = [k for k in present if k not in rows]
    new = sorted(k for k in rows if k not in present)
    if gone:
        table.remove_rows(gone)
    if new:
        table.add(new)
    table.touch_all()


# --------------------------------------------------------------------------- nonces


class NoncesPanel(Panel):
    MAX_LINES = 200

    def __init__(self, clock: Clock, **kwargs):
        super().__init__("Nonces", **kwargs)
        self.clock = clock
        self.body = Static("", id="nonces-body")
        self.accounts: list[NonceAccount] = []

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield self.body

    def sync(self, book, chain_nonces: dict, height: int | None) -> None:
        self.accounts = nonce_accounts(book, chain_nonces, height, self.clock())
        self.body.update(self.render_accounts(self.accounts))
        gaps = sum(1 for a in self.accounts if a.gap)
        self.set_title("Nonces" + (f" — {gaps} GAP" if gaps else ""))

    def render_accounts(self, accounts: list[NonceAccount]) -> Text:
        text = Text(no_wrap=True, overflow="ellipsis")
        lines = 0
        for account in accounts:
            if lines:
                text.append("\n")
            text.append(f"{account.chain} ", "bold")
            text.append(short(account.address, 6, 4), "dim")
            if account.kind == "evm":
                seen = "?" if account.chain_nonce is None else str(account.chain_nonce)
                text.append("  chain ")
                text.append(seen, "bold")
                text.append("  next ")
                text.append(str(account.next_nonce), "bold")
            if account.txs or account.kind != "evm":
                text.append(f"  in flight {len(account.txs)}")
            lines += 1
            if account.gap:
                first, last = account.gap
                missing = str(first) if first == last else f"{first}..{last}"
                text.append("\n")
                text.append(f" GAP: nonce {missing} has no transaction; later ones cannot land ",
                            "bold white on red")
                lines += 1
            for tx in account.txs:
                if lines >= self.MAX_LINES:
                    break
                text.append("\n  ")
                if account.kind == "evm":
                    text.append(f"n{tx.nonce} " if tx.nonce is not None else "n? ", "bold")
                text.append(f"{short(tx.tx_id, 8, 4)} {tx.intent} {tx.state}")
                if account.kind == "evm":
                    if tx.gas:
                        text.append(f" {tx.gas}", "dim")
                    if tx.attempts > 1:
                        text.append(f" ×{tx.attempts}", "bold yellow")
                    text.append(f" fee≤{tx.fee_cap}", "dim")
                elif tx.blocks_left is not None:
                    text.append(f" {tx.blocks_left} blocks left", "red" if tx.blocks_left <= 5 else "")
                text.append(f" {tx.age}", "dim")
                lines += 1
        return text


# --------------------------------------------------------------------------- event log


class EventLog(Panel):
    def __init__(self, **kwargs):
        super().__init__("Events", **kwargs)
        self.log_widget = RichLog(max_lines=1000, wrap=False, markup=False, auto_scroll=True, id="event-log")

    def compose(self) -> ComposeResult:
        yield self.log_widget

    def add(self, lines: list[tuple[str, str]]) -> None:
        for text, style in lines:
            self.log_widget.write(Text(text, style=style or "", no_wrap=True, overflow="ellipsis"))

    @property
    def lines(self) -> list[str]:
        return [strip.text for strip in self.log_widget.lines]
