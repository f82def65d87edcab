"""Helpers for tests that run the real `botctl` against the shared anvil of the `evm_chain` fixture.

A home here is what an operator sets up for a live EVM chain: a keystore of a fresh key holding
only ETH and USDC (nothing the book would not know of at its first start), a book moved to the
testnet stage, and a config.toml that trades anvil's USDC for the allow-listed tokens through the
canonical Router02. The chain is read back from its blocks and receipts, never from the book, so
that a test compares two independent accounts of what happened.

A module of its own (not conftest) so that test modules import it by a name no other
directory's conftest shadows; import the fixtures it defines into the test module:
`from evmkit import live_home  # noqa: F401` beside
`from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import terminal
from clikit import env_for, put_book_in_stage

PASSWORD = "correct horse battery staple"
USDC = 10**6
FUNDS_USDC = 2_000 * USDC
FUNDS_ETH = 10 * 10**18
GWEI = 10**9


# ---------------------------------------------------------------------------------------------- homes


def sync_w3(chain):
    from web3 import Web3

    return Web3(Web3.HTTPProvider(chain.rpc_url, request_kwargs={"timeout": 30}))


def fresh_account(chain) -> tuple[str, str]:
    """A new key holding only ETH and USDC: nothing the book would not know of at its first start."""
    from eth_account import Account

    account = Account.create()
    w3 = sync_w3(chain)
    chain.rpc("anvil_setBalance", [account.address, hex(FUNDS_ETH)])
    trader = chain.uniswap.trader
    usdc = w3.eth.contract(address=chain.uniswap.tokens["USDC"], abi=chain.uniswap.erc20_abi)
    tx = usdc.functions.transfer(account.address, FUNDS_USDC).build_transaction(
        {"from": trader.address, "nonce": w3.eth.get_transaction_count(trader.address), "gas": 100_000,
         "chainId": chain.chain_id})
    signed = Account.from_key(trader.key).sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))
    assert receipt["status"] == 1
    return account.address, account.key.hex()


def make_home(home: Path, chain, *, rpc_url: str | None = None, tokens: list[str] | None = None,
              settings: str = "") -> str:
    """A home trading `tokens` (symbols of chain.uniswap.tokens or addresses; TKA and TKB by default)
    on `rpc_url` (the chain's own by default); returns our address. `settings`: more top-level
    config lines (max_gas_price_gwei = 5, ...)."""
    from wallet.keystore import write_new

    address, key = fresh_account(chain)
    write_new(home / "keys" / "evm.json", bytes.fromhex(key.removeprefix("0x")), PASSWORD, scrypt_n=2**10)
    put_book_in_stage(home, "testnet")
    u = chain.uniswap
    listed = [u.tokens.get(t, t) for t in (tokens or ["TKA", "TKB"])]
    (home / "config.toml").write_text(
        'dry_run = false\n' + settings +
        '[chains.anvil]\nkind = "evm"\n'
        f'rpc_url = "{rpc_url or chain.rpc_url}"\nchain_id = {chain.chain_id}\nrouter = "{u.router}"\n'
        f'quote_token = "{u.tokens["USDC"]}"\ntokens = {json.dumps(listed)}\n'
        'keystore = "keys/evm.json"\nconfirmations = 1\n')
    return address


@pytest.fixture
def live_home(tmp_path: Path, evm_chain):
    """A home whose book is in the testnet stage, a keystore of a fresh funded key, and a config that
    trades anvil's USDC for TKA and TKB through the canonical Router02: (home, our address)."""
    home = tmp_path / "home"
    return home, make_home(home, evm_chain)


def botctl(home: Path, *args: str, timeout: float = 180, **extra: str) -> subprocess.CompletedProcess:
    """`botctl ARGS` as the operator runs it, in the testnet profile with the keystore's password
    (started warm, web3 already imported: tests/terminal.py)."""
    return terminal.run(args, _env(home, extra), cwd=home.parent, timeout=timeout, evm=True)


def start(home: Path, *args: str, **extra: str):
    """`botctl ARGS` in the background (a run the test drives the chain under); output to files in
    the home's parent, read with `output()`. A Popen's poll, wait, pid and signals."""
    out = open(home.parent / "botctl.out", "w")
    err = open(home.parent / "botctl.err", "w")
    try:
        return terminal.spawn(args, _env(home, extra), cwd=home.parent, stdout=out, stderr=err, evm=True)
    finally:
        out.close()
        err.close()


def output(home: Path) -> tuple[str, str]:
    """stdout and stderr of the last `start`ed botctl."""
    return (home.parent / "botctl.out").read_text(), (home.parent / "botctl.err").read_text()


def _env(home: Path, extra: dict) -> dict:
    return env_for(home, **{"BOTCTL_PROFILE": "testnet", "BOTCTL_EVM_PASSWORD": PASSWORD, **extra})


@contextlib.asynccontextmanager
async def live_engine(home: Path, monkeypatch, signals: Path, **extra: str):
    """`async with live_engine(...) as engine`: the engine `botctl run --signals SIGNALS` builds, built
    in this process for a test that drives its steps, with the environment the CLI tests give botctl
    (set through monkeypatch); closed after, and the book it leaves must audit clean."""
    from engine.kernel import build
    from engine.settings import load_settings

    for name, value in _env(home, extra).items():
        monkeypatch.setenv(name, value)
    engine = await build(load_settings(), str(signals))
    try:
        yield engine
    finally:
        await engine.close()
    audit = botctl(home, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr


def wait_for(check, timeout: float, what: str, every: float = 0.05):
    """Polls `check()` until it returns something true; fails the test naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def stop(proc, home: Path, timeout: float = 30) -> None:
    """SIGTERM a started `botctl run` (a clean stop); fails unless it exits 0."""
    if proc.poll() is None:
        proc.terminate()
    code = proc.wait(timeout)
    assert code == 0, output(home)[1]


def run_until(home: Path, feed: str, done, what: str, timeout: float = 30, linger: float = 0,
              **env: str) -> tuple[str, str]:
    """`botctl run --signals FEED` until `done()` holds of the book (and `linger` seconds more, to see
    that nothing else happens), then a clean stop: a live run as long as its work takes, not a fixed
    duration slept through. Returns its stdout and stderr."""
    proc = start(home, "run", "--signals", str(feed), "--duration", "120", **env)
    try:
        wait_for(lambda: proc.poll() is not None or done(), timeout, what)
        time.sleep(linger)
    finally:
        stop(proc, home)
    assert done(), f"{what}: {orders(home)}"
    return output(home)


# ---------------------------------------------------------------------------------------------- the book


def book(home: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Rows of the book, read-only (works while an engine owns it: WAL readers never block it)."""
    conn = sqlite3.connect(f"file:{home / 'botctl.db'}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def orders(home: Path) -> list[dict]:
    rows = book(home, "SELECT id, intent, token, state, nonce, tx_id, reason FROM orders ORDER BY id")
    return [dict(zip(("id", "intent", "token", "state", "nonce", "tx_id", "reason"), row)) for row in rows]


def in_flight(home: Path) -> list[dict]:
    return [o for o in orders(home) if o["state"] in ("new", "signed", "submitted", "unknown")]


def positions_settled(home: Path, count: int) -> bool:
    """`count` positions open in the book and no order in flight."""
    return len(book(home, "SELECT id FROM positions WHERE state = 'open'")) == count and not in_flight(home)


def book_json(home: Path, *args: str, **extra: str):
    """A read command's --json output, parsed (fails the test on an error exit)."""
    done = botctl(home, *args, "--json", **extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def settled_cleanly(home: Path) -> None:
    """What an operator checks after the dust settles: the audit replays the journal clean, and
    the book's balances equal the chain's to the base unit."""
    audit = botctl(home, "audit")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    reconcile = botctl(home, "reconcile")
    assert reconcile.returncode == 0 and "balances agree" in reconcile.stdout, reconcile.stdout + reconcile.stderr


# ---------------------------------------------------------------------------------------------- the chain


@dataclass(frozen=True)
class SentTx:
    nonce: int
    hash: str
    block: int
    status: int
    fee: int  # wei: gasUsed x effectiveGasPrice


def transactions_from(chain, address: str, after_block: int = 0) -> list[SentTx]:
    """Every transaction `address` sent that is mined in a block after `after_block`, read from the
    blocks themselves, in chain order."""
    w3 = sync_w3(chain)
    found = []
    for number in range(after_block + 1, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            if tx["from"] == address:
                receipt = w3.eth.get_transaction_receipt(tx["hash"])
                found.append(SentTx(tx["nonce"], tx["hash"].to_0x_hex(), number, receipt["status"],
                                    receipt["gasUsed"] * receipt["effectiveGasPrice"]))
    return found


def nonce_counts(chain, address: str) -> tuple[int, int]:
    """(mined, pending) transaction counts of `address`."""
    w3 = sync_w3(chain)
    return w3.eth.get_transaction_count(address, "latest"), w3.eth.get_transaction_count(address, "pending")


def block_number(chain) -> int:
    """The chain's head, read straight from the node."""
    return int(chain.rpc("eth_blockNumber"), 16)


def automine(chain, on: bool) -> None:
    chain.rpc("evm_setAutomine", [on])


def mine(chain) -> None:
    chain.rpc("evm_mine")


def native_balance(chain, address: str) -> int:
    return sync_w3(chain).eth.get_balance(address)


def send_from_our_key(chain, home: Path, address: str) -> None:
    """A zero-value transfer to ourselves signed with the home's key outside botctl (another wallet
    holding the same key); mined (automine on)."""
    from eth_account import Account

    w3 = sync_w3(chain)
    key = Account.decrypt(json.loads((home / "keys" / "evm.json").read_text()), PASSWORD)
    tx = {"to": address, "value": 0, "gas": 21_000, "maxFeePerGas": 10 * GWEI, "maxPriorityFeePerGas": GWEI,
          "nonce": w3.eth.get_transaction_count(address, "pending"), "chainId": chain.chain_id}
    signed = Account.from_key(key).sign_transaction(tx)
    assert w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(signed.raw_transaction))["status"] == 1


def _trader(chain):
    from eth_account import Account

    u = chain.uniswap
    w3 = sync_w3(chain)
    fees = {"from": u.trader.address, "gas": 250_000, "maxFeePerGas": 100 * GWEI, "chainId": chain.chain_id,
            "nonce": w3.eth.get_transaction_count(u.trader.address, "pending")}
    return w3, Account.from_key(u.trader.key), fees


def approve_router_from_another_account(chain) -> None:
    """The trader (a dev account, not ours) lets the router spend its USDC; mined (automine on)."""
    w3, trader, fees = _trader(chain)
    usdc = w3.eth.contract(address=chain.uniswap.tokens["USDC"], abi=chain.uniswap.erc20_abi)
    tx = usdc.functions.approve(chain.uniswap.router, 2**256 - 1).build_transaction(
        {**fees, "maxPriorityFeePerGas": GWEI})
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(trader.sign_transaction(tx).raw_transaction))
    assert receipt["status"] == 1


def buy_from_another_account(chain, token: str, usdc_in: int, tip: int) -> str:
    """The trader swaps `usdc_in` of USDC for `token` with priority fee `tip` (after
    approve_router_from_another_account); sent, not waited for (automine may be off). Returns its hash."""
    w3, trader, fees = _trader(chain)
    u = chain.uniswap
    router = w3.eth.contract(address=u.router, abi=u.router_abi)
    deadline = w3.eth.get_block("latest")["timestamp"] + 3600
    tx = router.functions.swapExactTokensForTokens(usdc_in, 0, [u.tokens["USDC"], u.tokens[token]], trader.address,
                                                   deadline).build_transaction({**fees, "maxPriorityFeePerGas": tip})
    return w3.eth.send_raw_transaction(trader.sign_transaction(tx).raw_transaction).to_0x_hex()


def add_tokens(chain, symbols: list[str]) -> list[str]:
    """Deploys one more 18-decimal test token per symbol, each in a USDC pool at 1 USDC (100,000 of
    each side); returns their addresses. Undone with the chain's snapshot like everything else.

    The shipped test chain has two tokens; the testnet stage allows ten positions open at once,
    one per token, so a test of many orders in flight needs more (see the report of issue 16:
    uniswap.py could deploy these once per session instead)."""
    from chains.evm.uniswap import compile_erc20

    u = chain.uniswap
    w3 = sync_w3(chain)
    deployer = u.deployer.address
    base_fee = w3.eth.get_block("pending")["baseFeePerGas"]
    fees = {"from": deployer, "gas": 5_000_000, "maxFeePerGas": 2 * base_fee + GWEI, "maxPriorityFeePerGas": GWEI}
    side = 100_000 * 10**18
    usdc_side = 100_000 * USDC

    def send(call):
        receipt = w3.eth.wait_for_transaction_receipt(call.transact(fees), timeout=30, poll_latency=0.01)
        assert receipt["status"] == 1
        return receipt

    abi, bytecode = compile_erc20()
    usdc = w3.eth.contract(address=u.tokens["USDC"], abi=u.erc20_abi)
    router = w3.eth.contract(address=u.router, abi=u.router_abi)
    send(usdc.functions.mint(deployer, usdc_side * len(symbols)))
    deadline = w3.eth.get_block("latest")["timestamp"] + 3600
    addresses = []
    for symbol in symbols:
        created = send(w3.eth.contract(abi=abi, bytecode=bytecode).constructor(f"{symbol} (test)", symbol, 18))
        token = w3.eth.contract(address=created["contractAddress"], abi=abi)
        send(token.functions.mint(deployer, side))
        send(token.functions.approve(u.router, side))
        send(router.functions.addLiquidity(u.tokens["USDC"], token.address, usdc_side, side, usdc_side, side,
                                           deployer, deadline))
        addresses.append(token.address)
    return addresses


# ---------------------------------------------------------------------------------------------- a flaky link


SLOW_S = 0.3  # how late a "slow" relay answers each request


@pytest.fixture
def relay(evm_chain):
    """A Relay to the worker's anvil: give botctl `relay.url` as its node, then break it."""
    link = Relay(evm_chain.rpc_url)
    yield link
    link.close()


class Relay:
    """A JSON-RPC relay between botctl and the node, on its own port, that the test can break.

    It speaks just enough HTTP/1.1 to relay one request at a time per connection (keep-alive, as
    aiohttp uses it). Modes: "pass" relays everything; "lose_sends" relays an
    eth_sendRawTransaction to the node and drops the connection before the answer (the node took
    the bytes, botctl never hears it: the classic lost response after acceptance), relaying the
    rest; "slow" relays everything SLOW_S late; "strange_sends" relays a send and answers it with an error nobody can classify;
    "rate_limited" answers every call but eth_chainId with HTTP 429 (a paid endpoint over its quota); "down"
    drops every connection without reading a byte (the node unreachable).
    It works at the HTTP level, not the TCP level, so that a cut can fall exactly after the sends
    and never before the fee reads that precede a signature."""

    def __init__(self, upstream: str):
        from urllib.parse import urlsplit

        target = urlsplit(upstream)
        self._upstream = (target.hostname, target.port)
        self.mode = "pass"
        self.sends_lost = 0
        self.credentials: str | None = None  # "user:secret": a request without them as HTTP Basic gets 401
        self.unauthorized = 0
        self.methods: dict[str, int] = {}  # JSON-RPC calls relayed, by method
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._stop = False
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="relay")
        self._thread.start()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self._server.close()
        with self._lock:
            for client in self._clients:
                _shut(client)

    def set(self, mode: str) -> None:
        assert mode in ("pass", "slow", "lose_sends", "strange_sends", "down", "rate_limited")
        self.mode = mode
        if mode == "down":  # connections kept alive from before are cut too
            with self._lock:
                for client in self._clients:
                    _shut(client)
                self._clients.clear()

    def _serve(self) -> None:
        while not self._stop:
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            if self.mode == "down":
                _shut(client)
                continue
            with self._lock:
                self._clients.append(client)
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        reader = client.makefile("rb")
        try:
            while not self._stop:
                head = []
                line = reader.readline()
                if not line:
                    return
                while line not in (b"\r\n", b"\n", b""):
                    head.append(line)
                    line = reader.readline()
                length = next((int(h.split(b":", 1)[1]) for h in head if h.lower().startswith(b"content-length")), 0)
                body = reader.read(length)
                if self.mode == "down":
                    return
                if self.credentials is not None and not _authorized(head, self.credentials):
                    self.unauthorized += 1
                    client.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                    continue
                if self.mode == "slow":
                    time.sleep(SLOW_S)
                self._count(body)
                if self.mode == "rate_limited" and b'"eth_chainId"' not in body.replace(b" ", b""):
                    client.sendall(b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n")
                    continue
                answer = self._forward(body)
                if self.mode == "lose_sends" and b"eth_sendRawTransaction" in body:
                    self.sends_lost += 1
                    return
                if self.mode == "strange_sends" and b"eth_sendRawTransaction" in body:
                    self.sends_lost += 1  # the node took the bytes; its answer is words nobody knows
                    answer = json.dumps({"jsonrpc": "2.0", "id": json.loads(body)["id"], "error": {
                        "code": -32000, "message": "the mempool is feeling pensive today"}}).encode()
                if self.mode == "down":
                    return
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               b"Content-Length: %d\r\n\r\n" % len(answer) + answer)
        except OSError:
            return
        finally:
            reader.close()
            _shut(client)
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)

    def _count(self, body: bytes) -> None:
        try:
            calls = json.loads(body)
        except ValueError:
            return
        for call in calls if isinstance(calls, list) else [calls]:
            method = str(call.get("method")) if isinstance(call, dict) else "?"
            self.methods[method] = self.methods.get(method, 0) + 1

    def _forward(self, body: bytes) -> bytes:
        with socket.create_connection(self._upstream, timeout=10) as up:
            up.sendall(b"POST / HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\nConnection: close\r\n"
                       b"Content-Length: %d\r\n\r\n" % len(body) + body)
            data = b""
            while chunk := up.recv(65536):
                data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if b"chunked" in head.lower():
            return _unchunk(rest)
        return rest


def _authorized(head: list[bytes], credentials: str) -> bool:
    import base64

    wanted = base64.b64encode(credentials.encode())  # case matters in base64; not in the header's words
    for line in head:
        name, _, value = line.partition(b":")
        scheme, _, token = value.strip().partition(b" ")
        if name.strip().lower() == b"authorization" and scheme.lower() == b"basic" and token.strip() == wanted:
            return True
    return False


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2:]
    return out


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
