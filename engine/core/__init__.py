"""The functional core: the rules and state transitions, pure functions of their arguments.

Everything that decides (the book, the decider, risk, exits, money, stages,
evidence, operator commands, reconciliation's arithmetic) lives here and takes
time and prices as arguments; it never reads a clock, a file, a socket or the
database. The shell around it (the sequencer, the driver, the venues, storage)
does the IO. pyproject.toml's import-linter contract keeps it that way.
"""
