"""An in-process EVM (eth-tester's py-evm backend, through web3's EthereumTesterProvider)
served over JSON-RPC on loopback, with the chain id a test asks for.

Real: py-evm executes; web3's provider answers the JSON-RPC methods. The only
change is `eth_chainId`, which web3's tester endpoints hard-code: it reports
the backend chain's id, set here (that is the point of a network-guard test).
"""

from __future__ import annotations

from contextlib import contextmanager

from chains import jsonrpc


def provider(chain_id: int):
    import copy

    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider
    from web3.providers.eth_tester.defaults import API_ENDPOINTS

    backend = PyEVMBackend()
    backend.chain.chain_id = chain_id
    endpoints = copy.copy(API_ENDPOINTS)
    endpoints["eth"] = dict(API_ENDPOINTS["eth"], chainId=lambda *_args: hex(backend.chain.chain_id))
    return EthereumTesterProvider(EthereumTester(backend), api_endpoints=endpoints)


@contextmanager
def serve(chain_id: int):
    """Yields the endpoint URL of an in-process EVM whose chain id is `chain_id`."""
    evm = provider(chain_id)
    with jsonrpc.serve(lambda method, params: _plain(evm.make_request(method, params))) as url:
        yield url


def _plain(reply) -> dict:
    out = {}
    for key in ("result", "error"):
        if key in reply:
            value = reply[key]
            out[key] = value.hex() if isinstance(value, (bytes, bytearray)) else value
    return out
