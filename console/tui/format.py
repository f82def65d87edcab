"""Text for people: amounts, prices, ages and ids as the panels show them (pure, no textual)."""

from __future__ import annotations

from decimal import Decimal

from console.output import amount, money, price  # noqa: F401  (re-exported: one formatting vocabulary)


def compact_price(value: Decimal | None, significant: int = 5) -> str:
    """A price in at most ~10 characters, never in exponent form: 1.1126 / 0.30715 / 0.000021842."""
    if value is None:
        return "-"
    v = abs(value)
    if v >= 1000:
        return f"{value:,.0f}"
    if v >= 1:
        return f"{value:.4f}"
    if v == 0:
        return "0"
    places = significant - 1 - v.adjusted()
    return f"{value:.{max(1, min(places, 8))}f}"  # "0.00002184": ten characters at most


def signed(value: Decimal | None, places: int = 2) -> str:
    if value is None:
        return "-"
    text = f"{value:,.{places}f}"
    if text.lstrip("-").strip("0.,") == "":
        return f"{0:.{places}f}"  # no "-0.00"
    return text if text.startswith("-") else "+" + text


def age(ms: int | None) -> str:
    """Elapsed time, two significant units at most: 42s, 12m, 3h05, 2d04."""
    if ms is None:
        return "-"
    s = max(0, int(ms) // 1000)
    if s < 60:
        return f"{s}s"
    m = s // 60
    if m < 60:
        return f"{m}m"
    h = m // 60
    if h < 24:
        return f"{h}h{m % 60:02d}"
    return f"{h // 24}d{h % 24:02d}"


def short(text: str | None, head: int = 6, tail: int = 4) -> str:
    """0xa47643f41e...5a46c -> 0xa476…a46c (addresses, hashes, signatures)."""
    if not text:
        return "-"
    if len(text) <= head + tail + 1:
        return text
    return f"{text[:head]}…{text[-tail:]}"


def clock_time(ms: int | None) -> str:
    """HH:MM:SS (UTC) of an engine time in epoch ms."""
    if ms is None:
        return "--:--:--"
    s = (int(ms) // 1000) % 86_400
    return f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}"
