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

    def check(self, host, live: bool) -> list[str]:
        """supervisord answers and knows the program (whether or not it runs)."""
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
