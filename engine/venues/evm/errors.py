"""What an eth_sendRawTransaction failure means for the order that sent it.

A send error is evidence about one nonce, and the wrong reading costs money: taking
"already known" for a failure re-signs an intent that is already in the pool (a double
trade); taking "nonce too low" for a failure releases funds our own transaction is
spending; taking a timeout for a refusal forgets bytes a node may be mining. So each
answer is sorted into a kind that names what is true of the chain, and only the kinds
that prove the bytes can never be mined are `definite` (DESIGN 2, step 6: a reservation
is released on evidence only).

Node wording differs and drifts, so kinds are matched on lowercased fragments shared by
the implementations, never on one node's whole message. Wording checked (2026-11):
geth core/txpool/errors.go and core/error.go; anvil 1.7.1 (run, notes/evm.md); erigon
txpool DiscardReason.String(); nethermind TxPoolErrorMessages.cs (geth's phrases) and
its older AcceptTxResult codes (AlreadyKnown, OldNonce, FeeTooLow, NonceGap,
InsufficientFunds); besu RpcErrorType.java; openethereum via chainlink's client/errors.go.

| kind          | definite | DESIGN 8 rule                                                        |
|---------------|----------|----------------------------------------------------------------------|
| known         | no       | "already known" = submitted: the pool holds these bytes; track them  |
| nonce_used    | no       | "nonce too low" = reconcile, never re-sign with a new nonce (our own |
|               |          | earlier send may be the transaction that used it)                    |
| underpriced   | no       | "replacement transaction underpriced" = a tx holds this nonce, keep  |
|               |          | tracking (bump further within the cap, or wait)                      |
| gap           | no       | "nonce too high" = a gap below, fill it                              |
| base_fee      | no       | fee cap below the base fee: anvil refuses, geth pools it and waits;  |
|               |          | replace with fresh fees at the same nonce, the nonce stays ours      |
| funds         | yes      | refused at admission: the node never took the bytes                  |
| tip_above_max | yes      | malformed for every node: can never be mined                         |
| chain_id      | yes      | signed for another chain (or a bad signature): never valid here      |
| transport     | no       | timeout / transport error = outcome unknown, rebroadcast the same    |
|               |          | bytes                                                                |
| other         | no       | unknown answer = outcome unknown: the order stays UNKNOWN, reconciled |

`definite` speaks for this answer only. If an earlier broadcast of the same bytes ended
in a transport error, some node may hold them: the caller releases funds only when no
send of these bytes has an unknown outcome.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("known", "nonce_used", "underpriced", "gap", "base_fee", "funds", "tip_above_max",
         "chain_id", "transport", "other")
DEFINITE = frozenset({"funds", "tip_above_max", "chain_id"})

# Checked in order, first match wins: the more specific wording comes before the fragment it
# contains (nethermind's "FeeTooLow, MaxFeePerGas too low ... BaseFee" is a base fee refusal
# before it is an underpriced one; "unknown transaction" is not "known transaction").
_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((kind, re.compile("|".join(fragments))) for kind, fragments in (
    ("known", (r"already known", r"already imported", r"(?<!un)known transaction", r"alreadyknown",
               r"with (the )?same hash")),
    ("tip_above_max", (r"priority fee per gas (is )?(higher than|exceeds|above) (the )?max fee per gas",
                       r"tip (higher than|above) (the )?fee cap")),
    ("base_fee", (r"less than (the )?block base fee", r"below (the )?(current|block) base fee",
                  r"maxfeepergas too low")),
    ("nonce_used", (r"nonce too low", r"nonce is too low", r"nonce has already been used", r"oldnonce")),
    ("gap", (r"nonce too high", r"nonce gap", r"noncegap", r"gapped nonce", r"nonce too far in (the )?future",
             r"nonce is too distant")),
    ("underpriced", (r"underpriced", r"fee too low", r"feetoolow", r"could not replace existing", r"gas price too low",
                     r"another transaction with (the )?same nonce", r"below configured minimum gas price")),
    ("funds", (r"insufficient funds", r"insufficientfunds", r"insufficient balance", r"not enough funds",
               r"upfront cost exceeds account balance", r"overdraft")),
    ("chain_id", (r"invalid chain ?id", r"wrong chain ?id", r"incorrect chain ?id", r"chain ?id mismatch",
                  r"invalid sender", r"invalid signature", r"failed to recover sender", r"failedtoresolvesender")),
    ("transport", (r"timed out", r"timeout", r"rate limit", r"too many requests", r"service unavailable",
                   r"bad gateway", r"connection (refused|reset)")),
))

# Raised when the request or its answer was lost on the way: the node may or may not hold
# the bytes. Matched by class name along the MRO so that neither aiohttp nor web3 needs
# importing here; OSError (requests' errors too) and TimeoutError (asyncio.TimeoutError's
# alias) by isinstance.
_TRANSPORT_CLASSES = frozenset({
    "ClientError",  # aiohttp: connector, disconnect, payload, and HTTP status errors (5xx, 429)
    "ProviderConnectionError", "BadResponseFormat",  # web3: no usable JSON-RPC answer came back
    "JSONDecodeError",  # a truncated or non-JSON body
})


@dataclass(frozen=True)
class SendError:
    kind: str
    definite: bool  # the bytes can never be mined: the reservation may be released
    message: str  # the node's own words (or the exception's), for the log and the operator
    code: int | None = None  # the JSON-RPC error code when there was one; nodes disagree on them


def classify(error: BaseException | str) -> SendError:
    """Sorts a send failure (an exception from web3/aiohttp, or a node's message) into a kind.

    A JSON-RPC answer is the node's verdict and is read first; an exception without one is
    transport when it (or what it was raised from) is a transport error; anything else is
    matched on its text, and what matches nothing is "other" (outcome unknown)."""
    if isinstance(error, str):
        return _match(error, None)
    message, code, answered = _message_of(error)
    if not answered and _is_transport(error):
        return _result("transport", message, code)
    return _match(message, code)


def _match(message: str, code: int | None) -> SendError:
    lowered = message.lower()
    for kind, pattern in _PATTERNS:
        if pattern.search(lowered):
            return _result(kind, message, code)
    return _result("other", message, code)


def _result(kind: str, message: str, code: int | None) -> SendError:
    return SendError(kind=kind, definite=kind in DEFINITE, message=message, code=code)


def _message_of(error: BaseException) -> tuple[str, int | None, bool]:
    """The message, the JSON-RPC code, and whether a node answered, read duck-typed: web3 8's
    Web3RPCError keeps the reply in `rpc_response` (its str() is a dict repr);
    ContractLogicError has `.message`; web3 < 7 raised ValueError(dict)."""
    reply = getattr(error, "rpc_response", None)
    body = reply.get("error") if isinstance(reply, dict) else None
    if body is None and error.args and isinstance(error.args[0], dict):
        body = error.args[0]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        code, data = body.get("code"), body.get("data")
        message = body["message"] if not isinstance(data, str) else f"{body['message']} ({data})"
        return message, code if isinstance(code, int) and not isinstance(code, bool) else None, True
    own = getattr(error, "message", None)
    if isinstance(own, str) and own:
        return own, None, False
    return (str(error) or type(error).__name__), None, False


def _is_transport(error: BaseException) -> bool:
    """Follows `raise ... from` (web3 may wrap the aiohttp error), never the implicit context:
    a node's answer raised while handling an earlier timeout is still the node's answer."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError | TimeoutError):
            return True
        if any(cls.__name__ in _TRANSPORT_CLASSES for cls in type(current).__mro__):
            return True
        current = current.__cause__
    return False
