"""Send errors provoked for real on anvil, read the way the executor will read them.

Each test makes the node refuse a signed EIP-1559 transaction for one reason, catches
what web3 8 (retries off, as the executor runs it) actually raises, and checks that
`classify` names the kind DESIGN 8 acts on, and that only refusals proving the bytes can
never be mined are `definite`. The node being unreachable or silent is provoked too.

What anvil cannot show (a nonce gap is queued, never "nonce too high"; geth's own wording)
is covered by the table test at the end, from the strings in notes/evm.md.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from engine.venues.evm.errors import classify
from engine.venues.evm.fees import Fees, bump, geth_accepts_replacement, gwei, initial

from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow

TRANSFER_GAS = 21_000


async def connect(url: str, timeout: float = 10):
    import aiohttp
    from web3 import AsyncHTTPProvider, AsyncWeb3

    return AsyncWeb3(AsyncHTTPProvider(url, exception_retry_configuration=None,
                                       request_kwargs={"timeout": aiohttp.ClientTimeout(total=timeout)}))


def sign(key: str, *, chain_id: int, nonce: int, max_fee: int, tip: int, to: str, value: int = 0) -> bytes:
    """Every field explicit, as the executor signs (no fill-in, no estimate)."""
    from eth_account import Account

    tx = {"type": 2, "chainId": chain_id, "nonce": nonce, "to": to, "value": value, "gas": TRANSFER_GAS,
          "maxFeePerGas": max_fee, "maxPriorityFeePerGas": tip, "data": b""}
    return bytes(Account.from_key(key).sign_transaction(tx).raw_transaction)


async def refusal(w3, raw: bytes):
    """What eth_sendRawTransaction raised for `raw`, classified; fails the test if it was taken."""
    try:
        await w3.eth.send_raw_transaction(raw)
    except Exception as exc:  # noqa: BLE001 - whatever web3 raises is what is classified
        return exc, classify(exc)
    pytest.fail("the node accepted a transaction it was meant to refuse")


class Chain:
    """The worker's anvil seen from one test: the trader sends to the deployer."""

    def __init__(self, evm_chain, w3):  # noqa: F811
        self.w3 = w3
        self.chain_id = evm_chain.chain_id
        self.sender = evm_chain.uniswap.trader
        self.to = evm_chain.uniswap.deployer.address

    async def rpc(self, method: str, params: list | None = None):
        reply = await self.w3.provider.make_request(method, params or [])
        assert "error" not in reply, reply
        return reply["result"]

    async def nonce(self) -> int:
        return await self.w3.eth.get_transaction_count(self.sender.address, "pending")

    async def fees(self) -> Fees:
        base_fee = (await self.w3.eth.get_block("pending"))["baseFeePerGas"]
        return initial(base_fee, gwei(1), gwei(50))

    def sign(self, nonce: int, fees: Fees, **kw) -> bytes:
        kw.setdefault("chain_id", self.chain_id)
        return sign(self.sender.key, nonce=nonce, max_fee=fees.max_fee, tip=fees.tip, to=self.to, **kw)


@pytest.fixture
async def chain(evm_chain):  # noqa: F811
    w3 = await connect(evm_chain.rpc_url)
    try:
        yield Chain(evm_chain, w3)
    finally:
        await w3.provider.disconnect()


async def test_the_same_bytes_sent_again_while_pooled_are_known_not_failed(chain):
    from web3.exceptions import Web3RPCError

    await chain.rpc("evm_setAutomine", [False])
    raw = chain.sign(await chain.nonce(), await chain.fees())
    await chain.w3.eth.send_raw_transaction(raw)

    exc, error = await refusal(chain.w3, raw)
    assert isinstance(exc, Web3RPCError)
    assert (error.kind, error.definite) == ("known", False)
    assert "already imported" in error.message  # anvil's words for geth's "already known"
    assert (await chain.rpc("txpool_status"))["pending"] == "0x1"  # it is in the pool: submitted


async def test_a_nonce_already_mined_is_used_and_never_definite(chain):
    """The resend of bytes that already landed (a lost answer, then our retry) says "nonce
    too low": our own transaction used the nonce, so nothing may be released on it."""
    nonce = await chain.nonce()
    fees = await chain.fees()
    raw = chain.sign(nonce, fees)
    tx_hash = await chain.w3.eth.send_raw_transaction(raw)
    assert (await chain.w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.05))["status"] == 1

    for again in (raw, chain.sign(nonce, fees, value=1)):  # the same bytes, then new ones at the nonce
        _, error = await refusal(chain.w3, again)
        assert (error.kind, error.definite) == ("nonce_used", False)
        assert "nonce too low" in error.message


async def test_a_replacement_without_the_bump_is_underpriced_and_the_bump_replaces(chain):
    await chain.rpc("evm_setAutomine", [False])
    nonce, fees = await chain.nonce(), await chain.fees()
    await chain.w3.eth.send_raw_transaction(chain.sign(nonce, fees))

    _, error = await refusal(chain.w3, chain.sign(nonce, fees, value=1))  # same fees, other bytes
    assert (error.kind, error.definite) == ("underpriced", False)
    assert "replacement transaction underpriced" in error.message

    better = bump(fees, gwei(50))
    assert better is not None and geth_accepts_replacement(fees, better)
    replacement = await chain.w3.eth.send_raw_transaction(chain.sign(nonce, better, value=2))
    pending = {a.lower(): txs for a, txs in (await chain.rpc("txpool_content"))["pending"].items()}
    [pooled] = pending[chain.sender.address.lower()].values()
    assert pooled["hash"] == replacement.to_0x_hex()  # the old hash is gone from the node


