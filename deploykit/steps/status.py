"""`deploykit status`: a read-only look at each host of a stage; what it finds is reported, never raised.

Per host: the live release (the registry) and what `current` points at,
whether they agree, the stage lock and whether its holder is alive, dead or
stale, the processes, the health checks now, disk free under deploy_to, the
newest backup that verifies and its age, the snapshots and set-aside copies
held. Each finding that needs an operator is a problem: `down` when the app
may not be serving (a host unreachable, a process stopped, a health check
failing), else one to look at (drift, a dead run's lock, little disk, no
usable backup). ending.status_ending turns them into the exit code.
"""
from __future__ import annotations

import posixpath
import time
from datetime import datetime, timezone

from .. import layout
from ..drivers import capable
from ..errors import DeployError
from ..processes import manager_for
from ..state.backups import list_backups, verify
from ..state.releases import Registry
from ..work.health import check_health
from .base import Outcome, Step, register


def _err(exc: Exception) -> str:
    return exc.one_line() if isinstance(exc, DeployError) else f"{type(exc).__name__}: {exc}"


def _age(created: str | None) -> float | None:
    try:
        at = datetime.strptime(created or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    return round(time.time() - at.timestamp(), 1)


class Findings:
    """One host's facts, and the problems and warnings among them."""

    def __init__(self, host):
        self.doc = {"host": host.name, "roles": sorted(host.roles), "primary": bool(host.is_primary),
                    "deploy_to": host.deploy_to, "reachable": True, "problems": [], "warnings": []}

    def problem(self, what: str, text: str, down: bool = False) -> None:
        self.doc["problems"].append({"what": what, "text": text, "down": down})

    def warning(self, what: str, text: str) -> None:
        self.doc["warnings"].append({"what": what, "text": text})


def look_release(ctx, host, f: Findings) -> dict | None:
    """The live release per the host's registry, what `current` points at, and whether they agree."""
    doc = f.doc
    registry = Registry.load(host)
    live = registry.live()
    doc["live"] = {k: live.get(k) for k in ("id", "tag", "commit", "live_since")} if live else None
    target = host.realpath(layout.current(host)) if host.exists(layout.current(host)) else None
    doc["current"] = target
    releases = host.realpath(layout.releases_dir(host)) or layout.releases_dir(host)
    pointed = posixpath.basename(target) if target and posixpath.dirname(target) == releases else None
    doc["current_release"] = pointed
    if live is None and target is None:
        doc["agree"] = None
        f.warning("release", "no release is live yet")
        return None
    expected = host.realpath(layout.release_dir(host, live["id"])) if live else None
    doc["agree"] = bool(live and target and target == expected)
    if not doc["agree"]:
        said = f"release {live['id']}" if live else "no live release"
        entry = registry.get(pointed) if pointed else None
        points = (f"release {pointed}" + (f" ({entry['status']} in the registry)" if entry else
                                          " (not in the registry)")) if pointed else (target or "nothing")
        doc["drift"] = f"DRIFT: the registry says {said} is live, current points at {points}"
        f.problem("drift", doc["drift"])
    return live


def look_lock(ctx, host, f: Findings) -> None:
    rows = [r for r in ctx.state.lock_holders if r["host"] == host.name]
    error = ctx.state.status.get("_lock_error")
    doc = f.doc
    doc["lock"] = None
    if error and not rows:
        doc["lock"] = {"error": error}
        f.problem("lock", f"the lock could not be read: {error}")
        return
    if not rows:
        return
    r = rows[0]
    doc["lock"] = {k: r.get(k) for k in ("run_id", "command", "user", "controller", "pid", "since", "heartbeat",
                                         "state", "gone", "why", "pending")}
    who = (f"run {r.get('run_id')} ({r.get('command')}) of {r.get('user')}@{r.get('controller')} pid "
           f"{r.get('pid')}, since {r.get('since')}")
    if r.get("state") == "alive":
        f.warning("lock", f"locked by {who}: alive ({r['why']})")
        return
    text = f"locked by {who}: {r.get('state', 'unknown').upper()} ({r['why']})"
    if r.get("pending"):
        text += f"; its {r['pending']} is not done: any command on the stage finishes it"
    elif r.get("gone"):
        text += "; 'deploykit unlock' frees it"
    f.problem("lock", text)


def look_processes(ctx, host, f: Findings) -> None:
    out = []
    for proc in ctx.config.processes:
        try:
            running = manager_for(proc).running(host)
            out.append({"name": proc.name, "running": running})
            if not running:
                f.problem("processes", f"{proc.name} is not running", down=True)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out.append({"name": proc.name, "running": None, "error": _err(exc)})
            f.problem("processes", f"{proc.name}: its status could not be read: {_err(exc)}", down=True)
    f.doc["processes"] = out


def look_health(ctx, host, f: Findings) -> None:
    try:
        notes = check_health(ctx, host, read_only=True)
        f.doc["health"] = {"ok": True, "notes": notes}
    except Exception as exc:  # noqa: BLE001 - a failing check is a finding
        f.doc["health"] = {"ok": False, "error": _err(exc)}
        f.problem("health", _err(exc), down=True)


def look_disk(ctx, host, f: Findings) -> None:
    doc = host.helper("files", "disk_free", {"path": host.deploy_to})
    free, need = doc["free_bytes"], ctx.config.min_free_mb << 20
    f.doc["disk"] = {"free_bytes": free, "total_bytes": doc.get("total_bytes"), "path": host.deploy_to,
                     "min_free_mb": ctx.config.min_free_mb, "ok": free >= need}
    if free < need:
        f.problem("disk", f"only {free >> 20} MB free under {host.deploy_to} (min_free_mb "
                          f"{ctx.config.min_free_mb}): the next release would be refused")


def look_backups(ctx, host, f: Findings, live) -> None:
    """The newest backup that verifies (newer ones that do not are named): checksums and the drivers' checks."""
    ids = list_backups(host)
    f.doc["backups"] = len(ids)
    f.doc["backup"] = None
    failing = []
    for bid in reversed(ids):
        ok, problems, manifest = verify(ctx, host, layout.backup_dir(host, bid))
        if ok:
            created = (manifest or {}).get("created")
            f.doc["backup"] = {"id": bid, "created": created, "age_seconds": _age(created),
                               "for_release": (manifest or {}).get("for_release"), "path": layout.backup_dir(host, bid)}
            break
        failing.append({"id": bid, "problems": problems[:3]})
    f.doc["unverified_backups"] = failing
    for bad in failing:
        f.warning("backup", f"backup {bad['id']} does not verify: {'; '.join(bad['problems']) or 'incomplete'}")
    if f.doc["backup"] is None and live:
        f.problem("backup", "no backup on this host verifies: a recovery would have nothing to restore")


def look_snapshots(ctx, host, f: Findings) -> None:
    held = []
    for d in capable(ctx.config, "snapshot"):
        held += [{"item": d.item_name, **c} for c in d.held_copies(ctx, host)]
    f.doc["snapshots"] = held
    f.doc["snapshot_bytes"] = sum(c.get("bytes") or 0 for c in held)


def _guard(f: Findings, what: str, fn, *args):
    """Run one look; what fails is a finding of that look (the others still run)."""
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - status reports, it never stops at the first problem
        f.problem(what, f"could not be read: {_err(exc)}", down=what in ("processes", "health"))
        return None


@register
class StatusLocks(Step):
    """Read every host's lock and judge its holder (alive, dead, stale), as unlock does."""

    name = "status_locks"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        try:
            found = ctx.foreign_locks()
        except DeployError as exc:  # an unreachable host: each host's look says which
            ctx.state.status["_lock_error"] = exc.one_line()
            return Outcome(message=f"locks not all read: {exc.one_line()}")
        ctx.state.lock_holders = [{"host": h.host.name, **h.holder, "gone": h.verdict.gone, "why": h.verdict.why,
                                   "state": h.verdict.state, "pending": proc} for h, proc in found]
        rows = ctx.state.lock_holders
        return Outcome(message="; ".join(f"{r['host']}: run {r.get('run_id')} {r['state']}" for r in rows)
                       or "no lock held")


@register
class StatusHost(Step):
    """Look at one host: release and current, lock, processes, health, disk, backups, snapshots."""

    name = "status_host"
    scope = "all"
    read_only = True

    def run(self, ctx, host):
        f = Findings(host)
        try:
            host.connect()
        except Exception as exc:  # noqa: BLE001 - an unreachable host is a finding
            f.doc["reachable"] = False
            f.problem("host", f"unreachable: {_err(exc)}", down=True)
            ctx.state.status[host.name] = f.doc
            return Outcome(message=f"unreachable: {_err(exc)}")
        keeps_registry = "app" in host.roles or host.is_primary
        live = _guard(f, "release", look_release, ctx, host, f) if keeps_registry else None
        look_lock(ctx, host, f)
        if "app" in host.roles and (live or f.doc.get("current")):
            _guard(f, "processes", look_processes, ctx, host, f)
            _guard(f, "health", look_health, ctx, host, f)
        _guard(f, "disk", look_disk, ctx, host, f)
        _guard(f, "backup", look_backups, ctx, host, f, live)
        if host.is_primary:
            _guard(f, "snapshots", look_snapshots, ctx, host, f)
        with ctx.lock:
            ctx.state.status[host.name] = f.doc
        problems = f.doc["problems"]
        return Outcome(message="; ".join(p["text"] for p in problems) if problems else "all well")
