"""The paper venue: a simulated market and chain in its own SQLite file, behind the venue port.
Nothing outside this package names it; the kernel reaches it through engine/venues/choose.py."""
