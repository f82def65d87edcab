"""SQLite storage: schema, migrations, the one writer and read-only readers. Imports nothing of ours."""

from storage.db import (
    InsecureHome,
    StorageError,
    Tx,
    Writer,
    check_home,
    check_private,
    connect,
    ensure_home,
    fetch_all,
    migrate,
    read_snapshot,
)

__all__ = [
    "InsecureHome",
    "StorageError",
    "Tx",
    "Writer",
    "check_home",
    "check_private",
    "connect",
    "ensure_home",
    "fetch_all",
    "migrate",
    "read_snapshot",
]
