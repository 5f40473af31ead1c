"""Names deploykit derives (snapshots, set-aside copies, restores, scratch databases).

A derived name is a hash of what it is for (app, database, purpose, label),
short and unique, never a truncation of the name it derives from: PostgreSQL
cuts identifiers at 63 bytes, so `<long name>__dk_compare` could *be* the live
database. Every derived name is recorded in the app's registry before the
object is created, and pruning drops only names the registry lists.
"""
from __future__ import annotations

import hashlib

from .state.journal import utc_now

KINDS = {"snapshot": "s", "aside": "o", "restore": "r", "scratch": "c", "replication": "p"}
MAX_IDENTIFIER_BYTES = 63


def derived_name(kind: str, app: str, database: str, label: str) -> str:
    """`dk<kind>_<24 hex>`: 27 ASCII bytes, the same for the same purpose, different for any other."""
    digest = hashlib.sha256("\0".join(("deploykit", kind, app, database, label)).encode()).hexdigest()[:24]
    return f"dk{KINDS[kind]}_{digest}"


def record(ctx, name: str, kind: str, **meta) -> str:
    """Write `name` into the registry (on every registry host) before the object exists."""
    from .state.releases import Registry, registry_hosts

    with ctx.lock:
        registry = Registry.load(ctx.primary)
        if name not in registry.derived:
            registry.derived[name] = {"kind": kind, "created": utc_now(), "run": ctx.run_id, "app": ctx.config.app,
                                      **meta}
            registry.save(registry_hosts(ctx))
        if name not in ctx.state.derived:
            ctx.state.derived.append(name)
    return name


def forget(ctx, *names: str) -> None:
    """The objects are gone (dropped, or renamed to the live name): drop them from the registry."""
    from .state.releases import Registry, registry_hosts

    with ctx.lock:
        registry = Registry.load(ctx.primary)
        if any(n in registry.derived for n in names):
            for n in names:
                registry.derived.pop(n, None)
            registry.save(registry_hosts(ctx))


def recorded(ctx, kind: str | None = None, **match) -> dict[str, dict]:
    from .state.releases import Registry

    derived = Registry.load(ctx.primary).derived
    return {n: m for n, m in derived.items()
            if (kind is None or m.get("kind") == kind) and all(m.get(k) == v for k, v in match.items())}
