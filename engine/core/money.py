"""Money arithmetic the rest of the engine leans on.

Amounts are integers in base units (USDC micro-units, wei, lamports, SPL base
units); prices are Decimal quote-per-whole-token. Floats never appear: every
conversion here rounds in the direction that keeps the bot solvent (down for
what we may spend or receive, up for what we owe).
"""

from __future__ import annotations

import operator
import re
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation

BPS = 10_000
MAX_WHOLE_DIGITS = 40  # 10**40 whole units: beyond every ceiling, far below a costly integer


def to_units(amount: Decimal | str | int, decimals: int) -> int:
    """Decimal amount in whole units -> base units, rounded down (toward minus infinity).

    Integer arithmetic on the amount's digits: multiplying by 10**decimals in Decimal would
    round to the context's 28 digits first."""
    value = Decimal(amount)
    if not value.is_finite():
        raise ValueError(f"not an amount: {value}")
    if value and value.adjusted() >= 2 * MAX_WHOLE_DIGITS:
        raise ValueError(f"larger than any amount: {value:.3e}")
    sign, digits, exponent = value.as_tuple()
    whole = int("".join(map(str, digits)) or "0")
    shift = exponent + decimals
    if shift >= 0:
        units, rest = whole * 10**shift, 0
    else:
        units, rest = divmod(whole, 10**-shift)
    return -(units + (1 if rest else 0)) if sign else units


def from_units(units: int, decimals: int) -> Decimal:
    """Base units -> whole units, exactly: the integer's own digits under a new exponent.

    `scaleb`, division and even unary minus round to the context's 28 digits, which a
    large wei balance exceeds; building the Decimal from digits involves no context at all."""
    sign, digits, _exponent = Decimal(operator.index(units)).as_tuple()  # an int, never a float or str
    return Decimal((sign, digits, -decimals))


# What an operator writes for an amount: ASCII digits, at most one point, an optional exponent.
# Decimal() alone also takes "25_000", full-width and Arabic-Indic digits, "Infinity" and spaces
# inside: text that reads as one amount to one person and another to the next is no amount.
PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_amount(text: str, decimals: int) -> int:
    """Operator text like "25.00" -> base units; ValueError on anything else.

    Only plain ASCII decimal notation (PLAIN_DECIMAL) is an amount. Exact integer arithmetic, no
    Decimal context: a context's precision would round a long amount (or raise on "1e30"), and
    what the operator typed is what gets checked against the rules. More than MAX_WHOLE_DIGITS
    whole digits is no amount anyone holds; refusing it here keeps "1e999999999" from becoming a
    billion-digit integer, while anything smaller reaches the rules and is refused there by size.
    """
    written = str(text).strip(" \t\r\n")
    if not PLAIN_DECIMAL.fullmatch(written):
        raise ValueError(f"not a decimal amount: {_shown(text)}")
    try:
        value = Decimal(written)
    except InvalidOperation:  # an exponent beyond what Decimal holds
        raise ValueError(f"not a decimal amount: {_shown(text)}") from None
    if value < 0:
        raise ValueError(f"not a positive amount: {_shown(text)}")
    if not value:
        return 0
    if value.adjusted() >= MAX_WHOLE_DIGITS:
        raise ValueError(f"larger than any amount (more than {MAX_WHOLE_DIGITS} digits): {_shown(text)}")
    _sign, digits, exponent = value.as_tuple()
    written = "".join(map(str, digits))
    significant = written.rstrip("0")
    exponent += len(written) - len(significant)
    if exponent + decimals < 0:
        raise ValueError(f"more than {decimals} decimals: {_shown(text)}")
    return int(significant) * 10 ** (exponent + decimals)


def _shown(text: object, limit: int = 40) -> str:
    shown = repr(str(text))
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def bps_of(amount: int, bps: int) -> int:
    """A fee we owe on `amount`: rounded up."""
    return -((-amount * bps) // BPS)


def min_out(quoted_out: int, slippage_bps: int) -> int:
    """The least we accept for a swap quoted at `quoted_out` (rounded down)."""
    return quoted_out * (BPS - slippage_bps) // BPS


def tokens_for(quote_units: int, price: Decimal, quote_decimals: int, token_decimals: int) -> int:
    """How many token base units `quote_units` buys at `price`, rounded down."""
    whole = Decimal(quote_units).scaleb(-quote_decimals) / price
    return int(whole.scaleb(token_decimals).to_integral_value(rounding=ROUND_FLOOR))


def quote_for(token_units: int, price: Decimal, quote_decimals: int, token_decimals: int) -> int:
    """Quote base units that `token_units` are worth at `price`, rounded down."""
    whole = Decimal(token_units).scaleb(-token_decimals) * price
    return int(whole.scaleb(quote_decimals).to_integral_value(rounding=ROUND_FLOOR))


def price_of(quote_units: int, token_units: int, quote_decimals: int, token_decimals: int) -> Decimal:
    """The price paid per whole token (Decimal, 18 significant digits)."""
    if token_units == 0:
        return Decimal(0)
    q = Decimal(quote_units).scaleb(-quote_decimals)
    t = Decimal(token_units).scaleb(-token_decimals)
    return +(q / t)


def ceil_div(a: int, b: int) -> int:
    return -((-a) // b)


__all__ = [
    "BPS",
    "MAX_WHOLE_DIGITS",
    "ROUND_CEILING",
    "bps_of",
    "ceil_div",
    "from_units",
    "min_out",
    "parse_amount",
    "price_of",
    "quote_for",
    "to_units",
    "tokens_for",
]
