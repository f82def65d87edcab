"""A JSON-RPC 2.0 server on loopback for test chains: `serve(answer)` yields its URL.

`answer(method, params) -> dict` returns {"result": ...} or {"error": {...}}; calls are
serialized (the chains behind it are not thread-safe)."""

from __future__ import annotations

import json
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@contextmanager
def serve(answer: Callable[[str, list], dict], peek: Callable[[str, dict], None] | None = None):
    """`peek(path, headers)`, if given, sees each request's path and headers (what a client sent besides
    the call: credentials, say)."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's name)
            if peek is not None:
                peek(self.path, dict(self.headers))
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                reply = answer(body["method"], body.get("params", []))
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
