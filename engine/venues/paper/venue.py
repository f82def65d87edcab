"""The paper venue: the chain of paper mode, in its own SQLite file.

It is the independent truth the book is checked against, so it keeps its own
balances, accounts (with EVM nonces), block height, prices and every
transaction it ever accepted. It follows the chain rules of DESIGN section 8:
a transaction has an id fixed by its signed bytes; an EVM transaction lands
only at its account's next nonce and a lower nonce is refused ("nonce too
low"); a Solana transaction can never land after its expiry height; a swap
that misses its minimum output lands as failed and still pays its fee.

Synchronous on purpose: the executor runs it on a thread of its own. Every
write is one transaction, so a kill -9 leaves it as a chain would be.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from engine.core.money import bps_of, quote_for, to_units, tokens_for
from engine.venues.paper.market import PaperChain, rng, step_price
from storage import check_private
from wallet.paper import PaperSigner, SignatureError, tx_id

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS prices (chain TEXT, token TEXT, price TEXT NOT NULL, PRIMARY KEY (chain, token)) STRICT;
CREATE TABLE IF NOT EXISTS balances (
    chain TEXT, address TEXT, asset TEXT, amount TEXT NOT NULL, PRIMARY KEY (chain, address, asset)) STRICT;
CREATE TABLE IF NOT EXISTS accounts (chain TEXT, address TEXT, nonce INTEGER NOT NULL,
    PRIMARY KEY (chain, address)) STRICT;
CREATE TABLE IF NOT EXISTS txs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    chain TEXT NOT NULL,
    sender TEXT NOT NULL,
    nonce INTEGER,
    raw BLOB NOT NULL,
    received INTEGER NOT NULL,
    lands INTEGER NOT NULL,
    expiry INTEGER,
    status TEXT NOT NULL,
    result TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS txs_pending ON txs (status) WHERE status = 'pending';
"""

BLOCK_MS = 1000  # simulated milliseconds per block, unless the venue was created with another length
EVM_BASE_FEE = 50_000_000  # wei per gas (0.05 gwei)
EVM_TIP = 1_000_000
EVM_GAS_LIMIT = 200_000
EVM_GAS_SWAP = 120_000
EVM_GAS_REVERT = 31_500
EVM_GAS_TRANSFER = 21_000
SOL_BASE_FEE = 5_000
SOL_PRIORITY_FEE = 10_000


class VenueMismatch(Exception):
    """The venue on disk is not the one the settings describe."""


class VenueGone(VenueMismatch):
    """The book has traded with a venue that is no longer on disk. A new one would be another chain:
    entries denied for ever, exits never settled, reconciliation 'accepting' its genesis as income."""


class VenueRejected(Exception):
    """The venue refused a transaction before accepting it: it can never land."""


@dataclass(frozen=True, slots=True)
class VenueParams:
    seed: int | None  # None: the stored seed (or 1 for a new venue)
    fee_bps: int = 30
    volatility_bps: int = 40
    slippage_noise_bps: int = 60
    latency_blocks: int = 2
    deposit_usd: Decimal = Decimal(1000)
    native_deposit: Decimal = Decimal(5)
    must_exist: bool = False  # the book has recorded this venue's genesis: never create another
    block_ms: int | None = None  # None: the stored length (or BLOCK_MS for a new venue)


def network_fee_cap(kind: str) -> int:
    """The most one transaction may cost in native units (what an order reserves)."""
    if kind == "evm":
        return EVM_GAS_LIMIT * (2 * EVM_BASE_FEE + EVM_TIP)
    return SOL_BASE_FEE + SOL_PRIORITY_FEE


