"""Start guards: which network an endpoint is on, and whether this stage may trade there.

`classify_*` and `network_problems`/`live_problems` are pure (tested by
table); `probe` asks an endpoint over plain JSON-RPC (`eth_chainId`,
`getGenesisHash`) with the standard library, so a guard never pays for
importing web3 or solana. A network is "testnet" only when known to be one
(or a local dev chain); anything unknown is treated as a possible mainnet.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

EVM_MAINNETS = {
    1: "Ethereum mainnet", 10: "OP mainnet", 56: "BNB Smart Chain", 100: "Gnosis", 137: "Polygon",
    250: "Fantom", 324: "zkSync Era", 5000: "Mantle", 8453: "Base", 42161: "Arbitrum One",
    43114: "Avalanche C-Chain", 59144: "Linea", 81457: "Blast", 534352: "Scroll",
}
EVM_TESTNETS = {
    11155111: "Sepolia", 17000: "Holesky", 560048: "Hoodi", 84532: "Base Sepolia", 421614: "Arbitrum Sepolia",
    11155420: "OP Sepolia", 80002: "Polygon Amoy", 97: "BSC testnet", 43113: "Avalanche Fuji",
    31337: "local dev chain (anvil/hardhat)", 1337: "local dev chain", 131277322940537: "eth-tester",
}
SOLANA_GENESIS = {
    "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d": ("mainnet", "Solana mainnet-beta"),
    "EtWTRABZaYq6iMfeYKouRu166VU2xqa1wcaWoxPkrZBG": ("testnet", "Solana devnet"),
    "4uhcVJyU9pJkvQyS88uRDiswHXSCkY3zQawwpjk2NsNY": ("testnet", "Solana testnet"),
}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass(frozen=True)
class Network:
    network: str  # testnet | mainnet
    label: str  # what it is, for messages
    chain_id: int | None = None  # EVM only


def classify_evm(chain_id: int) -> Network:
    if chain_id in EVM_TESTNETS:
        return Network("testnet", f"chain id {chain_id} ({EVM_TESTNETS[chain_id]})", chain_id)
    name = EVM_MAINNETS.get(chain_id, "not a known test network")
    return Network("mainnet", f"chain id {chain_id} ({name})", chain_id)


def classify_solana(genesis_hash: str, url: str) -> Network:
    known = SOLANA_GENESIS.get(genesis_hash)
    if known is not None:
        return Network(known[0], f"genesis {genesis_hash} ({known[1]})")
    if urlparse(url).hostname in LOOPBACK:  # a local validator: its genesis is its own
        return Network("testnet", f"genesis {genesis_hash} (a local validator)")
    return Network("mainnet", f"genesis {genesis_hash} (not a known test network)")


def network_problems(stage, found: dict[str, Network], configured_ids: dict[str, int | None]) -> list[str]:
    """Every configured chain on a network this stage may not trade on, or not the one configured."""
    out = []
    for name, net in sorted(found.items()):
        if net.network not in stage.networks:
            out.append(f"chains.{name}: the endpoint is {net.label}, a {net.network} network; "
                       f"stage {stage.name} trades on {' and '.join(stage.networks)} only")
        want = configured_ids.get(name)
        if want is not None and net.chain_id is not None and want != net.chain_id:
            out.append(f"chains.{name}: chain_id is {want} but the endpoint is {net.label}")
    return out


def live_problems(stage, settings, found: dict[str, Network], keys: dict[str, str | None]) -> list[str]:
    """What stands between these settings and live trading: the stage, dry run, keys."""
    out = []
    mainnet = [name for name, net in found.items() if net.network == "mainnet"]
    if mainnet and not stage.live_funds:
        out.append(f"stage {stage.name} does not allow live funds (promote with botctl rollout)")
    if not settings.dry_run:
        for name, problem in sorted(keys.items()):
            if problem:
                out.append(f"chains.{name}: {problem}")
    return out


def key_problem(home: Path, chain) -> str | None:
    """Is the chain's key file present and private? (Its content is never read into a message.)
    EVM: wallet.keystore.check, the very check an unlock makes, so the live guard, `botctl doctor`
    and `botctl keys show` say the same thing. Nothing is decrypted here."""
    if chain.kind == "evm":
        from wallet.keystore import KeystoreError, check, resolve

        if not chain.keystore:
            return "no keystore configured"
        try:
            check(resolve(home, chain.keystore))
        except KeystoreError as exc:
            return str(exc)
        return None
    rel, what = chain.keypair, "keypair"
    if not rel:
        return f"no {what} configured"
    path = (Path(home) / rel) if not Path(rel).is_absolute() else Path(rel)
    if not path.exists():
        return f"{what} {path} not found"
    if path.stat().st_mode & 0o077:
        return f"{what} {path} is readable by others (chmod 600 {path})"
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return f"{what} {path} is not a JSON key file"
    return None


def _rpc(url: str, method: str, timeout: float, params: list | None = None) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}).encode()
    headers = {"Content-Type": "application/json"}
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None:  # user:secret@host: urllib would take it for a host; send it as HTTP Basic
        import base64

        secret = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
    request = urllib.request.Request(url, body, headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (operator's endpoint)
        reply = json.loads(response.read())
    if "error" in reply:
        error = reply["error"]
        raise RpcError(str(error.get("message", "error") if isinstance(error, dict) else error))
    return reply["result"]


class RpcError(ValueError):
    """The endpoint answered, with a JSON-RPC error (a rate limit, a method it does not serve)."""


def probe(chain, timeout: float = 5.0) -> Network:
    """Ask the endpoint which network it is. Raises OSError/ValueError when it cannot tell."""
    if not chain.rpc_url:
        raise ValueError("no rpc_url configured")
    if chain.kind == "evm":
        return classify_evm(int(_rpc(chain.rpc_url, "eth_chainId", timeout), 16))
    return classify_solana(str(_rpc(chain.rpc_url, "getGenesisHash", timeout)), chain.rpc_url)


def pending_counts(settings, accounts: list[tuple[str, str]], timeout: float = 3.0
                   ) -> tuple[dict[tuple[str, str], int], dict[str, str]]:
    """The chain's pending transaction count of each EVM (chain, address), asked now (what
    `botctl nonces` compares the book with), and per chain that could not answer, why (never its URL)."""
    counts, problems = {}, {}
    for chain, address in accounts:
        spec = settings.chains.get(chain)
        if spec is None or spec.kind != "evm" or not spec.rpc_url or chain in problems:
            continue
        try:
            counts[(chain, address)] = int(str(_rpc(spec.rpc_url, "eth_getTransactionCount", timeout,
                                                    [address, "pending"])), 16)
        except Exception as exc:
            problems[chain] = f"endpoint {_safe(spec.rpc_url)} unreachable: {_why(exc)}"
    return counts, problems


def probe_all(settings, timeout: float = 5.0) -> tuple[dict[str, Network], list[str]]:
    found, problems = {}, []
    for name, chain in sorted(settings.chains.items()):
        try:
            found[name] = probe(chain, timeout)
        except Exception as exc:  # whatever went wrong, say so in one line without echoing the URL
            problems.append(f"chains.{name}: endpoint {_safe(chain.rpc_url)} unreachable: {_why(exc)}")
    return found, problems


def _why(exc: BaseException) -> str:
    """The reason an endpoint failed, never its URL (API keys live in URLs): an OS error's own
    text (refused, timed out, unknown host), else only the kind of error."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, RpcError):
        from engine.redact import scrub

        return f"it answered {scrub(str(exc))!r}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    if isinstance(reason, TimeoutError) or "timed out" in str(reason):
        return "timed out"
    return f"{type(exc).__name__} (not a JSON-RPC endpoint?)"


