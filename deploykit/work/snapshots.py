"""Whether to snapshot: the writers stay stopped for the whole clone, so a clone over the budget is not taken.

A template clone costs about its size over the copy speed. The speed is the
one measured by this stage's newest snapshot (kept in the release registry);
until there is one, or when the last clone was too small to tell (under
64 MB its time is mostly fixed costs), DEFAULT_SPEED is assumed. Clones are
taken one after the other, so they are chosen in order while the sum stays
within `snapshot_budget`; the others are left to the verified dump, which is
taken while the app serves.
"""
from __future__ import annotations

from ..state.releases import Registry

DEFAULT_SPEED = 300 << 20  # bytes/s: PostgreSQL's FILE_COPY clone on a local SSD (about 5 s at 1.5 GB)
SMALL_CLONE = 64 << 20


def last_clone(ctx, host) -> dict:
    """{"bytes", "seconds"} of this stage's newest measured clone (by release id, whatever is live now).

    After a rollback the live release can be older than the last snapshot
    taken; the newest measurement still tells the disk's speed best.
    """
    entries = [e for e in Registry.load(host).releases if e.get("clone_speed")] if host is not None else []
    newest = max(entries, key=lambda e: e["id"]) if entries else (ctx.previous or {})
    return newest.get("clone_speed") or {}


def clone_speed(ctx, host=None) -> tuple[float, str]:
    """Bytes per second a clone is expected to copy, and where that figure comes from."""
    last = last_clone(ctx, host)
    size, seconds = last.get("bytes") or 0, last.get("seconds") or 0
    if size > 0 and seconds > 0:
        measured = size / seconds
        if size >= SMALL_CLONE or measured >= DEFAULT_SPEED:
            return measured, f"{measured / (1 << 20):.0f} MB/s measured by the last snapshot"
        return DEFAULT_SPEED, f"{DEFAULT_SPEED >> 20} MB/s assumed (the last clone was too small to tell)"
    return DEFAULT_SPEED, f"{DEFAULT_SPEED >> 20} MB/s assumed (no clone measured on this stage yet)"


def choose(ctx, host, drivers) -> tuple[dict, dict, list[str]]:
    """key -> None (take it) or why not; key -> bytes; one line per database for the output."""
    speed, source = clone_speed(ctx, host)
    budget = ctx.config.snapshot_budget
    plan, sizes, lines, spent = {}, {}, [], 0.0
    for d in drivers:
        key = d.snapshot_key()
        if not d.exists(ctx, host):
            plan[key] = "it does not exist yet"
            lines.append(f"{d.label}: does not exist yet")
            continue
        blocker = d.snapshot_blocker(ctx, host)
        if blocker:
            plan[key] = blocker
            lines.append(f"no snapshot of {d.label}: {blocker}; recovery would restore the verified dump")
            continue
        size = sizes[key] = d.snapshot_bytes(ctx, host)
        seconds = size / speed
        about = f"a clone of {size / (1 << 20):.1f} MB takes about {seconds:.2f} s at {source}"
        if spent + seconds > budget:
            plan[key] = f"{about}, over snapshot_budget {budget:g} s"
            lines.append(f"no snapshot of {d.label}: {plan[key]} (writers keep running); "
                         "recovery would restore the verified dump")
            continue
        spent += seconds
        plan[key] = None
        lines.append(f"snapshot of {d.label}: {about}, within snapshot_budget {budget:g} s")
    return plan, sizes, lines


def measured(ctx, size: int, seconds: float) -> None:
    """Keep the slowest clone of the run: the next release estimates with it."""
    if size <= 0 or seconds <= 0:
        return
    with ctx.lock:
        last = ctx.state.clone_speed
        if last is None or size / seconds < last["bytes"] / last["seconds"]:
            ctx.state.clone_speed = {"bytes": size, "seconds": round(seconds, 3)}