class PaperVenue:
    def __init__(self, path: Path, chains: dict[str, PaperChain], params: VenueParams):
        self.path = Path(path)
        self.chains = chains
        self.params = params
        self.seed = params.seed if params.seed is not None else 1
        self.signers: dict[str, PaperSigner] = {}
        self._conn: sqlite3.Connection | None = None
        self.height = 0
        self.genesis_ms = 0
        self.block_ms = params.block_ms if params.block_ms is not None else BLOCK_MS

    # ---- lifecycle

    def open(self) -> "PaperVenue":
        check_private(self.path)  # whoever writes the venue decides what the book reconciles to
        fresh = not self.path.exists()
        if self.params.must_exist and (fresh or self.path.stat().st_size == 0):
            raise self._gone("missing" if fresh else "empty")
        old = os.umask(0o077)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        finally:
            os.umask(old)
        if fresh:
            self.path.chmod(0o600)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.executescript(SCHEMA)
        self._conn = conn
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        if not meta:
            if self.params.must_exist:
                self.close()
                raise self._gone("without its genesis")
            self._genesis()
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        elif self.params.seed is not None and int(meta["seed"]) != self.params.seed:
            raise VenueMismatch(
                f"the paper venue at {self.path} was created with seed {meta['seed']}, not {self.params.seed} "
                "(drop --seed to continue it, or use a fresh BOTCTL_HOME for a new market)"
            )
        stored_ms = _block_ms(meta)
        if self.params.block_ms is not None and stored_ms != self.params.block_ms:
            # Another length would move the clock of every block mined so far: time would jump.
            raise VenueMismatch(
                f"the paper venue at {self.path} was created with {stored_ms} ms blocks, not {self.params.block_ms} "
                "(drop BOTCTL_PAPER__BLOCK_MS to continue it, or use a fresh BOTCTL_HOME for a new market)"
            )
        self.seed = int(meta["seed"])
        self.block_ms = stored_ms
        self.signers = {name: PaperSigner(self.seed, name, c.address) for name, c in self.chains.items()}
        self.height = int(meta["height"])
        self.genesis_ms = int(meta["genesis_ms"])
        return self

    def _gone(self, how: str) -> VenueGone:
        return VenueGone(
            f"the paper venue {self.path} is {how}, but the book has traded with it: restore that file, "
            "or start a fresh BOTCTL_HOME (a new venue would not hold the book's orders and funds)")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _genesis(self) -> None:
        conn, p = self._conn, self.params
        with _txn(conn):
            conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                ("seed", str(self.seed)), ("height", "0"), ("genesis_ms", str(int(time.time() * 1000)))])
            if self.block_ms != BLOCK_MS:  # a venue of the default length reads as before
                conn.execute("INSERT INTO meta VALUES ('block_ms', ?)", (str(self.block_ms),))
            for chain in self.chains.values():
                conn.executemany("INSERT INTO prices VALUES (?, ?, ?)",
                                 [(chain.name, t.symbol, str(t.price)) for t in chain.tokens])
                quote = to_units(p.deposit_usd, chain.quote_decimals)
                native = to_units(p.native_deposit, chain.native_decimals)
                conn.executemany("INSERT INTO balances VALUES (?, ?, ?, ?)", [
                    (chain.name, chain.address, "quote", str(quote)),
                    (chain.name, chain.address, "native", str(native)),
                ])
                conn.executemany("INSERT INTO meta VALUES (?, ?)", [
                    (f"genesis:{chain.name}:quote", str(quote)), (f"genesis:{chain.name}:native", str(native))])
                conn.execute("INSERT INTO accounts VALUES (?, ?, 0)", (chain.name, chain.address))

    # ---- reading

    def genesis_deposits(self) -> dict[tuple[str, str], int]:
        rows = self._conn.execute("SELECT key, value FROM meta WHERE key LIKE 'genesis:%'").fetchall()
        return {tuple(key.split(":")[1:]): int(value) for key, value in rows}

    @staticmethod
    def stored_now_ms(path: Path) -> int | None:
        """The venue's clock as last committed, read-only (None: no venue yet)."""
        if not Path(path).exists():
            return None
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=5)
        try:
            meta = dict(conn.execute(
                "SELECT key, value FROM meta WHERE key IN ('height', 'genesis_ms', 'block_ms')").fetchall())
        except sqlite3.Error:
            return None
        finally:
            conn.close()
        if "height" not in meta or "genesis_ms" not in meta:
            return None
        return int(meta["genesis_ms"]) + int(meta["height"]) * _block_ms(meta)

    def now_ms(self, height: int | None = None) -> int:
        return self.genesis_ms + (self.height if height is None else height) * self.block_ms

    def prices(self, chain: str) -> dict[str, Decimal]:
        rows = self._conn.execute("SELECT token, price FROM prices WHERE chain = ? ORDER BY token", (chain,))
        return {token: Decimal(price) for token, price in rows}

    def balances(self, chain: str, address: str | None = None) -> dict[str, int]:
        address = address or self.chains[chain].address
        rows = self._conn.execute("SELECT asset, amount FROM balances WHERE chain = ? AND address = ?",
                                  (chain, address))
        return {asset: int(amount) for asset, amount in rows}

    def account_nonce(self, chain: str, address: str | None = None) -> int:
        address = address or self.chains[chain].address
        row = self._conn.execute("SELECT nonce FROM accounts WHERE chain = ? AND address = ?",
                                 (chain, address)).fetchone()
        return row[0] if row else 0

    def lookup(self, tx: str) -> dict | None:
        row = self._conn.execute("SELECT status, result, expiry, lands FROM txs WHERE id = ?", (tx,)).fetchone()
        if row is None:
            return None
        status, result, expiry, lands = row
        out = json.loads(result) if result else {}
        out.update(status=status, expiry=expiry, lands=lands)
        return out

    def transactions(self) -> list[dict]:
        rows = self._conn.execute("SELECT id, chain, status, result FROM txs ORDER BY seq").fetchall()
        return [dict(id=i, chain=c, status=s, **(json.loads(r) if r else {})) for i, c, s, r in rows]

    # ---- writing

    def submit(self, raw: bytes) -> str:
        """Accept a signed transaction (idempotent: the same bytes again are 'already known')."""
        try:
            envelope = json.loads(raw)
            chain = self.chains[envelope["body"]["chain"]]
        except (ValueError, KeyError, TypeError):
            raise VenueRejected("malformed transaction") from None
        try:
            body = self.signers[chain.name].verify(raw)
        except SignatureError as exc:
            raise VenueRejected(str(exc)) from None
        ident = tx_id(chain.kind, raw)
        conn = self._conn
        if conn.execute("SELECT 1 FROM txs WHERE id = ?", (ident,)).fetchone():
            return ident  # already known
        if chain.kind == "solana" and self.height > body["expiry"]:
            raise VenueRejected("blockhash not found")
        if chain.kind == "evm" and body["nonce"] < self.account_nonce(chain.name, body["from"]):
            raise VenueRejected("nonce too low")
        delay = 1 + rng(self.seed, "latency", ident).randint(0, self.params.latency_blocks - 1)
        with _txn(conn):
            conn.execute(
                "INSERT INTO txs (id, chain, sender, nonce, raw, received, lands, expiry, status)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending')",
                (ident, chain.name, body["from"], body.get("nonce"), raw, self.height, self.height + delay,
                 body.get("expiry")),
            )
        return ident

    def advance(self) -> int:
        """Mine one block: prices move, due transactions land. Returns the new height."""
        conn, p = self._conn, self.params
        height = self.height + 1
        with _txn(conn):
            for chain in self.chains.values():
                for token, price in self.prices(chain.name).items():
                    new = step_price(self.seed, chain.name, token, height, price, p.volatility_bps)
                    conn.execute("UPDATE prices SET price = ? WHERE chain = ? AND token = ?",
                                 (str(new), chain.name, token))
            due = conn.execute(
                "SELECT id, chain, sender, nonce, raw, expiry FROM txs WHERE status = 'pending' AND lands <= ?"
                " ORDER BY nonce, seq", (height,)).fetchall()
            progress = True
            while progress:
                progress = False
                for row in list(due):
                    if self._settle(height, *row):
                        due.remove(row)
                        progress = True
            conn.execute("UPDATE meta SET value = ? WHERE key = 'height'", (str(height),))
        self.height = height
        return height

    def _settle(self, height: int, ident: str, chain_name: str, sender: str, nonce, raw: bytes, expiry) -> bool:
        """Land or end one due transaction; False if it must keep waiting (EVM nonce gap)."""
        conn = self._conn
        chain = self.chains[chain_name]
        body = json.loads(raw)["body"]
        if chain.kind == "solana" and height > expiry:
            self._finish(ident, "expired", {"height": height, "reason": "block height exceeded"})
            return True
        if chain.kind == "evm":
            current = self.account_nonce(chain_name, sender)
            if nonce > current:
                return False
            if nonce < current:
                self._finish(ident, "dropped", {"height": height, "reason": "nonce taken by another transaction"})
                return True
            conn.execute("UPDATE accounts SET nonce = nonce + 1 WHERE chain = ? AND address = ?",
                         (chain_name, sender))
        if body["side"] == "noop":
            paid = min(EVM_GAS_TRANSFER * (EVM_BASE_FEE + EVM_TIP), self.balances(chain_name, sender).get("native", 0))
            self._credit(chain_name, sender, "native", -paid)
            self._finish(ident, "landed", {"height": height, "amount_in": 0, "amount_out": 0, "fee": 0,
                                           "network_fee": paid, "ok": True})
            return True
        result = self._swap(chain, sender, body, ident, height)
        self._finish(ident, "landed" if result["ok"] else "failed", result)
        return True

    def _swap(self, chain: PaperChain, sender: str, body: dict, ident: str, height: int) -> dict:
        p = self.params
        price = self.prices(chain.name)[body["token"]]
        token = next(t for t in chain.tokens if t.symbol == body["token"])
        noise = Decimal(rng(self.seed, "slippage", ident).randint(0, p.slippage_noise_bps))
        bal = self.balances(chain.name, sender)
        amount_in, minimum = int(body["amount_in"]), int(body["min_out"])
        if chain.kind == "evm":
            gas_price = EVM_BASE_FEE + EVM_TIP
            fee_ok, fee_fail = EVM_GAS_SWAP * gas_price, EVM_GAS_REVERT * gas_price
        else:
            fee_ok = fee_fail = SOL_BASE_FEE + SOL_PRIORITY_FEE
        result = {"height": height, "amount_in": 0, "amount_out": 0, "fee": 0}
        if body["side"] == "buy":
            exec_price = price * (10_000 + noise) / 10_000
            fee = bps_of(amount_in, p.fee_bps)
            out = tokens_for(amount_in - fee, exec_price, chain.quote_decimals, token.decimals)
            spend_asset, spend, get_asset, get, received = "quote", amount_in, token.symbol, out, out
        else:
            exec_price = price * (10_000 - noise) / 10_000
            gross = quote_for(amount_in, exec_price, chain.quote_decimals, token.decimals)
            fee = bps_of(gross, p.fee_bps)
            spend_asset, spend, get_asset, get, received = token.symbol, amount_in, "quote", gross - fee, gross - fee
            out = gross
        native = bal.get("native", 0)
        reason = None
        if native < fee_ok:
            reason = "insufficient funds for fee"
        elif bal.get(spend_asset, 0) < spend:
            reason = "insufficient funds"
        elif received < minimum:
            reason = f"slippage tolerance exceeded: {received} < {minimum}"
        if reason is not None:
            paid = min(fee_fail, native)
            self._credit(chain.name, sender, "native", -paid)
            result.update(ok=False, reason=reason, network_fee=paid)
            return result
        self._credit(chain.name, sender, "native", -fee_ok)
        self._credit(chain.name, sender, spend_asset, -spend)
        self._credit(chain.name, sender, get_asset, get)
        result.update(ok=True, amount_in=amount_in, amount_out=out, fee=fee, network_fee=fee_ok,
                      price=str(exec_price))
        return result

    def _credit(self, chain: str, address: str, asset: str, delta: int) -> None:
        conn = self._conn
        row = conn.execute("SELECT amount FROM balances WHERE chain = ? AND address = ? AND asset = ?",
                           (chain, address, asset)).fetchone()
        amount = (int(row[0]) if row else 0) + delta
        conn.execute("INSERT INTO balances VALUES (?, ?, ?, ?) ON CONFLICT (chain, address, asset)"
                     " DO UPDATE SET amount = excluded.amount", (chain, address, asset, str(amount)))

    def _finish(self, ident: str, status: str, result: dict) -> None:
        self._conn.execute("UPDATE txs SET status = ?, result = ? WHERE id = ?",
                           (status, json.dumps(result, sort_keys=True), ident))


def _block_ms(meta: dict[str, str]) -> int:
    """The block length a venue was created with (venues of the default length do not store it)."""
    return int(meta.get("block_ms", BLOCK_MS))


class _txn:
    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, _value, _tb):
        self.conn.execute("COMMIT" if kind is None else "ROLLBACK")
        return False
