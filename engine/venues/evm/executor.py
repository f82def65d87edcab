"""The EVM executor: the executor protocol (engine/venues/port.py) over a Uniswap-V2-style router.

Every order arrives with its nonce and our address, allocated by the sequencer; this layer
never picks a nonce, never estimates gas and never re-signs: it quotes, signs what it is
given at the order's nonce, sends the stored bytes, and reads what the chain says.

Gas limits are fixed per kind, not estimated: the swap after an approve is signed while the
approve may still be pooled, and an estimate of it then fails (no allowance yet). The limit
is only a ceiling; the receipt's gasUsed is what is posted, and gasLimit x maxFeePerGas is
what is reserved (fee_reserve), so the reservation always covers the worst case.

Whatever the node answers is sorted by engine.venues.evm.errors: only an answer that proves
the bytes can never be mined is a rejection. Any failed read in `lookup` raises: the driver
then keeps the order unknown, so "expired" (the nonce taken by another transaction) is only
ever said when every read that led to it succeeded.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Callable

from engine.core.book import Order
from engine.core.money import price_of
from engine.venues.evm import abi, fees, swaps
from engine.venues.evm.market import EvmMarket, describe_error, scrub
from engine.venues.port import Accepted, ExecutorError, Outcome, Quote, Rejected, Signed, Unknown

# A V2 single-hop swap uses ~100-150k gas: 102,984 or 147,600 for the same call on anvil,
# depending on whether the pair writes its price accumulators in that block (notes/evm.md).
# 250k covers the heavier case with a wide margin (tokens with transfer hooks or fees cost
# more), and unused gas is not charged; too tight a limit would cost the whole gas of a
# swap that runs out of it.
SWAP_GAS = 250_000
# An ERC20 approve: ~46k writing a fresh allowance slot (~29k rewriting one); 70k leaves room
# for tokens whose approve does a little more (events, checks).
APPROVE_GAS = 70_000
NOOP_GAS = swaps.CANCEL_GAS  # a plain transfer to ourselves: 21,000 exactly
EXPIRE_AFTER_BLOCKS = 5  # blocks our nonce stays taken with no receipt of ours before it is another's
FEES_FRESH_S = 0.2  # a fee read serves every order signed within one engine step
HEAD_FRESH_S = 0.1  # a read of the chain's head serves the look-ups of one sweep (sweeps are 0.2 s apart)
LOOKUP_EVERY_S = 2.0  # a pending transaction is read again on each new block, and at least this often
DEADLINE_S = 600  # a swap's deadline: it bounds the price we accept, not the nonce


class SharedRead:
    """One read of the node shared by every caller within `fresh_s` of it (orders advanced together
    ask at once: one round trip, not one each). A read that failed is not kept: the next caller asks
    again. Shielded: a caller cancelled mid-read never cancels the read the others wait on."""

    def __init__(self, fresh_s: float):
        self.fresh_s = fresh_s
        self._read: tuple[float, object] | None = None  # (when, the future of the read)

    async def __call__(self, read):
        import asyncio

        now = time.monotonic()
        last = self._read
        failed = last is not None and last[1].done() and (last[1].cancelled() or last[1].exception() is not None)
        if last is None or failed or now - last[0] > self.fresh_s:
            self._read = (now, asyncio.ensure_future(read()))
        return await asyncio.shield(self._read[1])


class EvmExecutor:
    def __init__(self, market: EvmMarket, client, account, *, max_gas_price_wei: int, confirmations: int = 1,
                 deadline_s: int = DEADLINE_S, clock: Callable[[], float] = time.time):
        if account.address != market.address:
            raise ValueError(f"the account {account.address} is not the market's address {market.address}")
        self.chain = market.name
        self.market = market
        self.client = client
        self._account = account  # an unlocked eth_account LocalAccount: never shown (see __repr__)
        self.cap = max_gas_price_wei
        self.confirmations = confirmations
        self._gone_since: dict[int, int] = {}  # order id -> head when its nonce was first seen taken, no receipt
        self._fee_read = SharedRead(FEES_FRESH_S)
        self._head_read = SharedRead(HEAD_FRESH_S)
        self._pending_at: dict[tuple[int, str], tuple[int, float]] = {}  # (order, tx) -> (head, when) read pending
        self.deadline_s = deadline_s
        self.clock = clock
        # A cancellation clears a stuck nonce knowingly: it has a cap of its own, above the trades'.
        self.cancel_cap = 2 * max_gas_price_wei

    def __repr__(self) -> str:
        return f"EvmExecutor(chain={self.chain!r}, address={self.market.address})"

    __str__ = __repr__

    @property
    def address(self) -> str:
        return self.market.address

    async def fee_reserve(self) -> int:
        """The most one transaction can cost: the largest gas limit we sign at the gas price cap."""
        return fees.gas_reserve(SWAP_GAS, self.cap)

    # ------------------------------------------------------------------ quote

    def _path(self, order: Order) -> tuple[swaps.SwapKind, list[str], int]:
        """(Router02 function, path, the output's decimals) for an entry or an exit of `order`."""
        m = self.market
        token = m.token_address(order.token)
        if token is None:
            raise ExecutorError(f"{order.token} is not a token allow-listed on {self.chain}")
        if order.intent == "entry":
            kind = swaps.SwapKind.ETH_FOR_TOKENS if m.quote_native else swaps.SwapKind.TOKENS_FOR_TOKENS
            return kind, [m.quote_end(), token], m.tokens[order.token][1]
        if order.intent == "exit":
            kind = swaps.SwapKind.TOKENS_FOR_ETH if m.quote_native else swaps.SwapKind.TOKENS_FOR_TOKENS
            return kind, [token, m.quote_end()], m.quote_decimals
        raise ExecutorError(f"order {order.id} is an {order.intent}, not a swap")

    async def quote(self, order: Order) -> Quote:
        if order.intent in ("approve", "noop"):  # nothing to price: they move no funds
            return Quote(order.amount_in, 0, Decimal(0))
        _kind, path, _decimals = self._path(order)
        if order.amount_in <= 0:
            raise ExecutorError(f"order {order.id}: nothing to swap ({order.amount_in})")
        try:
            out = (await self.client.amounts_out(self.market.router, order.amount_in, path))[-1]
        except Exception as exc:
            raise ExecutorError(f"no quote for {order.token} on {self.chain}: {describe_error(exc)}") from None
        if out <= 0:
            raise ExecutorError(f"the quote for order {order.id} ({order.token} on {self.chain}) is zero")
        m = self.market
        decimals = m.tokens[order.token][1]
        if order.intent == "entry":
            price = price_of(order.amount_in, out, m.quote_decimals, decimals)
        else:
            price = price_of(out, order.amount_in, m.quote_decimals, decimals)
        return Quote(order.amount_in, out, price)

    # ------------------------------------------------------------------ sign

    def _check(self, order: Order) -> int:
        if order.nonce is None:
            raise ExecutorError(f"order {order.id} has no nonce: an EVM transaction needs the sequencer's")
        if (order.address or "").lower() != self.market.address.lower():
            raise ExecutorError(f"order {order.id} is for {order.address}, not our address {self.market.address}")
        return order.nonce

    async def _fees(self) -> fees.Fees:
        """The fees to sign at now. Orders advanced together share one read (the driver signs up to
        `concurrency` at once: one read, not one per order), fresh for FEES_FRESH_S, a step of the
        engine: a base fee that moves later is met by the headroom `initial` leaves."""
        return await self._fee_read(self._read_fees)

    async def _read_fees(self) -> fees.Fees:
        import asyncio

        try:
            base_fee, tip = await asyncio.gather(self.client.next_base_fee(), self.client.suggested_tip())
        except Exception as exc:
            raise ExecutorError(f"cannot read the fees on {self.chain}: {describe_error(exc)}") from None
        try:
            return fees.initial(base_fee, tip, self.cap)
        except fees.FeeRefused as exc:
            raise ExecutorError(f"{self.chain}: {exc.reason}") from None

    def _signed(self, tx: dict, min_out: int) -> Signed:
        import json

        tx_hash, raw = swaps.sign(self._account, tx)
        return Signed(tx_hash, raw, None, min_out,
                      json.dumps({"max_fee": tx["maxFeePerGas"], "tip": tx["maxPriorityFeePerGas"]}, sort_keys=True))

    async def sign(self, order: Order, quote: Quote, slippage_bps: int) -> Signed:
        if order.intent == "approve":
            return await self.sign_approve(order)
        if order.intent == "noop":
            return await self.sign_noop(order)
        nonce = self._check(order)
        kind, path, _decimals = self._path(order)
        if quote.amount_in != order.amount_in:
            raise ExecutorError(f"order {order.id}: the quote is for {quote.amount_in}, the order for {order.amount_in}")
        floor = swaps.min_out(quote.quoted_out, slippage_bps)
        if floor <= 0:
            raise ExecutorError(f"order {order.id}: the least output accepted rounds to zero "
                                f"(quote {quote.quoted_out}, slippage {slippage_bps} bps)")
        offer = await self._fees()
        deadline = int(self.clock()) + self.deadline_s
        try:
            tx = swaps.swap_tx(self.market.router, kind, order.amount_in, floor, path, self.market.address, deadline,
                               chain_id=self.market.chain_id, nonce=nonce, gas=SWAP_GAS, max_fee=offer.max_fee,
                               tip=offer.tip)
        except ValueError as exc:
            raise ExecutorError(f"order {order.id}: {exc}") from None
        return self._signed(tx, floor)

    async def sign_noop(self, order: Order) -> Signed:
        nonce = self._check(order)
        offer = await self._fees()
        tx = swaps.cancel_tx(self.market.address, nonce, chain_id=self.market.chain_id, max_fee=offer.max_fee,
                             tip=offer.tip, gas=NOOP_GAS)
        return self._signed(tx, 0)

    async def sign_approve(self, order: Order) -> Signed:
        """approve(router, order.amount_in) of the asset `order.token` ("quote" or a token): exactly what
        the swap at the next nonce spends, so no allowance is left over for anyone to use."""
        nonce = self._check(order)
        m = self.market
        if order.token == "quote":
            if m.quote_native:
                raise ExecutorError(f"order {order.id}: the quote on {self.chain} is the chain's coin: "
                                    "nothing to approve")
            token = m.quote_address
        else:
            token = m.token_address(order.token)
            if token is None:
                raise ExecutorError(f"{order.token} is not a token allow-listed on {self.chain}")
        offer = await self._fees()
        try:
            tx = swaps.approve_tx(token, m.router, order.amount_in, chain_id=m.chain_id, nonce=nonce,
                                  gas=APPROVE_GAS, max_fee=offer.max_fee, tip=offer.tip)
        except ValueError as exc:
            raise ExecutorError(f"order {order.id}: {exc}") from None
        return self._signed(tx, 0)

    # ------------------------------------------------------------------ send and look up

    async def broadcast(self, order: Order) -> Accepted | Rejected | Unknown:
        """Sends the order's stored bytes. Only an answer proving they can never be mined is
        Rejected; "nonce too low", "underpriced", a gap, a transport error or words nobody
        knows are Unknown: the driver looks the order up instead of releasing anything."""
        from engine.venues.evm.errors import classify

        if order.raw is None or order.tx_id is None:
            raise ValueError(f"order {order.id} has no signed bytes to send")
        try:
            sent = await self.client.send_raw(order.raw)
        except Exception as exc:
            error = classify(exc)
            said = f"{error.kind}: {scrub(error.message)}"
            if error.kind == "known":
                return Accepted(order.tx_id)
            if error.definite:
                return Rejected(said)
            return Unknown(said, unexplained=error.kind == "other")
        if sent.lower() != order.tx_id.lower():  # cannot happen for the bytes we signed; never guess
            return Unknown(f"the node reports hash {sent} for the bytes of {order.tx_id}", unexplained=True)
        return Accepted(order.tx_id)

    async def lookup(self, order: Order) -> Outcome:
        """What the chain says now about the order's transaction.

        A receipt decides it once `confirmations` blocks hold it (0 or 1: mined is final); until
        then it is pending. A receipt that disappears before that (a reorg took its block) is
        simply pending or missing again: the transaction went back to the pool, or must be sent
        again, and nothing was recorded from it. No receipt and our mined nonce count beyond the
        order's nonce: another transaction took the nonce (expired), established with the
        receipt read again AFTER the nonce, so that our own transaction mined in between is
        never mistaken for another's. Any read that fails raises."""
        if order.tx_id is None:
            raise ValueError(f"order {order.id} has no transaction to look up")
        if self.lookup_every_s <= 0:
            return await self._look_up(order)
        key = (order.id, order.tx_id)
        try:
            head = await self._head()
        except Exception:  # a node that will not say its head may still answer for the transaction
            return await self._look_up(order)
        last = self._pending_at.get(key)
        if last is not None and last[0] == head and time.monotonic() - last[1] < self.lookup_every_s:
            return Outcome("pending")  # no block since it was read pending: nothing it could show has changed
        outcome = await self._look_up(order)
        if outcome.status == "pending":
            if len(self._pending_at) > 4096:  # attempts replaced long ago; a cache, not a record
                self._pending_at.clear()
            self._pending_at[key] = (head, time.monotonic())
        else:
            self._pending_at.pop(key, None)
        return outcome

    async def _head(self) -> int:
        """The chain's block number, one read shared by the look-ups of one engine step: a receipt
        can only appear with a new block, so a pending transaction is read again when one came (or
        every LOOKUP_EVERY_S, for a node that mined nothing, or a reorg back to the same height)."""
        return await self._head_read(self.client.block_number)

    async def _look_up(self, order: Order) -> Outcome:
        attempts = order.all_attempts()  # a replaced or cancelled order: any attempt may be the one mined
        found = await self._mined(attempts)
        if found is None:
            if order.nonce is not None and await self.client.latest_nonce(order.address) > order.nonce:
                found = await self._mined(attempts)
                if found is None:
                    # Taken by another transaction, or our receipt lags the nonce count (a load-balanced
                    # endpoint answers from nodes at different heights): only after EXPIRE_AFTER_BLOCKS
                    # blocks without our receipt is it another's, and the funds released.
                    head = await self.client.block_number()
                    first = self._gone_since.setdefault(order.id, head)
                    if head - first < EXPIRE_AFTER_BLOCKS:
                        return Outcome("pending")
                    self._gone_since.pop(order.id, None)
                    return Outcome("expired", reason="nonce taken by another transaction")
            elif any([await self.client.transaction_known(a.tx_id) for a in attempts]):
                return Outcome("pending")
            else:
                return Outcome("missing")
        attempt, receipt = found
        self._gone_since.pop(order.id, None)
        if self.confirmations > 1 and await self.client.block_number() - receipt.block_number + 1 < self.confirmations:
            return Outcome("pending")  # (a receipt is one confirmation: no need to ask for the head)
        if attempt.cancel:
            return Outcome("failed", network_fee=receipt.gas_posted,
                           reason=f"cancelled at nonce {order.nonce} (tx {receipt.tx_hash}): the swap never ran")
        if receipt.status != 1:
            return Outcome("failed", network_fee=receipt.gas_posted,
                           reason=f"reverted on chain (tx {receipt.tx_hash} in block {receipt.block_number})")
        out = 0 if order.intent in ("noop", "approve") else self._filled(order, receipt)
        return Outcome("filled", amount_in=order.amount_in, amount_out=out, fee=0, network_fee=receipt.gas_posted)

    async def _mined(self, attempts):
        """(attempt, receipt) of the attempt that was mined, if any (at most one can be: one nonce)."""
        for attempt in reversed(attempts):
            receipt = await self.client.receipt(attempt.tx_id)
            if receipt is not None:
                return attempt, receipt
        return None

    async def refusal(self) -> str | None:
        """Why no transaction could be priced under the cap now (the next block's base fee is above
        it, or the fees cannot be read), asked before an entry or an exit takes a nonce: refused
        then, nothing is numbered, signed or held for it."""
        try:
            await self._fees()
        except ExecutorError as exc:
            return str(exc)
        return None

    # ------------------------------------------------------------------ stuck transactions

    stuck_after_ms: int | None = 60_000  # not mined this long after its last attempt: replace it
    lookup_every_s = LOOKUP_EVERY_S  # 0: read the chain at every look-up, new block or not
    look_up_after_send = True  # the driver asks for the receipt right after a send (engine/driver.py)

    async def replace(self, order: Order) -> Signed | None:
        """The order's transaction again at its nonce, both fee fields raised as geth demands
        (each at least +10% and strictly higher), or at today's fees if those are higher still;
        None when that would pass the cap (then it is cancelled, or waits)."""
        current = order.all_attempts()[-1]
        if current.cancel or current.max_fee is None:
            return None
        old = fees.Fees(current.max_fee, current.tip)
        try:
            now = await self._fees()
        except ExecutorError:
            now = None
        new = fees.bump(old, self.cap, at_least=now)
        if new is None:
            return None
        return self._resigned(order, new, cancel=False)

    async def cancel(self, order: Order) -> Signed | None:
        """A zero-value transfer to ourselves at the order's nonce, priced as a valid replacement of
        its last attempt under the cancellation's own cap: later nonces are no longer blocked."""
        current = order.all_attempts()[-1]
        if current.max_fee is None:
            return None
        new = fees.cancel_fees(fees.Fees(current.max_fee, current.tip), self.cancel_cap)
        if new is None:
            return None
        tx = swaps.cancel_tx(self.market.address, self._check(order), chain_id=self.market.chain_id,
                             max_fee=new.max_fee, tip=new.tip, gas=NOOP_GAS)
        return self._signed(tx, 0)

    def _resigned(self, order: Order, new: fees.Fees, cancel: bool) -> Signed:
        from eth_account.typed_transactions import TypedTransaction
        from hexbytes import HexBytes

        fields = TypedTransaction.from_bytes(HexBytes(order.raw)).as_dict()
        if fields.get("nonce") != order.nonce:
            raise ValueError(f"order {order.id}: its stored bytes are not at its nonce {order.nonce}")
        tx = {"type": 2, "chainId": fields["chainId"], "nonce": fields["nonce"], "to": fields["to"],
              "value": fields["value"], "data": fields["data"], "gas": fields["gas"],
              "maxFeePerGas": new.max_fee, "maxPriorityFeePerGas": new.tip}
        from eth_utils import to_checksum_address

        tx["to"] = to_checksum_address(tx["to"])
        return self._signed(tx, order.min_out or 0)

    def _filled(self, order: Order, receipt) -> int:
        """What reached us, from the receipt's logs (raises when they show no output: never a fill of 0)."""
        kind, path, _decimals = self._path(order)
        if kind is not swaps.SwapKind.TOKENS_FOR_ETH:
            return swaps.decode_fill(receipt, self.market.address, path)
        # The router unwraps WETH and sends the coin without a log: the output is read from the
        # pair's Swap event. The pair is the one our input tokens were paid to.
        pair = _paid_to(receipt, path[0], self.market.address)
        if pair is None:
            raise ValueError(f"receipt {receipt.tx_hash} succeeded but shows no payment of {path[0]} by us")
        return swaps.decode_fill(receipt, self.market.address, path, native=True, pair=pair, router=self.market.router)


def _paid_to(receipt, token: str, ours: str) -> str | None:
    """Where `token`'s Transfer from `ours` in the receipt went (the router pays the first pair)."""
    from eth_utils import to_checksum_address

    ours = ours.lower()
    for log in receipt.logs:
        if (log.address == token and len(log.topics) == 3 and log.topics[0] == abi.TRANSFER_TOPIC
                and "0x" + log.topics[1][-40:] == ours):
            return to_checksum_address("0x" + log.topics[2][-40:])
    return None

