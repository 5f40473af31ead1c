"""The app's processes: stop, start, restart, each through its manager (deploykit.processes)."""
from __future__ import annotations

from .. import layout
from ..drivers import capable
from .base import Outcome, Step, register
from ..processes import manager_for


def _each(ctx, verb: str, host, writers_only: bool = False, **how) -> list[str]:
    """Do one verb to each configured process through its manager; what was done, per process."""
    return [getattr(manager_for(proc), verb)(host, **how) for proc in ctx.config.processes
            if not (writers_only and not proc.writes) and runs_on(proc, host)]


def runs_on(proc, host) -> bool:
    """A process runs on the hosts of its role (`on:`, default app); a host that names no roles runs them all."""
    roles = getattr(host, "roles", None)
    return proc.on == "all" or roles is None or proc.on in roles


@register
class RestartProcesses(Step):
    """Restart the app's processes so they run the new `current`.

    `with: {wait: false}` (a rolling batch): stopped, then spawned without waiting out the manager's own
    start-up time; the health check that follows in the playbook proves they serve.
    """

    name = "restart_processes"
    scope = "app"

    def describe(self, ctx, host):
        return f"would restart {', '.join(p.name for p in ctx.config.processes) or 'no process'}"

    def run(self, ctx, host):
        done = _each(ctx, "restart", host, wait=bool(self.options.get("wait", True)))
        return Outcome(changed=bool(done), message=", ".join(done) or "no process configured")


@register
class StopProcesses(Step):
    """Stop the app's processes (web, workers) before data is touched."""

    name = "stop_processes"
    scope = "app"

    def describe(self, ctx, host):
        return f"would stop {', '.join(p.name for p in ctx.config.processes) or 'no process'}"

    def applies(self, ctx, host):
        if self.options.get("for_snapshot") and ctx.options.get("all_at_once"):
            return True  # --all-at-once: migrations the old code does not survive run with every process stopped
        if self.options.get("for_snapshot"):  # only when a database will be snapshot (choose_snapshots)
            plan = ctx.state.snapshot_plan
            return (ctx.config.snapshots and bool(capable(ctx.config, "snapshot"))
                    and (plan is None or any(why is None for why in plan.values())))
        return True

    def run(self, ctx, host):
        done = _each(ctx, "stop", host, writers_only=bool(self.options.get("writers_only")))
        return Outcome(changed=bool(done), message=", ".join(done) or "no process configured")


@register
class StartProcesses(Step):
    """Start the app's processes again.

    `with: {wait: false}` (the transfer's frozen cut-over): a manager that can returns once each process is
    spawned instead of waiting out its own start-up time (supervisord's startsecs); the health check that
    must follow in the playbook is what proves the processes serve.
    """

    name = "start_processes"
    scope = "app"

    def describe(self, ctx, host):
        return f"would start {', '.join(p.name for p in ctx.config.processes) or 'no process'}"

    def run(self, ctx, host):
        if not host.exists(layout.current(host)):  # a first release that never went live: nothing ran before
            return Outcome(message="no release on this host yet: nothing to start")
        done = _each(ctx, "start", host, wait=bool(self.options.get("wait", True)))
        return Outcome(changed=bool(done), message=", ".join(done) or "no process configured")
