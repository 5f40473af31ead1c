"""The app's processes: stop, start, restart through their manager's commands."""
from __future__ import annotations

from ..errors import DeployError
from ..playbook import Outcome, Step, register


def _running(host, proc) -> bool:
    status = host.run(host.render(proc.status), check=False, read_only=True)
    return status.ok and "RUNNING" in status.stdout.upper() or (status.ok and "ACTIVE" == status.stdout.strip().upper())


def _each(ctx, host, verb: str, writers_only: bool = False) -> list[str]:
    done = []
    for proc in ctx.config.processes:
        if writers_only and not proc.writes:
            continue
        cmd = host.render(getattr(proc, verb))
        res = host.run(cmd, check=False)
        if not res.ok and verb == "restart":
            # not running yet (first release): a plain start is the restart
            res = host.run(host.render(proc.start), check=False)
        if not res.ok and verb == "start" and _running(host, proc):
            done.append(f"{proc.name} (already running)")
            continue
        if not res.ok and verb == "stop":
            if _running(host, proc):
                raise DeployError(f"{host.name}: could not stop {proc.name}: {res.tail(1)}")
            done.append(f"{proc.name} (was not running)")
            continue
        if not res.ok:
            raise DeployError(f"{host.name}: {verb} {proc.name} failed: {res.tail(1)}",
                              hint=f"run '{cmd}' on {host.name} to see why")
        done.append(proc.name)
    return done


@register
class RestartProcesses(Step):
    """Restart the app's processes so they run the new `current`."""

    name = "restart_processes"
    scope = "app"

    def describe(self, ctx, host):
        return f"would restart {', '.join(p.name for p in ctx.config.processes) or 'no process'}"

    def run(self, ctx, host):
        done = _each(ctx, host, "restart")
        return Outcome(changed=bool(done), message=", ".join(done) or "no process configured")


@register
class StopProcesses(Step):
    """Stop the app's processes (web, workers) before data is touched."""

    name = "stop_processes"
    scope = "app"

    def describe(self, ctx, host):
        return f"would stop {', '.join(p.name for p in ctx.config.processes) or 'no process'}"

    def applies(self, ctx, host):
        if self.options.get("for_snapshot"):  # only when there is a database to snapshot
            return ctx.config.snapshots and any(db.engine == "postgresql" for db in ctx.config.databases)
        return True

    def run(self, ctx, host):
        done = _each(ctx, host, "stop", writers_only=bool(self.options.get("writers_only")))
        return Outcome(changed=bool(done), message=", ".join(done) or "no process configured")


@register
class StartProcesses(Step):
    """Start the app's processes again."""

    name = "start_processes"
    scope = "app"

    def describe(self, ctx, host):
        return f"would start {', '.join(p.name for p in ctx.config.processes) or 'no process'}"

    def run(self, ctx, host):
        if not host.exists(host.path("current")):  # a first release that never went live: nothing ran before
            return Outcome(message="no release on this host yet: nothing to start")
        done = _each(ctx, host, "start")
        return Outcome(changed=bool(done), message=", ".join(done) or "no process configured")
