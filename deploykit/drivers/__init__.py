"""Data drivers behind one interface, built from the config in backup order."""
from __future__ import annotations

from .base import Driver
from .files import FilesDriver
from .postgres import PostgresDriver
from .sqlite import SQLiteDriver

ENGINES = {"postgresql": PostgresDriver, "sqlite": SQLiteDriver}


def drivers_for(config) -> list[Driver]:
    """Databases, then media, then extra paths (or the configured order):
    orphan media are better than dangling links."""
    by_kind = {
        "databases": [ENGINES[db.engine](db) for db in config.databases],
        "media": [FilesDriver(p) for p in config.data_paths if p.kind == "media"],
        "paths": [FilesDriver(p) for p in config.data_paths if p.kind == "paths"],
    }
    return [d for kind in config.backup_order for d in by_kind[kind]]


def driver_for_item(config, item: dict) -> Driver:
    for driver in drivers_for(config):
        if driver.item_name == item["name"]:
            return driver
    raise KeyError(item["name"])
