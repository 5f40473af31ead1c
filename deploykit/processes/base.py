"""The interface every process manager keeps, and the verbs' shared rules.

A manager only says which shell command does each verb on a host and how to
read its status; what a failed verb means (restart of a stopped process is a
start, stop of a stopped one is done) is the same for all, so it lives here.
`running()` is read-only: a dry-run Host runs it and refuses the rest.
"""
from __future__ import annotations

from ..errors import DeployError

VERBS = ("start", "stop", "restart")


class ProcessManager:
    """One configured process (`spec`: a ProcessSpec) and the manager that runs it."""

    kind = "commands"

    def __init__(self, spec):
        self.spec = spec

    @property
    def name(self) -> str:
        return self.spec.name

    # -- what a manager defines --------------------------------------------------
    def command(self, verb: str) -> str:
        """The shell command (a template, rendered per host) for start, stop, restart or status."""
        return getattr(self.spec, verb)

    def says_running(self, res) -> bool:
        """Whether the status command's result means the process runs."""
        return res.ok and ("RUNNING" in res.stdout.upper() or res.stdout.strip().upper() == "ACTIVE")

    def check(self, host, live: bool) -> list[str]:
        """Read-only, for preflight: what is wrong with this process on the host (`live`: a release runs there).

        The operator's own status command must succeed once a release is live
        (unless it is the default `true`).
        """
        status = self.command("status")
        res = host.run(host.render(status), check=False, read_only=True)
        if not res.ok and status != "true" and live:
            return [f"{self.name}: its status command failed on {host.name}: {res.tail(1)}"]
        return []

    # -- the interface steps use ---------------------------------------------------
    def running(self, host) -> bool:
        """Read-only: does the process run on the host (a dry-run may ask)."""
        res = host.run(host.render(self.command("status")), check=False, read_only=True)
        return self.says_running(res)

    def start(self, host, wait: bool = True) -> str:
        """Start it; `wait=False` lets a manager that can (supervisord) return once the process is spawned,
        without its own start-up wait: the caller's health check is then what proves it serves."""
        return self._do(host, "start")

    def stop(self, host) -> str:
        return self._do(host, "stop")

    def restart(self, host, wait: bool = True) -> str:
        """`wait=False`: stopped, then started as start(wait=False) does (the health check after proves it)."""
        if wait:
            return self._do(host, "restart")
        self.stop(host)
        return self.start(host, wait=False)

    def _do(self, host, verb: str) -> str:
        """Run one verb; return what was done as the step reports it, or raise DeployError."""
        cmd = host.render(self.command(verb))
        res = host.run(cmd, check=False)
        if not res.ok and verb == "restart":
            # not running yet (first release): a plain start is the restart
            res = host.run(host.render(self.command("start")), check=False)
        if not res.ok and verb == "start" and self.running(host):
            return f"{self.name} (already running)"
        if not res.ok and verb == "stop":
            if self.running(host):
                raise DeployError(f"{host.name}: could not stop {self.name}: {res.tail(1)}")
            return f"{self.name} (was not running)"
        if not res.ok:
            raise DeployError(f"{host.name}: {verb} {self.name} failed: {res.tail(1)}",
                              hint=f"run '{cmd}' on {host.name} to see why")
        return self.name
