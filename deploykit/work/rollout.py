"""A rolling release's plan and bookkeeping: which hosts go in which batch, what each host has reached.

The plan is data in the run's state (`ctx.state.rollout`), exported to the
primary's lock before each phase and recorded in the release's registry
entry, so that the run that finishes this one, and the rerun of the same
command, know exactly which hosts are done:

    {"batches": [["web1"], ["web2", "web3"], ["web4"]],
     "hosts": {"web1": "done", "web2": "failed", "web3": "back", "web4": "built"},
     "max_fail": 0, "resumed_from": null}

A host's state moves built -> switched -> done, or to failed (its step
failed) and back (it was put back on the previous release). Only `done`
hosts are skipped by a rerun; the others are rolled again, their build
reused (upload_code finds it) and the migrations never repeated (migrate
finds them applied).
"""
from __future__ import annotations

import math

from ..config.rollout import PERCENT, parse_batch
from ..errors import DeployError

HOST_STATES = ("built", "switched", "done", "failed", "back")


class RolloutFailed(DeployError):
    """More hosts failed than rollout.max_fail allows, or a batch's gate said no: the rollout is undone."""


def batch_sizes(spec: list, total: int) -> list[int]:
    """Sizes of the batches for `total` hosts (Ansible's serial): counts or percentages, the last repeated."""
    if total <= 0:
        return []
    sizes, left, i = [], total, 0
    entries = [parse_batch(e) for e in spec] or [total]
    while left > 0:
        entry = entries[min(i, len(entries) - 1)]
        m = PERCENT.match(entry) if isinstance(entry, str) else None
        size = max(1, math.ceil(total * float(m.group(1)) / 100)) if m else int(entry)
        size = min(size, left)
        sizes.append(size)
        left -= size
        i += 1
    return sizes


def plan_batches(hosts: list[str], spec: list | None, done: set[str] = frozenset()) -> list[list[str]]:
    """The hosts not done yet, in stage order, cut into batches (one batch of all when spec is None)."""
    todo = [h for h in hosts if h not in done]
    if not todo:
        return []
    if spec is None:
        return [todo]
    out, at = [], 0
    for size in batch_sizes(spec, len(todo)):
        out.append(todo[at:at + size])
        at += size
    return out


def new_rollout(hosts: list[str], spec: list | None, max_fail: int, resumed: dict | None = None) -> dict:
    """The rollout state of a run; `resumed`: the rollout an earlier run of this release left (its done hosts
    are skipped, every other host rolled again)."""
    before = (resumed or {}).get("hosts") or {}
    done = {h for h, s in before.items() if s == "done" and h in hosts}
    return {"batches": plan_batches(hosts, spec, done), "max_fail": max_fail,
            "hosts": {h: ("done" if h in done else "built") for h in hosts},
            "resumed_from": (resumed or {}).get("run_id"), "failures": {}}


def mark(rollout: dict, host: str, state: str, why: str | None = None) -> None:
    if state not in HOST_STATES:
        raise ValueError(state)
    rollout["hosts"][host] = state
    if why:
        rollout.setdefault("failures", {})[host] = why


def failed_hosts(rollout: dict) -> list[str]:
    return [h for h, s in rollout["hosts"].items() if s in ("failed", "back")]


def over_max_fail(rollout: dict) -> bool:
    return len(failed_hosts(rollout)) > int(rollout.get("max_fail") or 0)


def to_put_back(rollout: dict) -> list[str]:
    """Hosts that run, or may run, the new release: switched, done or failed, in reverse order of their batch."""
    order = [h for batch in rollout["batches"] for h in batch]
    order += [h for h in rollout["hosts"] if h not in order]
    return [h for h in reversed(order) if rollout["hosts"].get(h) in ("switched", "done", "failed")]


def gate_verdict(counts: dict | None, max_rate: float, min_requests: int) -> tuple[bool, str]:
    """Judge a batch by what the balancer answered during it: ({"requests", "errors"} or None: no balancer)."""
    if counts is None:
        return True, "no balancer: the gate is the health checks"
    requests, errors = int(counts.get("requests") or 0), int(counts.get("errors") or 0)
    if requests < min_requests:
        return True, f"{requests} request(s) through the balancer (fewer than {min_requests}: rate not judged)"
    rate = errors / requests if requests else 0.0
    text = f"{errors} error(s) in {requests} request(s) ({rate:.2%}; at most {max_rate:.2%})"
    return rate <= max_rate, text


def resumable(registry, commit: str) -> dict | None:
    """The newest registry entry of this commit whose rollout was undone and may be resumed (None: none)."""
    for entry in reversed(registry.releases):
        rollout = entry.get("rollout") or {}
        if entry.get("commit") == commit and rollout.get("resumable") and entry.get("status") == "failed":
            return entry  # undone past max_fail: every host not done is rolled again
        if entry.get("status") == "live":
            if entry.get("commit") == commit and any(s != "done" for s in (rollout.get("hosts") or {}).values()):
                return entry  # live on most hosts; those within max_fail that were put back are rolled now
            return None  # a release went live since: start afresh
    return None


def partial(rollout: dict) -> list[str]:
    """Hosts a rollout that went on put back (within max_fail): not released, the rerun resumes them."""
    return [h for h, s in (rollout or {}).get("hosts", {}).items() if s in ("back", "failed")]


def worker_only(host) -> bool:
    """A host that runs workers and serves nothing (no web role, not the primary)."""
    return "worker" in host.roles and "web" not in host.roles and not host.is_primary


def summary_rows(rollout: dict) -> list[dict]:
    """One row per host for the final table: its batch, its state, why it failed."""
    batch_of = {h: i + 1 for i, batch in enumerate(rollout.get("batches") or []) for h in batch}
    return [{"host": h, "batch": batch_of.get(h), "state": s, "why": (rollout.get("failures") or {}).get(h)}
            for h, s in rollout["hosts"].items()]
