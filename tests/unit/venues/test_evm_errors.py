"""Send errors sorted into what they mean for the order, across node implementations.

The kinds decide money: "known" keeps an order submitted instead of re-signing it,
"nonce_used" is never a failure (our own send may have used the nonce), and only refusals
proving the bytes can never be mined are definite. Messages here are each node's own
wording (sources in engine/venues/evm/errors.py); anvil's are also provoked for real in
tests/integration/test_evm_send_errors.py.
"""

from __future__ import annotations

import pytest

from engine.venues.evm import errors
from engine.venues.evm.errors import DEFINITE, KINDS, classify

WORDING = [
    # geth (core/txpool/errors.go, core/error.go)
    ("already known", "known"),
    ("nonce too low: next nonce 7, tx nonce 5", "nonce_used"),
    ("replacement transaction underpriced", "underpriced"),
    ("transaction underpriced: tip needed 1, tip permitted 0", "underpriced"),
    ("nonce too high", "gap"),
    ("max fee per gas less than block base fee: address 0xab, maxFeePerGas: 1, baseFee: 7", "base_fee"),
    ("insufficient funds for gas * price + value: balance 0, tx cost 5, overshot 5", "funds"),
    ("transaction would cause overdraft", "funds"),
    ("max priority fee per gas higher than max fee per gas", "tip_above_max"),
    ("invalid sender: invalid chain id for signer", "chain_id"),
    ("invalid sender", "chain_id"),
    ("request timed out", "transport"),
    # anvil 1.7.1 (run)
    ("transaction already imported", "known"),
    ("nonce too low", "nonce_used"),
    ("Insufficient funds for gas * price + value", "funds"),
    ("invalid chain id for signer", "chain_id"),
    # erigon (txpool DiscardReason)
    ("existing txn with same hash", "known"),
    ("could not replace existing tx", "underpriced"),
    ("fee too low", "underpriced"),
    ("underpriced", "underpriced"),
    ("insufficient funds", "funds"),
    # nethermind: geth's phrases today, its AcceptTxResult codes before
    ("AlreadyKnown", "known"),
    ("OldNonce, Current nonce: 5, nonce of rejected tx: 4", "nonce_used"),
    ("NonceGap, Future nonce. Expected nonce: 3", "gap"),
    ("nonce too far in future", "gap"),
    ("FeeTooLow, MaxFeePerGas too low. MaxFeePerGas: 1, BaseFee: 2, MaxPriorityFeePerGas:1, Block number: 3",
     "base_fee"),
    ("FeeTooLowToCompete", "underpriced"),
    ("InsufficientFunds, Account balance: 0, cumulative cost: 5", "funds"),
    ("failed to recover sender", "chain_id"),
    # besu (RpcErrorType)
    ("Known transaction", "known"),
    ("Nonce too low", "nonce_used"),
    ("Replacement transaction underpriced", "underpriced"),
    ("Gas price below configured minimum gas price", "underpriced"),
    ("Gas price below current base fee", "base_fee"),
    ("Nonce too high", "gap"),
    ("Transaction nonce is too distant from current sender nonce", "gap"),
    ("Upfront cost exceeds account balance", "funds"),
    ("Max priority fee per gas exceeds max fee per gas", "tip_above_max"),
    ("Wrong chainId", "chain_id"),
    ("Invalid signature", "chain_id"),
    # openethereum, and wallets' own wording
    ("Transaction with the same hash was already imported.", "known"),
    ("Transaction nonce is too low. Try incrementing the nonce.", "nonce_used"),
    (("Transaction gas price 1 wei is too low. There is another transaction with same nonce in the queue. "
      "Try increasing the gas price or incrementing the nonce."), "underpriced"),
    ("Insufficient funds. The account you tried to send transaction from does not have enough funds.", "funds"),
    ("nonce has already been used", "nonce_used"),
    # nothing we know: outcome unknown
    ("unknown transaction type", "other"),
    ("execution reverted: UniswapV2Router: EXPIRED", "other"),
    ("account limit exceeded", "other"),
]


@pytest.mark.parametrize(("message", "kind"), WORDING)
def test_each_nodes_wording_is_sorted_into_its_kind(message, kind):
    error = classify(message)
    assert (error.kind, error.message) == (kind, message)


def test_only_refusals_that_prove_the_bytes_can_never_be_mined_are_definite():
    assert DEFINITE == {"funds", "tip_above_max", "chain_id"}
    for message, kind in WORDING:
        assert classify(message).definite is (kind in DEFINITE), message


@pytest.mark.parametrize("message", ["nonce too low", "already known", "replacement transaction underpriced",
                                     "request timed out", "unknown transaction type"])
