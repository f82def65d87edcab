"""A stand-in Solana JSON-RPC endpoint on loopback that answers `getGenesisHash` only.

A mock, and it says so: the network guard asks an endpoint which cluster it is by its
genesis hash, and no local runtime here has mainnet-beta's (LiteSVM has no genesis hash).
Everything else the guard does (HTTP, JSON-RPC framing, classification) is real.
"""

from __future__ import annotations

from chains import jsonrpc

MAINNET_BETA = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"


def serve(genesis_hash: str = MAINNET_BETA):
    def answer(method: str, _params: list) -> dict:
        if method == "getGenesisHash":
            return {"result": genesis_hash}
        return {"error": {"code": -32601, "message": "Method not found"}}

    return jsonrpc.serve(answer)
