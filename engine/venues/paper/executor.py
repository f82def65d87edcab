"""The paper executor: the executor protocol over the paper venue.

Latency, slippage and fees come from the venue; this layer adds the faults a
real network has, seeded per transaction so a run replays exactly: a
rejection before acceptance (definite), a lost request and a lost response
(both unknown: the book must keep the funds held until the venue says).
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from engine.core.book import Order
from engine.core.money import bps_of, min_out, quote_for, tokens_for
from engine.venues.paper.market import rng
from engine.venues.paper.venue import PaperVenue, VenueRejected, network_fee_cap
from engine.venues.port import Accepted, ExecutorError, Outcome, Quote, Rejected, Signed, Unknown
from wallet.paper import tx_id


@dataclass(frozen=True, slots=True)
class Faults:
    fail_rate_bps: int = 0
    unknown_rate_bps: int = 0
    expiry_blocks: int = 30


class VenueLink:
    """The venue runs on one thread of its own: calls are serialized, the loop never blocks."""

    def __init__(self, venue: PaperVenue):
        self.venue = venue
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="botctl-venue")

    async def call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def open(self) -> "VenueLink":
        await self.call(self.venue.open)
        return self

    async def close(self) -> None:
        await self.call(self.venue.close)
        self._pool.shutdown(wait=True)


class PaperExecutor:
    def __init__(self, link: VenueLink, chain: str, faults: Faults):
        self.link = link
        self.chain = chain
        self.faults = faults
        venue = link.venue
        self.spec = venue.chains[chain]
        self.signer = venue.signers[chain]
        self.seed = venue.seed
        self.fee_bps = venue.params.fee_bps
        self._attempts: dict[str, int] = {}

    async def fee_reserve(self) -> int:
        return network_fee_cap(self.spec.kind)

    async def quote(self, order: Order) -> Quote:
        prices = await self.link.call(self.link.venue.prices, self.chain)
        price = prices.get(order.token)
        if price is None:
            raise ExecutorError(f"no market for {order.token} on {self.chain}")
        decimals = self.spec.policy().tokens[order.token]
        qd = self.spec.quote_decimals
        if order.intent == "entry":
            out = tokens_for(order.amount_in - bps_of(order.amount_in, self.fee_bps), price, qd, decimals)
        else:
            gross = quote_for(order.amount_in, price, qd, decimals)
            out = gross - bps_of(gross, self.fee_bps)
        if out <= 0:
            raise ExecutorError(f"quote for order {order.id} is zero")
        return Quote(order.amount_in, out, price)

    async def sign(self, order: Order, quote: Quote, slippage_bps: int) -> Signed:
        floor = min_out(quote.quoted_out, slippage_bps)
        body = {
            "chain": self.chain,
            "from": self.spec.address,
            "order": order.id,
            "side": "buy" if order.intent == "entry" else "sell",
            "token": order.token,
            "amount_in": str(order.amount_in),
            "min_out": str(floor),
            "fee_cap": str(network_fee_cap(self.spec.kind)),
        }
        expiry = None
        if self.spec.kind == "evm":
            body["nonce"] = order.nonce
        else:
            expiry = self.link.venue.height + self.faults.expiry_blocks  # lastValidBlockHeight
            body["expiry"] = expiry
        raw = self.signer.sign(body)
        return Signed(tx_id(self.spec.kind, raw), raw, expiry, floor)

    async def sign_noop(self, order: Order) -> Signed:
        if order.nonce is None:
            raise ExecutorError("a no-op fills an EVM nonce; this order has none")
        body = {"chain": self.chain, "from": self.spec.address, "order": order.id, "side": "noop",
                "nonce": order.nonce, "fee_cap": str(network_fee_cap(self.spec.kind))}
        raw = self.signer.sign(body)
        return Signed(tx_id(self.spec.kind, raw), raw, None, 0)

    def _fault(self, order: Order) -> str | None:
        attempt = self._attempts.get(order.tx_id, 0)
        self._attempts[order.tx_id] = attempt + 1
        draw = rng(self.seed, "fault", order.tx_id, attempt).randrange(10_000)
        if attempt == 0 and order.state == "signed" and draw < self.faults.fail_rate_bps:
            return "reject"
        draw = rng(self.seed, "lost", order.tx_id, attempt).randrange(10_000)
        if draw < self.faults.unknown_rate_bps:
            return "lost-request" if draw % 2 == 0 else "lost-response"
        return None

    async def broadcast(self, order: Order) -> Accepted | Rejected | Unknown:
        fault = self._fault(order)
        if fault == "reject" and await self.link.call(self.link.venue.lookup, order.tx_id) is None:
            # Definite only because the venue provably never saw these bytes.
            return Rejected("simulation failed (injected)")
        if fault == "lost-request":
            return Unknown("request timed out (injected: never reached the venue)")
        try:
            ident = await self.link.call(self.link.venue.submit, order.raw)
        except VenueRejected as exc:
            if "nonce too low" in str(exc):
                return Unknown("nonce too low: reconcile from the chain")
            return Rejected(str(exc))
        if fault == "lost-response":
            return Unknown("response lost (injected: the venue has it)")
        return Accepted(ident)

    async def lookup(self, order: Order) -> Outcome:
        venue = self.link.venue
        found = await self.link.call(venue.lookup, order.tx_id)
        if found is None:
            if self.spec.kind == "solana" and order.expiry is not None and venue.height > order.expiry:
                return Outcome("expired", reason="never landed and its blockhash expired")
            if self.spec.kind == "evm":
                nonce = await self.link.call(venue.account_nonce, self.chain, order.address)
                if order.nonce is not None and nonce > order.nonce:
                    return Outcome("expired", reason="nonce taken by another transaction")
            return Outcome("missing")
        status = found["status"]
        if status == "pending":
            return Outcome("pending")
        if status == "landed":
            return Outcome("filled", found["amount_in"], found["amount_out"], found["fee"], found["network_fee"])
        if status == "failed":
            return Outcome("failed", network_fee=found["network_fee"], reason=found.get("reason", "reverted"))
        return Outcome("expired", reason=found.get("reason", status))
