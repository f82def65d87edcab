"""An in-process EVM (eth-tester's py-evm backend, through web3's EthereumTesterProvider)
served over JSON-RPC on loopback, with the chain id a test asks for.

Real: py-evm executes; web3's provider answers the JSON-RPC methods. The only
change is `eth_chainId`, which web3's tester endpoints hard-code: it reports
the backend chain's id, set here (that is the point of a network-guard test).
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                reply = evm.make_request(body["method"], body.get("params", []))
            data = json.dumps({"jsonrpc": "2.0", "id": body.get("id"), **_plain(reply)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _plain(reply) -> dict:
    out = {}
    for key in ("result", "error"):
        if key in reply:
            value = reply[key]
            out[key] = value.hex() if isinstance(value, (bytes, bytearray)) else value
    return out
