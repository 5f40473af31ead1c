"""The built-in nginx driver: one upstream file deploykit owns, replaced whole, checked by `nginx -t`, reloaded.

The file is written beside and renamed into place (remote/router.py), with
the colour in its header; `nginx -t` then reads the whole configuration with
it, and only when that passes does `nginx -s reload` make nginx use it. When
`nginx -t` (or the reload) fails, the file it replaced is renamed back and
nothing is reloaded: nginx serves what it served before. The colour is also
recorded in the router host's state file (layout.router_state). A reload is
asynchronous: with the router's `pid_file`, a switch returns once nginx's
workers from before it are gone (at most RELOAD_WAIT), so the colour it
says nginx serves is the one every new request gets.
"""
from __future__ import annotations

from .. import layout
from ..config.models import RELOAD_WAIT
from ..state.journal import utc_now
from .base import Router, RouterError


def install_checked(host, nginx: str, path: str, text: str) -> tuple[str, str] | None:
    """Put `text` in place of the upstream file at `path` (beside, then renamed), `nginx -t`, reload.

    None when nginx reloaded with it; else (what failed, its output) after the previous file was put back and
    nothing reloaded, so nginx serves what it served before. Shared by the router and the balancer."""
    previous = layout.previous_of(path)
    doc = host.helper("router", "install_upstream", {"path": path, "previous": previous, "text": text})
    for args, what in (("-t", "refused the new upstream file"), ("-s reload", "did not reload")):
        res = host.run(f"{host.render(nginx)} {args}", check=False)
        if not res.ok:
            host.helper("router", "put_back", {"path": path, "previous": previous, "had_previous": doc["had_previous"]})
            return f"nginx {args} {what}", res.tail(2)
    return None


def check_nginx(host, nginx: str, path: str) -> list[str]:
    """Read-only, before any change: the upstream file's directory exists and `nginx -t` passes. Shared by the
    router and the balancer."""
    problems = []
    if not host.helper("router", "read_upstream", {"path": path}).get("dir_exists"):
        problems.append(f"{host.name}: no directory for the upstream file {path}")
    res = host.run(f"{host.render(nginx)} -t", check=False, read_only=True)
    if not res.ok:
        problems.append(f"{host.name}: nginx -t fails before any change ('{host.render(nginx)} -t'): {res.tail(2)}")
    return problems


def upstream_text(name: str, colour: str, servers: list[str], run_id: str) -> str:
    lines = [f"# deploykit colour: {colour}",
             f"# written by deploykit run {run_id} at {utc_now()}; 'deploykit switch' rewrites this file whole",
             f"upstream {name} {{"]
    lines += [f"    server {s};" for s in servers]
    return "\n".join(lines + ["}", ""])


class NginxRouter(Router):
    kind = "nginx"

    def _read(self, host) -> dict:
        return host.helper("router", "read_upstream", {"path": self.spec.upstream_file})

    def live(self, ctx, host) -> str | None:
        return self._read(host).get("colour")

    def check(self, ctx, host) -> list[str]:
        return check_nginx(host, self.spec.nginx, self.spec.upstream_file)

    def switch(self, ctx, host, colour: str, servers: list[str]) -> str:
        path = self.spec.upstream_file
        before = self.live(ctx, host)
        pid_file = self.spec.pid_file
        workers = host.helper("balancer", "workers", {"pid_file": pid_file})["workers"] if pid_file else None
        failed = install_checked(host, self.spec.nginx, path, upstream_text(self.spec.upstream, colour, servers,
                                                                             ctx.run_id))
        if failed:
            raise RouterError(
                f"{host.name}: {failed[0]}: {failed[1]}; the previous upstream file was put back "
                f"and nginx was not reloaded: the router serves {before or 'no colour'} as before",
                hint=f"fix the nginx configuration on {host.name} (run '{host.render(self.spec.nginx)} -t' "
                     "there), then switch again")
        host.write_json(layout.router_state(host), {"colour": colour, "servers": servers, "since": utc_now(),
                                                    "run_id": ctx.run_id, "upstream_file": path})
        said = f"{before or 'none'} -> {colour} ({', '.join(servers)})"
        if pid_file:  # the reload is asynchronous: until the old workers are gone, some requests see the old file
            res = host.helper("balancer", "wait_reloaded", {"pid_file": pid_file, "before": workers,
                                                            "old_gone": True, "timeout": RELOAD_WAIT},
                              timeout=RELOAD_WAIT + 30)
            if not res["done"]:
                said += (f"; nginx's old workers still finish requests after {RELOAD_WAIT:g} s" if res["new"]
                         else f"; nginx started no new worker within {RELOAD_WAIT:g} s: see its error log")
        return said
