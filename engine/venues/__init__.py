"""The venues: one port per chain (clock and height, our balances, marks, the executor), one
folder per venue kind behind it: paper/ (the simulated world), evm/ (Uniswap V2 routers on
any EVM chain), solana/ (Jupiter). The kernel knows only the port."""
