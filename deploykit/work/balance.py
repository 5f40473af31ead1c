"""The balancer in front of a stage's app hosts, as a rolling release uses it: drain, put back, errors seen.

The driver (deploykit.routers.balancer_for: nginx or the operator's
commands) knows how; this module knows when and where: on every host of the
balancer's stage, one change at a time per balancer host (two hosts of a
batch drained at once rewrite one upstream file), and the marks the gate
counts errors from (kept in the rollout's state, so a resumed run judges
its own batches). Without `rollout.balancer` for the run's stage there is
nothing to drain: each step says so and the gate judges the batch by its
health checks alone.
"""
from __future__ import annotations

import threading
from collections import defaultdict

from ..errors import PreflightFailed
from ..routers import balancer_for

_CHANGING: dict[str, threading.Lock] = defaultdict(threading.Lock)  # balancer host -> one change at a time


def spec(ctx):
    """The balancer of the run's stage (None: none configured, or it balances another stage)."""
    cfg = getattr(ctx.config, "balancer", None)
    return cfg if cfg is not None and cfg.serves == ctx.stage else None


def _driver(ctx):
    return balancer_for(ctx.config), ctx.stage_hosts(spec(ctx).stage)


def describe(ctx, host, verb: str) -> str:
    if spec(ctx) is None:
        return f"no balancer configured: nothing to {verb}"
    return f"would {verb} {spec(ctx).servers.get(host.name, host.name)} at {spec(ctx).stage}"


def check(ctx, batches: list[list[str]]) -> str:
    """Read-only, before the lock: the balancer answers, knows every rolled host, and no batch empties it."""
    if spec(ctx) is None:
        return "no balancer (rollout.balancer): hosts are not drained"
    balancer, hosts = _driver(ctx)
    problems = [p for h in hosts for p in balancer.check(ctx, h)]
    for h in hosts:
        left = [s for s in balancer.drained(ctx, h) if s in balancer.servers]
        if left:
            problems.append(f"{h.name}: {', '.join(left)} drained by an earlier run (deploykit unlock, or the "
                            "same command again after the run that drained it ended)")
    rolled = {name for batch in batches for name in batch}
    missing = sorted(rolled - set(spec(ctx).servers))
    if missing:
        problems.append(f"no balancer address for {', '.join(missing)} (not app hosts of {spec(ctx).serves})")
    for i, batch in enumerate(batches):
        if set(spec(ctx).servers) <= set(batch):
            problems.append(f"batch {i + 1} holds every server of the balancer ({', '.join(batch)}): draining it "
                            "would leave none; use smaller batches, or --all-at-once")
    if problems:
        raise PreflightFailed("; ".join(problems), hint="fix the balancer, or the batches (rollout.batches, --batch)")
    return f"balancer on {', '.join(h.name for h in hosts)}: {len(balancer.servers)} server(s)"


def _servers(ctx, balancer, hosts) -> list[str]:
    return [balancer.server_of(h) for h in hosts if h.name in spec(ctx).servers]


def drain(ctx, hosts: list) -> dict:
    """Take these app hosts out of the balancer, in one change per balancer host (a batch together)."""
    return _change(ctx, hosts, "drain_all", "-", "no balancer configured (rollout.balancer): not drained")


def undrain(ctx, hosts: list) -> dict:
    """Put these app hosts back into the balancer, in one change per balancer host."""
    return _change(ctx, hosts, "restore_all", "+", "no balancer configured (rollout.balancer)")


def _change(ctx, hosts: list, method: str, sign: str, without: str) -> dict:
    if spec(ctx) is None:
        return {"message": without}
    balancer, edges = _driver(ctx)
    servers = _servers(ctx, balancer, hosts)
    if not servers:
        return {"message": "not behind the balancer"}
    notes = []
    for bh in edges:
        with _CHANGING[bh.name]:
            notes.append(getattr(balancer, method)(ctx, bh, servers))
    return {"changed": True, "message": "; ".join(notes), "diff": "\n".join(f"{sign} {s}" for s in servers)}


def mark(ctx) -> dict | None:
    """Read-only: where each balancer host's count of errors starts now (None: no balancer)."""
    if spec(ctx) is None:
        return None
    balancer, hosts = _driver(ctx)
    return {h.name: balancer.mark(ctx, h) for h in hosts}


def errors_since(ctx, marks: dict | None) -> dict | None:
    """What the balancer answered since `marks` (mark()): {"requests", "errors"} summed over its hosts, and
    "marks" where those counts ended when every host's driver says (a mark for the next count, no gap)."""
    if spec(ctx) is None or marks is None:
        return None
    balancer, hosts = _driver(ctx)
    total = {"requests": 0, "errors": 0}
    ends = {}  # where each host's count ended, when its driver says: the next count starts there
    for h in hosts:
        got = balancer.errors(ctx, h, marks.get(h.name))
        total["requests"] += int(got.get("requests") or 0)
        total["errors"] += int(got.get("errors") or 0)
        ends[h.name] = got.get("mark")
    if all(ends.values()):
        total["marks"] = ends
    return total
