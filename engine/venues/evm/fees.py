"""EIP-1559 fees for our transactions: the first offer, the replacement that a node's pool
will take, the cancellation, and the gas we reserve for them. Pure integer rules in wei
(a float here would turn a cap into an approximation); the executor feeds them the
chain's numbers and the profile's caps.

Why the replacement rule is transcribed from geth and not learnt from anvil: anvil 1.7.1
replaces on any higher maxFeePerGas and ignores the tip, so a bump that only raises the
fee cap passes every test on anvil and is refused ("replacement transaction underpriced")
by every geth-derived pool in production, leaving the nonce stuck behind a transaction we
believe we replaced. `geth_accepts_replacement` is the rule `bump` is proven against.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

GWEI = 10**9
PRICE_BUMP_PERCENT = 10  # geth's legacypool default (txpool.pricebump); besu and nethermind ask the same
CANCEL_GAS = 21_000  # a zero-value transfer to ourselves: intrinsic gas, nothing more


class FeeRefused(Exception):
    """No fee within the cap can be offered now; `reason` says why in the operator's units."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Fees:
    """maxFeePerGas and maxPriorityFeePerGas of one signed transaction, in wei per gas."""

    max_fee: int
    tip: int

    def __post_init__(self) -> None:
        _wei(self.max_fee, "max_fee")
        _wei(self.tip, "tip")
        if self.tip > self.max_fee:  # every node refuses it at admission: never sign one
            raise ValueError(f"tip {self.tip} wei is above max_fee {self.max_fee} wei")


def gwei(n: int | Decimal) -> int:
    """n gwei in wei, exactly (a fractional wei is refused, never rounded)."""
    if isinstance(n, bool) or not isinstance(n, int | Decimal):
        raise TypeError(f"gwei() takes an int or a Decimal, not {type(n).__name__}")
    wei = Decimal(n) * GWEI
    if wei != wei.to_integral_value():
        raise ValueError(f"{n} gwei is not a whole number of wei")
    return int(wei)


def format_gwei(wei: int) -> str:
    """61200000000 -> '61.2': exact (Decimal), no exponent, no trailing zeros."""
    return format((Decimal(_wei(wei, "wei")) / GWEI).normalize(), "f")


def initial(next_base_fee: int, suggested_tip: int, cap: int) -> Fees:
    """The first offer for a new transaction: includable in the next block, never above the cap.

    max_fee = min(cap, 2 x next base fee + tip): the usual headroom (the base fee can rise
    12.5% a block, so 2x survives about six full blocks in a row) without ever passing the
    cap. The tip is the node's suggestion cut to cap - next base fee: a tip above what the
    fee cap leaves over the base fee could never be paid, and keeping tip + base fee within
    the cap is what makes max_fee >= base fee + tip >= tip hold. Raises FeeRefused when the
    next block's base fee alone is above the cap (the trade waits or the operator raises it).
    """
    for value, name in ((next_base_fee, "next_base_fee"), (suggested_tip, "suggested_tip"), (cap, "cap")):
        _wei(value, name)
    if next_base_fee > cap:
        raise FeeRefused(f"next block's base fee {format_gwei(next_base_fee)} gwei is above "
                         f"the cap {format_gwei(cap)} gwei")
    tip = min(suggested_tip, cap - next_base_fee)
    return Fees(max_fee=min(cap, 2 * next_base_fee + tip), tip=tip)


def bumped(wei: int) -> int:
    """What replaces `wei` in a replacement: +10% rounded up (geth floors its threshold, so
    this never falls short of it) and at least +1 wei (10% of a few wei rounds to nothing)."""
    _wei(wei, "wei")
    return max(wei + 1, -(-wei * (100 + PRICE_BUMP_PERCENT) // 100))


def bump(old: Fees, cap: int, at_least: Fees | None = None) -> Fees | None:
    """The fees of a replacement for `old` at the same nonce, or None when no replacement
    fits within the cap (the nonce then stays with `old` until it lands or is cancelled).

    Both fields rise to `bumped` (geth refuses a replacement whose tip did not rise);
    `bumped` is non-decreasing, so tip <= max_fee survives. `at_least` (e.g. `initial` at
    today's base fee) lifts the result towards fresh market fees when the chain moved more
    than 10%, but only as far as the cap: the bump itself is what must fit.
    """
    _wei(cap, "cap")
    least = Fees(max_fee=bumped(old.max_fee), tip=bumped(old.tip))
    if least.max_fee > cap:
        return None
    if at_least is None:
        return least
    max_fee = min(cap, max(least.max_fee, at_least.max_fee))
    return Fees(max_fee=max_fee, tip=min(max_fee, max(least.tip, at_least.tip)))


def cancel_fees(old: Fees, cancel_cap: int, at_least: Fees | None = None) -> Fees | None:
    """Fees for the zero-value transfer to ourselves that takes `old`'s nonce: a valid
    replacement of `old`, bounded by the cancellation's own cap (DESIGN 8: a stuck nonce can
    always be cleared knowingly, even when trades' cap forbids bumping). None: the cap is
    too low to replace `old` at all."""
    return bump(old, cancel_cap, at_least)


def geth_accepts_replacement(old: Fees, new: Fees, price_bump: int = PRICE_BUMP_PERCENT) -> bool:
    """Whether geth's pool takes `new` in place of `old` (same sender, same nonce).

    Transcribed from go-ethereum core/txpool/legacypool/list.go, `func (l *list) Add`
    (checked at commit 03de691fee0c7b75876c38fc4aa0587b88386d57):
        if old.GasFeeCapCmp(tx) >= 0 || old.GasTipCapCmp(tx) >= 0 { return false, nil }
        thresholdFeeCap = oldFC  * (100 + priceBump) / 100   (big.Int: floor division)
        thresholdTip    = oldTip * (100 + priceBump) / 100
        if tx.GasFeeCapIntCmp(thresholdFeeCap) < 0 || tx.GasTipCapIntCmp(thresholdTip) < 0 { return false, nil }
    Both fields strictly higher, and each at least the floored threshold.
    """
    if old.max_fee >= new.max_fee or old.tip >= new.tip:
        return False
    threshold_fee_cap = old.max_fee * (100 + price_bump) // 100
    threshold_tip = old.tip * (100 + price_bump) // 100
    return new.max_fee >= threshold_fee_cap and new.tip >= threshold_tip


def gas_limit_for(estimate: int) -> int:
    """The gas limit to sign for an eth_estimateGas result: estimate x 1.5, rounded up.

    A Uniswap V2 pair writes its price accumulators only when the block timestamp moved
    since its last trade, so an estimate taken within the same second as the previous block
    leaves those writes out: swaps used 102,984 or 147,600 gas for the same call, and with
    the bare estimate as limit 1 in 7 first swaps ran out of gas on anvil; with x 1.5, 0 of
    15 (notes/evm.md). The unused gas is not charged: the receipt's gasUsed is what is posted.
    """
    if _wei(estimate, "estimate") <= 0:
        raise ValueError("a gas estimate is positive")
    return -(-estimate * 3 // 2)


def gas_reserve(gas_limit: int, max_fee: int) -> int:
    """The native coin an entry holds for gas (DESIGN 8: gas is money): the most the
    transaction can be charged, gasLimit x maxFeePerGas."""
    return _wei(gas_limit, "gas_limit") * _wei(max_fee, "max_fee")


def _wei(value: int, name: str) -> int:
    """Refuses what is not a non-negative int: a float or Decimal reaching a fee is a bug upstream."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (wei), not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative: {value}")
    return value
