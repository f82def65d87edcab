"""A thin async client of one EVM node: the reads and the one write the executor needs.

Thin on purpose. It never retries (web3's HTTP provider would resend eth_sendRawTransaction
behind our back, turning one landed send into "already known" or "nonce too low"), never
fills in a field, never estimates, and lets every exception of a send through unchanged,
so the caller owns the retry loop and the errors module classifies what the node said.
Ints are base units (wei, token base units); addresses come back checksummed.

web3 is imported inside the methods: it costs 0.75 s to import, and nothing but a live EVM
chain needs it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from engine.venues.evm import abi


@dataclass(frozen=True)
class Log:
    address: str  # the emitting contract, checksummed
    topics: tuple[str, ...]  # 0x-prefixed lowercase hex, 32 bytes each
    data: bytes


@dataclass(frozen=True)
class Receipt:
    """What a mined transaction left that the book needs: its outcome, where it was mined
    (a block hash that later changes means a reorg), the gas it cost, and the logs a fill
    is decoded from."""

    tx_hash: str
    status: int  # 1 executed, 0 reverted: the nonce and the gas are spent either way
    block_number: int
    block_hash: str
    gas_used: int
    effective_gas_price: int
    logs: tuple[Log, ...]

    @property
    def gas_posted(self) -> int:
        """The native coin the transaction cost, in wei: what the ledger posts as its fee."""
        return self.gas_used * self.effective_gas_price


class EvmClient:
    """`client = EvmClient(url, timeout_s=10)`; every method is one request (or a few at once)."""

    def __init__(self, url: str, timeout_s: float = 10.0):
        import aiohttp
        from web3 import AsyncHTTPProvider, AsyncWeb3

        provider = AsyncHTTPProvider(url, exception_retry_configuration=None,
                                     request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout_s)})
        # No middleware: nothing is filled in, estimated or resolved through ENS behind our back,
        # and results stay plain dicts.
        self._w3 = AsyncWeb3(provider, middleware=[])
        self._contracts: dict[tuple[str, str], Any] = {}

    def _contract(self, address: str, kind: str):
        key = (address, kind)
        if key not in self._contracts:
            self._contracts[key] = self._w3.eth.contract(address=self._w3.to_checksum_address(address),
                                                         abi={"erc20": abi.ERC20, "router": abi.ROUTER02}[kind])
        return self._contracts[key]

    async def chain_id(self) -> int:
        return await self._w3.eth.chain_id

    async def block_number(self) -> int:
        return await self._w3.eth.block_number

    async def block_hash(self, number: int) -> str | None:
        """The hash of block `number` as the node sees it now (None above its head): a stored hash
        that no longer matches is a reorg."""
        from web3.exceptions import BlockNotFound

        try:
            block = await self._w3.eth.get_block(number)
        except BlockNotFound:
            return None
        return block["hash"].to_0x_hex()

    async def pending_nonce(self, address: str) -> int:
        """Transactions sent from `address`, pooled ones included: the floor for the next nonce."""
        return await self._w3.eth.get_transaction_count(self._w3.to_checksum_address(address), "pending")

    async def latest_nonce(self, address: str) -> int:
        """Transactions from `address` mined so far: a nonce below it is spent."""
        return await self._w3.eth.get_transaction_count(self._w3.to_checksum_address(address), "latest")

    async def next_base_fee(self) -> int:
        """The base fee the next block charges (the pending block's), in wei per gas."""
        return (await self._w3.eth.get_block("pending"))["baseFeePerGas"]

    async def suggested_tip(self) -> int:
        """The node's eth_maxPriorityFeePerGas (web3 falls back to fee history where a node lacks it)."""
        return await self._w3.eth.max_priority_fee

    async def native_balance(self, address: str) -> int:
        return await self._w3.eth.get_balance(self._w3.to_checksum_address(address))

    async def token_balance(self, token: str, address: str) -> int:
        return await self._contract(token, "erc20").functions.balanceOf(
            self._w3.to_checksum_address(address)).call()

    async def token_meta(self, token: str) -> tuple[str, int]:
        """(symbol, decimals). Some old tokens (MKR, SAI) return their symbol as bytes32, not string."""
        token = self._w3.to_checksum_address(token)
        raw, decimals = await asyncio.gather(
            self._w3.eth.call({"to": token, "data": "0x95d89b41"}),  # symbol()
            self._contract(token, "erc20").functions.decimals().call())
        return decode_symbol(bytes(raw)), decimals

    async def allowance(self, token: str, owner: str, spender: str) -> int:
        to_address = self._w3.to_checksum_address
        return await self._contract(token, "erc20").functions.allowance(to_address(owner), to_address(spender)).call()

    async def amounts_out(self, router: str, amount_in: int, path: list[str]) -> list[int]:
        """Router02.getAmountsOut: what each hop of `path` yields for `amount_in`, fee included."""
        path = [self._w3.to_checksum_address(a) for a in path]
        return list(await self._contract(router, "router").functions.getAmountsOut(amount_in, path).call())

    async def send_raw(self, raw: bytes) -> str:
        """Broadcasts signed bytes; returns the hash the node reports. Raises whatever web3 raises."""
        return (await self._w3.eth.send_raw_transaction(raw)).to_0x_hex()

    async def receipt(self, tx_hash: str) -> Receipt | None:
        """The receipt, or None while the node has none (pooled, unknown, dropped or replaced)."""
        from web3.exceptions import TransactionNotFound

        try:
            r = await self._w3.eth.get_transaction_receipt(tx_hash)
        except TransactionNotFound:
            return None
        return Receipt(
            tx_hash=r["transactionHash"].to_0x_hex(), status=r["status"], block_number=r["blockNumber"],
            block_hash=r["blockHash"].to_0x_hex(), gas_used=r["gasUsed"],
            effective_gas_price=r["effectiveGasPrice"],
            logs=tuple(Log(address=self._w3.to_checksum_address(log["address"]),
                           topics=tuple(t.to_0x_hex() for t in log["topics"]), data=bytes(log["data"]))
                       for log in r["logs"]))

    async def transaction_known(self, tx_hash: str) -> bool:
        """Whether the node holds the transaction at all, pooled or mined."""
        from web3.exceptions import TransactionNotFound

        try:
            await self._w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return False
        return True

    async def close(self) -> None:
        await self._w3.provider.disconnect()


def decode_symbol(raw: bytes) -> str:
    """An ABI string, or a bytes32 padded with NULs (the pre-standard tokens)."""
    if len(raw) == 32:
        return raw.rstrip(b"\0").decode("utf-8", errors="replace")
    from eth_abi import decode

    return decode(["string"], raw)[0]