def _safe(url: str | None) -> str:
    from engine.settings import safe_url

    return safe_url(url)


def live_funds(settings) -> bool:
    """Would this start move real (mainnet) funds? Then the console asks for a typed confirmation."""
    from engine.stages import stage

    return settings.mode == "live" and not settings.dry_run and stage(settings.profile).live_funds


async def check_live(settings) -> dict[str, Network]:
    """Mode live: refuse, with the first reason, anything the stage or the endpoints forbid; else
    what each chain's endpoint says it is."""
    import asyncio

    from engine.core.stages import first_of
    from engine.settings import SettingsError, Unreachable
    from engine.stages import stage

    current = stage(settings.profile)
    if not settings.chains:
        raise SettingsError("mode live needs chains: configure [chains.<name>] (see .env.example), "
                            "or run paper (--profile paper)")
    found, unreachable = await asyncio.to_thread(probe_all, settings)
    # a setting that is wrong first (exit 2): a node that did not answer (1) must not hide it
    problems = network_problems(current, found, {n: c.chain_id for n, c in settings.chains.items()}) + unreachable
    keys = {name: key_problem(settings.home, chain) for name, chain in settings.chains.items()}
    if not problems:  # a network the stage forbids already says why; then funds and keys
        problems += live_problems(current, settings, found, keys)
    if problems:
        raise (Unreachable if problems[0] in unreachable else SettingsError)(first_of(problems))
    return found


async def live_mode(settings) -> str:
    """The guards a live start passes before anything is opened (engine/venues/choose.py then says
    which venues it can trade), and the network it trades: mainnet if any chain is one, else
    testnet (what its rollout evidence counts for)."""
    found = await check_live(settings)
    return "mainnet" if any(n.network == "mainnet" for n in found.values()) else "testnet"
