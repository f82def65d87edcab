"""Turning engine values into text: JSON for scripts, tables for people."""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from typing import Any


def plain(value: Decimal) -> str:
    """A Decimal as a decimal string, never in exponent form."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".") or "0"
    return text


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(value), indent=2) + "\n")


def money(value: Decimal | None, places: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:,.{places}f}"


def price(value: Decimal | None) -> str:
    if value is None:
        return "-"
    return f"{value:.6g}" if abs(value) < 1 else f"{value:,.4f}"


def amount(value: Decimal | None) -> str:
    """A token amount, compact: 114,461 / 22.4705 / 0.000123."""
    if value is None:
        return "-"
    v = abs(value)
    if v >= 10_000_000:
        return f"{value / 1_000_000:,.1f}M"
    if v >= 1_000:
        return f"{value:,.0f}"
    if v >= 1:
        return f"{value:.4f}"
    return f"{value:.4g}"


def when(iso: str | None) -> str:
    """An ISO timestamp shortened for a table: date and time to the second (JSON keeps it whole)."""
    if not iso:
        return "-"
    return iso.replace("T", " ")[:19]


def table(title: str, columns: list[str], rows: list[list[str]], justify_right: set[int] = frozenset()) -> None:
    """A table that never truncates a value: piped output is as wide as its content, and a
    terminal too narrow for it wraps text cells rather than cutting numbers."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=title, title_justify="left", header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False)
    for index, name in enumerate(columns):
        right = index in justify_right
        grid.add_column(name, justify="right" if right else "left", no_wrap=right, overflow="fold")
    for row in rows:
        grid.add_row(*row)
    console = Console() if sys.stdout.isatty() else Console(width=100_000, soft_wrap=True)
    console.print(grid)