async def test_a_fee_cap_below_the_next_base_fee_is_refused_by_anvil(chain):
    base_fee = (await chain.w3.eth.get_block("pending"))["baseFeePerGas"]
    _, error = await refusal(chain.w3, chain.sign(await chain.nonce(), Fees(max_fee=base_fee - 1, tip=0)))
    assert (error.kind, error.definite) == ("base_fee", False)


async def test_a_sender_without_the_funds_is_refused_definitely(chain):
    from eth_account import Account

    empty = Account.from_key("0x" + "11" * 32)
    assert await chain.w3.eth.get_balance(empty.address) == 0
    fees = await chain.fees()
    raw = sign(empty.key.to_0x_hex(), chain_id=chain.chain_id, nonce=0, max_fee=fees.max_fee, tip=fees.tip,
               to=chain.to)
    _, error = await refusal(chain.w3, raw)
    assert (error.kind, error.definite) == ("funds", True)


async def test_a_tip_above_the_fee_cap_is_refused_definitely(chain):
    fees = await chain.fees()
    raw = sign(chain.sender.key, chain_id=chain.chain_id, nonce=await chain.nonce(), max_fee=fees.max_fee,
               tip=fees.max_fee + 1, to=chain.to)  # what Fees itself refuses to hold
    _, error = await refusal(chain.w3, raw)
    assert (error.kind, error.definite) == ("tip_above_max", True)


async def test_bytes_signed_for_another_chain_are_refused_definitely(chain):
    raw = chain.sign(await chain.nonce(), await chain.fees(), chain_id=1)
    _, error = await refusal(chain.w3, raw)
    assert (error.kind, error.definite) == ("chain_id", True)
    assert "chain id" in error.message


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once the socket is closed


async def test_an_unreachable_node_is_transport_and_outcome_unknown(chain):
    raw = chain.sign(await chain.nonce(), await chain.fees())
    w3 = await connect(f"http://127.0.0.1:{closed_port()}")
    try:
        exc, error = await refusal(w3, raw)
    finally:
        await w3.provider.disconnect()
    assert type(exc).__name__ == "ClientConnectorError" and isinstance(exc, OSError)
    assert (error.kind, error.definite) == ("transport", False)


BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nbad gateway"


@pytest.mark.parametrize("answer", ["nothing", "bad gateway"])
async def test_a_node_that_does_not_answer_is_transport_and_outcome_unknown(chain, answer):
    """The request may have reached the node (a proxy in front of it can fail after
    forwarding): the case where rebroadcasting the same bytes is the only safe move."""
    async def node(reader, writer):
        await reader.read(65536)
        if answer == "bad gateway":
            writer.write(BAD_GATEWAY)
            await writer.drain()
        while await reader.read(65536):  # then holds the line until the client gives up
            pass
        writer.close()

    server = await asyncio.start_server(node, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    raw = chain.sign(await chain.nonce(), await chain.fees())
    w3 = await connect(f"http://127.0.0.1:{port}", timeout=0.3)
    try:
        exc, error = await refusal(w3, raw)
    finally:
        await w3.provider.disconnect()
        server.close()
        await server.wait_closed()
    if answer == "nothing":
        assert isinstance(exc, TimeoutError)
    else:
        assert (type(exc).__name__, exc.status) == ("ClientResponseError", 502)
    assert (error.kind, error.definite) == ("transport", False)


@pytest.mark.parametrize(("message", "kind", "definite"), [
    ("already known", "known", False),
    ("nonce too low: next nonce 7, tx nonce 5", "nonce_used", False),
    ("replacement transaction underpriced", "underpriced", False),
    ("transaction underpriced: tip needed 1, tip permitted 0", "underpriced", False),
    ("nonce too high", "gap", False),
    ("insufficient funds for gas * price + value: balance 0, tx cost 21000000000000, overshot 21000000000000",
     "funds", True),
    ("max priority fee per gas higher than max fee per gas", "tip_above_max", True),
    ("invalid sender: invalid chain id for signer", "chain_id", True),
    ("max fee per gas less than block base fee: address 0x0, maxFeePerGas: 1, baseFee: 7", "base_fee", False),
    ("request timed out", "transport", False),
])
def test_geth_wording_is_classified(message, kind, definite):
    """geth's answers (core/txpool/errors.go, core/error.go, and notes/evm.md's table).
    No geth runs here, so its strings are checked as text; web3 hands them over the way
    anvil's are (Web3RPCError.rpc_response["error"]), which the tests above exercise."""
    from web3.exceptions import Web3RPCError

    reply = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32000, "message": message}}
    error = classify(Web3RPCError(repr(reply["error"]), rpc_response=reply))
    assert (error.kind, error.definite, error.message, error.code) == (kind, definite, message, -32000)
