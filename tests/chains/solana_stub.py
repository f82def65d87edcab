"""A stand-in Solana JSON-RPC endpoint on loopback that answers `getGenesisHash` only.

A mock, and it says so: the network guard asks an endpoint which cluster it is by its
genesis hash, and no local runtime here has mainnet-beta's (LiteSVM has no genesis hash).
Everything else the guard does (HTTP, JSON-RPC framing, classification) is real.
"""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAINNET_BETA = "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d"


@contextmanager
def serve(genesis_hash: str = MAINNET_BETA):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if body.get("method") == "getGenesisHash":
                reply = {"result": genesis_hash}
            else:
                reply = {"error": {"code": -32601, "message": "Method not found"}}
            data = json.dumps({"jsonrpc": "2.0", "id": body.get("id"), **reply}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
