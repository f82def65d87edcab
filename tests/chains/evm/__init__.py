"""A real EVM test chain: anvil from npm (anvil.py), the canonical Uniswap V2 on it
(uniswap.py), and the pytest fixtures that start and stop it (fixtures.py)."""
