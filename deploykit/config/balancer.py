"""The `rollout.balancer:` key resolved: stages that exist, the driver, each app host's address.

What only the whole document can tell (a stage nobody defined, an app host
whose address template has no value, two hosts at one address, the same
upstream file as the blue/green router's) is refused here, at load, with the
key and the fix.
"""
from __future__ import annotations

import re
from pathlib import Path

from .checks import Template, templates
from .models import BalancerSpec
from .problems import fail
from .specs import BalancerConfig, ColoursSpec, HostSpec

# filled in by the command driver, not by the host's vars
BALANCER_WORDS = ("server", "since")
# what nginx accepts as a server address (host:port, [v6]:port, unix:/path); no space, ';' or braces
SERVER = re.compile(r"^(?:unix:/[^\s;{}'\"]+|[A-Za-z0-9_.:\[\]-]+)$")


def resolve(path: Path, doc: BalancerSpec | None, stages: dict[str, list[HostSpec]],
            colours: ColoursSpec | None = None) -> BalancerConfig | None:
    if doc is None:
        return None
    known = ", ".join(sorted(stages))
    for key, name, fix in (("stage", doc.stage, "name the stage whose hosts run the balancer, e.g. 'edge'"),
                           ("serves", doc.serves, "name the stage whose app hosts it balances, e.g. 'prod'")):
        if name not in stages:
            raise fail(path, f"rollout.balancer.{key}", f"{name!r} is not a stage (known: {known})", fix)
    if doc.stage == doc.serves:
        raise fail(path, "rollout.balancer.stage", f"is the stage it serves ({doc.serves})",
                   "run the balancer on hosts of a stage of their own (e.g. 'edge'), as colours.router does")
    servers = _servers(path, doc.server, doc.serves, stages[doc.serves])
    found = []
    if doc.nginx is not None:
        n = doc.nginx
        if colours is not None and colours.router.upstream_file == n.upstream_file:
            raise fail(path, "rollout.balancer.nginx.upstream_file", "is the blue/green router's upstream file too",
                       "give the balancer an upstream file of its own (each is rewritten whole)")
        spec = BalancerConfig(doc.stage, doc.serves, "nginx", servers, doc.drain_timeout,
                              upstream_file=n.upstream_file, upstream=n.upstream, nginx=n.command,
                              pid_file=n.pid_file, access_log=n.access_log, server_options=n.server_options,
                              directives=list(n.directives))
        found.append(Template("rollout.balancer.nginx.command", spec.nginx))
    else:
        c = doc.command
        spec = BalancerConfig(doc.stage, doc.serves, "command", servers, doc.drain_timeout,
                              drain=c.drain, restore=c.restore, errors=c.errors)
        found += [Template(f"rollout.balancer.command.{verb}", _without_words(getattr(c, verb)))
                  for verb in ("drain", "restore", "errors")]
    templates(path, {doc.stage: stages[doc.stage]}, found)  # rendered on the balancer's hosts only
    return spec


def _servers(path: Path, template: str, stage: str, hosts: list[HostSpec]) -> dict[str, str]:
    """Each app host of the served stage -> `template` rendered with its vars."""
    app = [h for h in hosts if "app" in h.roles]
    templates(path, {stage: app}, [Template("rollout.balancer.server", template)])
    out: dict[str, str] = {}
    for h in app:
        address = h.render(template)
        if not SERVER.match(address):
            raise fail(path, "rollout.balancer.server", f"is {address!r} for host {h.name}, not an address nginx "
                       "takes", "write host:port (e.g. '{hostname}:{port}') or unix:/path")
        other = next((name for name, a in out.items() if a == address), None)
        if other is not None:
            raise fail(path, "rollout.balancer.server", f"is {address!r} for both {other} and {h.name}",
                       "give each app host its own address (a var such as {port} or {http} per host)")
        out[h.name] = address
    return out


def _without_words(text: str) -> str:
    for word in BALANCER_WORDS:
        text = text.replace("{" + word + "}", "")
    return text
