"""supervisord programs: asked over supervisord's socket from the host's agent, else by supervisorctl.

supervisorctl is itself an XML-RPC client of supervisord's socket; starting it
costs about 0.3 s per verb. When `conf` is given and `supervisorctl` is a plain
supervisorctl (no sudo or wrapper in front of it), the same calls are made by
the `supervisor` remote helper inside the agent that already runs on the host.
When that helper cannot reach the socket it has asked nothing, and the
configured command is run instead, so its own message tells the operator why.
"""
from __future__ import annotations

import posixpath
import shlex

from ..errors import DeployError
from .base import ProcessManager


class Supervisor(ProcessManager):
    """`<supervisorctl> [-c conf] <verb> <program>`; running means supervisord says RUNNING."""

    kind = "supervisor"

    def command(self, verb: str) -> str:
        program = getattr(self.spec, "program", None)
        if not program:  # a spec that carries only its commands (older configs)
            return super().command(verb)
        ctl = getattr(self.spec, "ctl", None) or "supervisorctl"
        conf = getattr(self.spec, "conf", None)
        base = f"{ctl} -c {conf}" if conf else ctl
        return f"{base} {verb} {program}"

    def says_running(self, res) -> bool:
        return res.ok and "RUNNING" in res.stdout.upper()

    # -- over the socket -------------------------------------------------------------
    def _socket_args(self, host) -> dict | None:
        """The helper's arguments when this program may be asked over the socket, else None."""
        program = getattr(self.spec, "program", None)
        conf = getattr(self.spec, "conf", None)
        ctl = getattr(self.spec, "ctl", None) or "supervisorctl"
        try:
            words = shlex.split(host.render(ctl))
        except ValueError:
            return None
        if not (program and conf and len(words) == 1 and posixpath.basename(words[0]) == "supervisorctl"):
            return None
        program = host.render(program)
        if ":" in program:  # a group or `group:*`: supervisorctl expands it (several processes, several answers)
            return None
        return {"conf": host.render(conf), "program": program}

    def _ask(self, host, verb: str) -> dict | None:
        """supervisord's answer to VERB, or None when the socket could not be reached (nothing asked)."""
        args = self._socket_args(host)
        if args is None:
            return None
        doc = host.helper("supervisor", verb, args, check=False)
        return doc if doc.get("reachable") else None

    def running(self, host) -> bool:
        doc = self._ask(host, "status")
        if doc is None:
            return super().running(host)
        return bool(doc.get("ok")) and doc.get("state") == "RUNNING"

    def start(self, host, wait: bool = True) -> str:
        """`wait=False`: supervisord forks it and says STARTING; its startsecs (1 s by default) are not waited out."""
        return self._do(host, "start" if wait else "spawn")

    def restart(self, host, wait: bool = True) -> str:
        """`wait=False`: stop, then spawn, in one call of the helper on the host (else as the base class does)."""
        if wait or self._socket_args(host) is None:
            return super().restart(host, wait)
        return self._do(host, "respawn")

    def _do(self, host, verb: str) -> str:
        doc = self._ask(host, verb)
        if doc is None and verb == "respawn":  # the socket is not reachable: supervisorctl stop, then start
            return super().restart(host, wait=False)
        if doc is None and verb == "spawn":  # supervisorctl has no such verb: its start waits startsecs out
            verb = "start"
        if doc is None:
            return super()._do(host, verb)
        fault = doc.get("fault")
        if doc.get("ok"):
            if doc.get("stopped_in") is not None:  # respawn: the old process's graceful stop, apart
                return f"{self.name} (the old one stopped in {doc['stopped_in']:.2f} s)"
            return self.name
        if verb in ("start", "spawn", "respawn") and fault == "ALREADY_STARTED":
            return f"{self.name} (already running)"
        if verb == "stop" and fault == "NOT_RUNNING":
            return f"{self.name} (was not running)"
        said = {"spawn": "start", "respawn": "restart"}.get(verb, verb)
        raise DeployError(f"{host.name}: {said} {self.name} failed: {doc.get('error')}",
                          hint=f"run '{host.render(self.command('status'))}' on {host.name} "
                               f"and read the program's log to see why")

    def check(self, host, live: bool) -> list[str]:
        """supervisord answers and knows the program (whether or not it runs)."""
        doc = self._ask(host, "status")
        if doc is not None:
            if doc.get("fault") == "BAD_NAME":
                return [f"{self.name}: supervisor on {host.name} has no program named as configured "
                        f"({host.render(self.command('status'))})"]
            return []
        res = host.run(host.render(self.command("status")), check=False, read_only=True)
        out = (res.stdout + " " + res.stderr).lower()
        if "no such process" in out:
            return [f"{self.name}: supervisor on {host.name} has no program named as configured "
                    f"({host.render(self.command('status'))})"]
        if any(w in out for w in ("refused", "no such file", "error", "unix://", "http://")) and \
                not any(w in out for w in ("running", "stopped", "starting", "exited", "fatal", "backoff")):
            # the reason, not supervisorctl's "For help, use ... -h" footer that follows it
            said = [line.strip() for line in (res.stderr + "\n" + res.stdout).splitlines()
                    if line.strip() and not line.strip().startswith("For help")]
            return [f"{self.name}: supervisor does not answer on {host.name}: {' | '.join(said[-2:]) or res.tail(1)}"]
        return []
