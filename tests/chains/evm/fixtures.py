"""pytest fixtures for a real EVM node with Uniswap V2 deployed. Import them into a test
module: `from chains.evm.fixtures import anvil_chain, evm_chain  # noqa: F401`.

`anvil_chain` is session-scoped, so each pytest-xdist worker starts one anvil (on its own
free port) and deploys once (~1 s, or ~3 s when ERC20.vy must be compiled). `evm_chain`
hands a test the same chain and reverts it to a snapshot afterwards, so tests sharing a
worker's node see neither each other's trades nor each other's nonces.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from chains.evm.anvil import Anvil, ensure_installed
from chains.evm.uniswap import UniswapV2, deploy


@dataclass(frozen=True)
class EvmChain:
    node: Anvil  # .pid, .rpc_url, .log()
    uniswap: UniswapV2

    @property
    def rpc_url(self) -> str:
        return self.node.rpc_url

    @property
    def chain_id(self) -> int:
        return self.node.chain_id

    def rpc(self, method: str, params: list | None = None):
        """A sync JSON-RPC call for test setup (evm_mine, anvil_setBalance, ...); raises on an error reply."""
        from web3 import Web3

        reply = Web3.HTTPProvider(self.rpc_url).make_request(method, params or [])
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    @contextmanager
    def reverted(self):
        """Whatever happens inside is undone after: pool emptied, automine on (interval mining
        off), and state, blocks and nonces back to the snapshot taken on entry."""
        snapshot = self.rpc("evm_snapshot")
        try:
            yield self
        finally:
            # Pool and state first, mining mode last: anvil mines in the background, and a
            # block mined from a leftover transaction could land after the revert.
            self.rpc("anvil_dropAllTransactions")
            if self.rpc("evm_revert", [snapshot]) is not True:
                raise RuntimeError("could not revert the EVM test chain to its snapshot")
            self.rpc("evm_setIntervalMining", [0])
            self.rpc("evm_setAutomine", [True])


@pytest.fixture(scope="session")
def anvil_chain(request):
    """An anvil with automine on, Uniswap V2 and the test tokens deployed, the trader funded.
    Installs anvil first if this checkout has not (npm ci, a few seconds). Stopped (SIGTERM,
    then SIGKILL) when the worker's session ends."""
    ensure_installed(say=lambda message: _tell(request.config, message))
    with Anvil() as node:
        yield EvmChain(node, deploy(node.rpc_url, node.keys))


@pytest.fixture
def evm_chain(anvil_chain: EvmChain):
    """anvil_chain, put back afterwards (see EvmChain.reverted)."""
    with anvil_chain.reverted():
        yield anvil_chain


def _tell(config, message: str) -> None:
    """Prints past pytest's capture (which holds even fd 2, in xdist workers too)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is None:
        print(message, file=sys.stderr, flush=True)
        return
    with capture.global_and_fixture_disabled():
        print(message, file=sys.stderr, flush=True)
