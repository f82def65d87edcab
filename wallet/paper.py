"""The paper wallet: a deterministic key per (seed, chain) that signs paper transactions.

Paper transactions are JSON bodies with an HMAC signature. They have what the
real ones have that matters to the book: an id fixed by the signed bytes, a
nonce on EVM, an expiry on Solana, and a fee cap.
"""

from __future__ import annotations

import hashlib
import hmac
import json


class SignatureError(ValueError):
    pass


class PaperSigner:
    def __init__(self, seed: int, chain: str, address: str):
        self.chain = chain
        self.address = address
        self._key = hashlib.sha256(f"paper-key:{seed}:{chain}".encode()).digest()

    def __repr__(self) -> str:  # never show the key
        return f"PaperSigner(chain={self.chain!r}, address={self.address!r})"

    def sign(self, body: dict) -> bytes:
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        sig = hmac.new(self._key, payload, hashlib.sha256).hexdigest()
        return json.dumps({"body": body, "sig": sig}, sort_keys=True, separators=(",", ":")).encode()

    def verify(self, raw: bytes) -> dict:
        try:
            envelope = json.loads(raw)
            body, sig = envelope["body"], envelope["sig"]
        except (ValueError, KeyError, TypeError):
            raise SignatureError("malformed transaction") from None
        payload = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        if not hmac.compare_digest(hmac.new(self._key, payload, hashlib.sha256).hexdigest(), sig):
            raise SignatureError("invalid signature")
        return body


def tx_id(kind: str, raw: bytes) -> str:
    digest = hashlib.sha256(raw).hexdigest()
    return "0x" + digest if kind == "evm" else digest
