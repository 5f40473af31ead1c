"""The command driver: the operator's own two commands, run on the router host in its deploy_to.

`live` prints the colour served now (read-only: preflight and dry-runs run
it); `switch` gets {colour} and {servers} (each address a quoted word) and
must exit 0 only once the router serves that colour. A failing switch
command is expected to leave the router as it was.
"""
from __future__ import annotations

from ..transport.host import q
from .base import Router, RouterError


class CommandRouter(Router):
    kind = "command"

    def _live(self, host):
        return host.run(host.render(self.spec.live), cwd=host.deploy_to, check=False, read_only=True)

    def live(self, ctx, host) -> str | None:
        res = self._live(host)
        if not res.ok:
            raise RouterError(f"{host.name}: the router's live command failed: {res.tail(2)}",
                              hint="fix colours.router.command.live: it prints the colour the router serves")
        return res.stdout.strip() or None

    def check(self, ctx, host) -> list[str]:
        res = self._live(host)
        if not res.ok:
            return [f"{host.name}: the router's live command failed: {res.tail(2)}"]
        said = res.stdout.strip()
        if said and said not in self.colours:
            return [f"{host.name}: the router's live command printed {said[:80]!r}, not one of "
                    f"{', '.join(self.colours)}"]
        return []

    def switch(self, ctx, host, colour: str, servers: list[str]) -> str:
        before = self.live(ctx, host)
        cmd = host.render(self.spec.switch).replace("{colour}", q(colour)).replace(
            "{servers}", " ".join(q(s) for s in servers))
        res = host.run(cmd, cwd=host.deploy_to, check=False)
        if not res.ok:
            now = self._live(host)
            said = (now.stdout.strip() or "no colour") if now.ok else "unknown (its live command fails too)"
            raise RouterError(f"{host.name}: the router's switch command failed: {res.tail(2)}; the router serves "
                              f"{said} (before: {before or 'no colour'})",
                              hint="see what the switch command printed; fix it, then switch again")
        return f"{before or 'none'} -> {colour} ({', '.join(servers)})"
