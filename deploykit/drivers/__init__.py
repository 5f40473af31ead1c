"""Data drivers behind one interface, built from the config in backup order.

Adding a driver: write its module (a Driver subclass declaring its
`capabilities` and `tools`) and add one line to ENGINES (databases) here.
"""
from __future__ import annotations

from .base import Driver
from .files import FilesDriver
from .postgres import PostgresDriver
from .sqlite import SQLiteDriver

# the database engines deploykit.yaml may name (databases.<alias>.engine), one line per driver
ENGINES: dict[str, type[Driver]] = {
    PostgresDriver.engine: PostgresDriver,
    SQLiteDriver.engine: SQLiteDriver,
}


def drivers_for(config) -> list[Driver]:
    """Databases, then media, then extra paths (or the configured order):
    orphan media are better than dangling links."""
    by_kind = {
        "databases": database_drivers(config),
        "media": [FilesDriver(p) for p in config.data_paths if p.kind == "media"],
        "paths": [FilesDriver(p) for p in config.data_paths if p.kind == "paths"],
    }
    return [d for kind in config.backup_order for d in by_kind[kind]]


def database_drivers(config) -> list[Driver]:
    """One driver per configured database, in the order of deploykit.yaml."""
    return [ENGINES[db.engine](db) for db in config.databases]


def capable(config, capability: str) -> list[Driver]:
    """The configured drivers that can do `capability` (e.g. "snapshot"), in backup order."""
    return [d for d in drivers_for(config) if d.can(capability)]


def tools_for(config) -> list[str]:
    """The commands the primary host needs for the configured drivers, each once."""
    return list(dict.fromkeys(t for d in drivers_for(config) for t in d.tools))


def driver_for_item(config, item: dict) -> Driver:
    for driver in drivers_for(config):
        if driver.item_name == item["name"]:
            return driver
    raise KeyError(item["name"])
