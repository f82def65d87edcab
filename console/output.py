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


def table(title: str, columns: list[str], rows: list[list[str]], justify_right: set[int] = frozenset()) -> None:
    from rich.console import Console
    from rich.table import Table

    grid = Table(title=title, title_justify="left", header_style="bold")
    for index, name in enumerate(columns):
        grid.add_column(name, justify="right" if index in justify_right else "left", no_wrap=True)
    for row in rows:
        grid.add_row(*row)
    Console().print(grid)
