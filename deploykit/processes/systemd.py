"""systemd units, driven by systemctl (the system manager, or `--user`).

Options read from the process spec: `unit`; `user` (true: `systemctl --user`);
`systemctl` (the command, e.g. with sudo or nsenter in front; default
`systemctl`). Running means `systemctl is-active` prints `active`.
"""
from __future__ import annotations

from ..transport.host import q
from .base import ProcessManager

_VERB = {"start": "start", "stop": "stop", "restart": "restart", "status": "is-active"}


class Systemd(ProcessManager):
    """`systemctl [--user] start|stop|restart|is-active <unit>`."""

    kind = "systemd"

    def systemctl(self) -> str:
        ctl = getattr(self.spec, "systemctl", None) or "systemctl"
        return f"{ctl} --user" if getattr(self.spec, "user", False) else ctl

    def command(self, verb: str) -> str:
        unit = getattr(self.spec, "unit", None)
        if not unit:  # a spec that carries only its commands
            return super().command(verb)
        return f"{self.systemctl()} {_VERB[verb]} {unit}"

    def says_running(self, res) -> bool:
        return res.ok and res.stdout.strip() == "active"

    def check(self, host, live: bool) -> list[str]:
        """systemd answers and has the unit loaded (whether or not it runs)."""
        unit = host.render(self.spec.unit)
        res = host.run(f"{host.render(self.systemctl())} show -p LoadState --value {q(unit)}",
                       check=False, read_only=True)
        state = res.stdout.strip()
        if not res.ok:
            return [f"{self.name}: systemd does not answer on {host.name}: {res.tail(1)}"]
        if state != "loaded":
            return [f"{self.name}: systemd unit {unit} is {state or 'unknown'} on {host.name}"]
        return []