def test_what_our_own_transaction_may_explain_never_releases_funds(message):
    assert classify(message).definite is False


class Web3RPCError(Exception):
    """Shaped like web3 8's: str() is a dict repr, the reply is in rpc_response."""

    def __init__(self, reply: dict):
        super().__init__(repr(reply["error"]))
        self.message = repr(reply["error"])
        self.rpc_response = reply


def test_a_json_rpc_error_is_read_from_the_reply_not_its_repr():
    reply = {"jsonrpc": "2.0", "id": 3, "error": {"code": -32003, "message": "transaction already imported"}}
    error = classify(Web3RPCError(reply))
    assert (error.kind, error.definite, error.message, error.code) == ("known", False,
                                                                        "transaction already imported", -32003)


def test_the_error_data_is_read_too():
    reply = {"error": {"code": -32602, "message": "Invalid parameters: tx", "data": "nonce too low"}}
    error = classify(Web3RPCError(reply))
    assert (error.kind, error.code) == ("nonce_used", -32602)


def test_web3_before_7_raised_value_error_with_the_error_object():
    error = classify(ValueError({"code": -32000, "message": "replacement transaction underpriced"}))
    assert (error.kind, error.code) == ("underpriced", -32000)


def test_a_revert_is_read_from_its_message_and_is_not_definite():
    class ContractLogicError(Exception):
        def __init__(self, message):
            super().__init__(message, "0x08c379a0")
            self.message = message

    error = classify(ContractLogicError("execution reverted: UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT"))
    assert (error.kind, error.definite) == ("other", False)
    assert error.message == "execution reverted: UniswapV2Router: INSUFFICIENT_OUTPUT_AMOUNT"


# Shaped like aiohttp's and web3's hierarchy, matched by class name without importing either.
class ClientError(Exception): ...
class ClientResponseError(ClientError): ...
class ServerDisconnectedError(ClientError): ...
class BadResponseFormat(Exception): ...


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connect call failed"),
    ConnectionResetError(104, "Connection reset by peer"),
    OSError("Network is unreachable"),
    TimeoutError(),
    ClientResponseError("502, message='Bad Gateway'"),
    ServerDisconnectedError("Server disconnected"),
    BadResponseFormat("The response was in an unexpected format and unable to be decoded"),
], ids=lambda e: type(e).__name__)
def test_a_lost_request_or_answer_is_transport_and_outcome_unknown(exc):
    error = classify(exc)
    assert (error.kind, error.definite) == ("transport", False)
    assert error.message


def test_a_wrapped_transport_error_is_still_transport():
    class ProviderError(Exception): ...

    try:
        try:
            raise ConnectionResetError(104, "reset")
        except OSError as cause:
            raise ProviderError("request failed") from cause
    except ProviderError as wrapped:
        assert classify(wrapped).kind == "transport"


@pytest.mark.parametrize("chained", ["context", "cause"])
def test_a_nodes_answer_after_a_timeout_is_the_nodes_answer(chained):
    """A retry loop's second send answered "nonce too low": that is evidence, not a timeout,
    whether it was raised while handling the timeout or from it."""
    try:
        try:
            raise TimeoutError()
        except TimeoutError as timeout:
            answer = Web3RPCError({"error": {"code": -32000, "message": "nonce too low"}})
            if chained == "cause":
                raise answer from timeout
            raise answer
    except Web3RPCError as answered:
        assert (answered.__cause__ if chained == "cause" else answered.__context__) is not None
        assert classify(answered).kind == "nonce_used"


def test_an_error_raised_while_handling_a_timeout_is_not_a_timeout():
    """Only `raise ... from` wraps a transport error; an implicit context is history."""
    class ContractLogicError(Exception):
        def __init__(self, message):
            super().__init__(message)
            self.message = message

    try:
        try:
            raise TimeoutError()
        except TimeoutError:
            raise ContractLogicError("execution reverted: UniswapV2Router: EXPIRED")
    except ContractLogicError as reverted:
        assert isinstance(reverted.__context__, TimeoutError)
        assert classify(reverted).kind == "other"


def test_the_module_docstring_maps_every_kind_to_its_rule():
    cells = [[c.strip() for c in line.split("|")[1:3]] for line in errors.__doc__.splitlines()
             if line.startswith("| ") and "---" not in line]
    rows = {kind: definite for kind, definite in cells if kind}  # a rule's continuation lines have no kind
    assert [k for k in rows if k != "kind"] == list(KINDS)
    assert {k for k, definite in rows.items() if definite == "yes"} == DEFINITE
