"""Which store a master uses: its config's ``store`` setting, opened (and migrated)."""

from pathlib import Path

from master.config import MasterConfig
from master.store.base import Store
from saline.private_file import read_private_file


def store_dsn(setting: str) -> str:
    """The PostgreSQL DSN a ``store`` setting names: the URL itself, or the content of the
    file it names, which must not be readable by group or others (it holds a password).

    :raises ConfigError: the file is missing, unreadable, too open, or empty.
    """
    if setting.startswith(("postgresql://", "postgres://")):
        return setting
    return read_private_file(Path(setting), "store", kind="DSN file")


def open_store(config: MasterConfig) -> Store:
    """The configured store, its schema created or migrated.

    :raises ConfigError: for a DSN file that cannot be used.
    :raises StoreUnavailable: PostgreSQL does not answer.
    :raises StoreError: the store's schema is newer than this code.
    """
    if config.store == "sqlite":
        from master.store.sqlite import SqliteStore

        return SqliteStore(config.store_path)
    from master.store.postgres import PostgresStore

    return PostgresStore(store_dsn(config.store))


def describe(config: MasterConfig) -> str:
    """The store for messages: never the DSN (it may hold a password)."""
    if config.store == "sqlite":
        return f"SQLite {config.store_path}"
    if config.store.startswith("/"):
        return f"PostgreSQL (DSN in {config.store})"
    return "PostgreSQL (DSN in the config)"
