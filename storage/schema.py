"""The book's schema, as forward migrations keyed by `PRAGMA user_version`.

Money columns are TEXT holding exact integers: wei balances overflow SQLite's
64-bit INTEGER. CHECKs are OR chains, not IN lists, and no partial index uses
IN: measured, SQLite 3.40 builds a temporary table per written row for those
(43% of the writer's time, and page faults on every row). Partial unique indexes restate the one-per-token invariant in
the database itself, so even a bug above cannot commit a duplicate position.
"""

MIGRATIONS: list[str] = [
    # 1: the journal, the ledger and the read models
    """
    CREATE TABLE journal (
        seq INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        data TEXT NOT NULL
    ) STRICT;
    CREATE TABLE postings (
        seq INTEGER NOT NULL REFERENCES journal(seq) DEFERRABLE INITIALLY DEFERRED,
        chain TEXT NOT NULL,
        asset TEXT NOT NULL,
        dr TEXT NOT NULL,
        cr TEXT NOT NULL,
        amount TEXT NOT NULL
    ) STRICT;
    CREATE TABLE balances (
        chain TEXT NOT NULL,
        asset TEXT NOT NULL,
        account TEXT NOT NULL,
        amount TEXT NOT NULL,
        PRIMARY KEY (chain, asset, account)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE positions (
        id INTEGER PRIMARY KEY,
        chain TEXT NOT NULL,
        token TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state = 'open' OR state = 'closing' OR state = 'closed'),
        size TEXT NOT NULL,
        cost TEXT NOT NULL,
        entry_price TEXT NOT NULL,
        opened_at INTEGER NOT NULL,
        entry_order INTEGER NOT NULL,
        exit_order INTEGER,
        close_reason TEXT,
        closed_at INTEGER,
        proceeds TEXT,
        pnl TEXT,
        exit_price TEXT,
        exit_attempts INTEGER NOT NULL DEFAULT 0
    ) STRICT;
    CREATE UNIQUE INDEX positions_one_open_per_token ON positions (chain, token) WHERE state != 'closed';
    CREATE TABLE reservations (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind = 'entry' OR kind = 'exit' OR kind = 'noop'),
        chain TEXT NOT NULL,
        token TEXT NOT NULL,
        amount TEXT NOT NULL,
        fee_amount TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state = 'held' OR state = 'posted' OR state = 'voided'),
        order_id INTEGER NOT NULL,
        position_id INTEGER,
        created_at INTEGER NOT NULL,
        settled_at INTEGER
    ) STRICT;
    CREATE UNIQUE INDEX reservations_one_held_entry_per_token ON reservations (chain, token)
        WHERE state = 'held' AND kind = 'entry';
    CREATE INDEX reservations_held ON reservations (state) WHERE state = 'held';
    CREATE TABLE orders (
        id INTEGER PRIMARY KEY,
        intent TEXT NOT NULL CHECK (intent = 'entry' OR intent = 'exit' OR intent = 'noop'),
        chain TEXT NOT NULL,
        token TEXT NOT NULL,
        reservation_id INTEGER NOT NULL,
        position_id INTEGER,
        state TEXT NOT NULL CHECK (state = 'new' OR state = 'signed' OR state = 'submitted' OR state = 'unknown' OR state = 'filled' OR state = 'failed' OR state = 'abandoned'),
        amount_in TEXT NOT NULL,
        nonce INTEGER,
        address TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        tx_id TEXT,
        raw BLOB,
        expiry INTEGER,
        quoted_out TEXT,
        min_out TEXT,
        reason TEXT
    ) STRICT;
    CREATE INDEX orders_state ON orders (state);
    CREATE TABLE fills (
        id INTEGER PRIMARY KEY,
        position_id INTEGER NOT NULL,
        order_id INTEGER NOT NULL,
        side TEXT NOT NULL CHECK (side = 'buy' OR side = 'sell'),
        chain TEXT NOT NULL,
        token TEXT NOT NULL,
        amount TEXT NOT NULL,
        quote_amount TEXT NOT NULL,
        price TEXT NOT NULL,
        fee TEXT NOT NULL,
        network_fee TEXT NOT NULL,
        tx_id TEXT,
        at INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE nonces (
        chain TEXT NOT NULL,
        address TEXT NOT NULL,
        next INTEGER NOT NULL,
        floor INTEGER NOT NULL,
        PRIMARY KEY (chain, address)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE cooldowns (
        chain TEXT NOT NULL,
        token TEXT NOT NULL,
        until INTEGER NOT NULL,
        PRIMARY KEY (chain, token)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE marks (
        chain TEXT NOT NULL,
        token TEXT NOT NULL,
        price TEXT NOT NULL,
        at INTEGER NOT NULL,
        PRIMARY KEY (chain, token)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE signals (
        id TEXT PRIMARY KEY,
        reservation_id INTEGER NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE deposits (
        ref TEXT PRIMARY KEY,
        amount TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) STRICT, WITHOUT ROWID;
    """,
    # 2: the inbox: operator commands from any process, with who sent them and what came of it
    """
    CREATE TABLE inbox (
        id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        args TEXT NOT NULL,
        who TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state = 'pending' OR state = 'done' OR state = 'refused' OR state = 'failed'),
        result TEXT,
        decided_at INTEGER
    ) STRICT;
    CREATE INDEX inbox_pending ON inbox (state) WHERE state = 'pending';
    """,
    # 3: an owner takes a row before deciding it ('taken'), so that a sender who gives up can
    # withdraw a row nobody has taken ('withdrawn') and be sure it never runs later
    """
    CREATE TABLE inbox_v3 (
        id INTEGER PRIMARY KEY,
        command TEXT NOT NULL,
        args TEXT NOT NULL,
        who TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        state TEXT NOT NULL CHECK (state = 'pending' OR state = 'taken' OR state = 'done' OR state = 'refused'
                                   OR state = 'failed' OR state = 'withdrawn'),
        result TEXT,
        decided_at INTEGER
    ) STRICT;
    INSERT INTO inbox_v3 SELECT id, command, args, who, created_at, state, result, decided_at FROM inbox;
    DROP TABLE inbox;
    ALTER TABLE inbox_v3 RENAME TO inbox;
    CREATE INDEX inbox_open ON inbox (state) WHERE state = 'pending' OR state = 'taken';
    """,
    # 4: an ERC20 approve is an order of its own (its nonce sequenced, its bytes written ahead,
    # its gas reserved and posted) before the swap that spends the allowance
    """
    CREATE TABLE reservations_v4 (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind = 'entry' OR kind = 'exit' OR kind = 'noop' OR kind = 'approve'),
        chain TEXT NOT NULL,
        token TEXT NOT NULL,
        amount TEXT NOT NULL,
        fee_amount TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state = 'held' OR state = 'posted' OR state = 'voided'),
        order_id INTEGER NOT NULL,
        position_id INTEGER,
        created_at INTEGER NOT NULL,
        settled_at INTEGER
    ) STRICT;
    INSERT INTO reservations_v4 SELECT * FROM reservations;
    DROP TABLE reservations;
    ALTER TABLE reservations_v4 RENAME TO reservations;
    CREATE UNIQUE INDEX reservations_one_held_entry_per_token ON reservations (chain, token)
        WHERE state = 'held' AND kind = 'entry';
    CREATE INDEX reservations_held ON reservations (state) WHERE state = 'held';
    CREATE TABLE orders_v4 (
        id INTEGER PRIMARY KEY,
        intent TEXT NOT NULL CHECK (intent = 'entry' OR intent = 'exit' OR intent = 'noop' OR intent = 'approve'),
        chain TEXT NOT NULL,
        token TEXT NOT NULL,
        reservation_id INTEGER NOT NULL,
        position_id INTEGER,
        state TEXT NOT NULL CHECK (state = 'new' OR state = 'signed' OR state = 'submitted' OR state = 'unknown'
                                   OR state = 'filled' OR state = 'failed' OR state = 'abandoned'),
        amount_in TEXT NOT NULL,
        nonce INTEGER,
        address TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        tx_id TEXT,
        raw BLOB,
        expiry INTEGER,
        quoted_out TEXT,
        min_out TEXT,
        reason TEXT
    ) STRICT;
    INSERT INTO orders_v4 SELECT * FROM orders;
    DROP TABLE orders;
    ALTER TABLE orders_v4 RENAME TO orders;
    CREATE INDEX orders_state ON orders (state);
    """,
    # 5: every signed attempt at an EVM order's nonce is kept (replacements and cancellations):
    # the current attempt's fee fields, and the earlier attempts, any of which may be mined
    """
    ALTER TABLE orders ADD COLUMN fees TEXT;
    ALTER TABLE orders ADD COLUMN attempts TEXT;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)
