"""EVM chains: Uniswap-V2-style router swaps through web3's AsyncWeb3 (imported lazily: web3
costs 0.75 s to import, and only a live EVM chain needs it)."""
