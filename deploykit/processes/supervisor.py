"""supervisord programs, driven by supervisorctl (optionally with `-c conf`)."""
from __future__ import annotations

from .base import ProcessManager


class Supervisor(ProcessManager):
    """`<supervisorctl> [-c conf] <verb> <program>`; running means supervisorctl says RUNNING."""

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
