"""The `colours:` section resolved: stages that exist, the router's driver, each colour's addresses.

What only the whole document can tell (a colour that is not a stage, a
router stage nobody defined, a colour host without a port to reach it) is
refused here, at load, with the key and the fix.
"""
from __future__ import annotations

from pathlib import Path

from .checks import Template, templates
from .models import Colours
from .problems import fail
from .specs import ColoursSpec, HostSpec, RouterSpec

# filled in by the command driver, not by the host's vars
ROUTER_WORDS = ("colour", "servers")


def resolve(path: Path, doc: Colours | None, stages: dict[str, list[HostSpec]]) -> ColoursSpec | None:
    if doc is None:
        return None
    known = ", ".join(sorted(stages))
    for i, name in enumerate(doc.stages):
        if name not in stages:
            raise fail(path, f"colours.stages[{i}]", f"{name!r} is not a stage (known: {known})",
                       "name two stages of 'stages:' (blue and green)")
    r = doc.router
    if r.stage not in stages:
        raise fail(path, "colours.router.stage", f"{r.stage!r} is not a stage (known: {known})",
                   "name the stage whose hosts run the router, e.g. 'edge: {hosts: [deploy@10.0.0.2]}'")
    servers = {colour: list(doc.servers.get(colour) or default_servers(path, colour, stages[colour]))
               for colour in doc.stages}
    if r.nginx is not None:
        spec = RouterSpec(r.stage, "nginx", upstream_file=r.nginx.upstream_file, upstream=r.nginx.upstream,
                          nginx=r.nginx.command, pid_file=r.nginx.pid_file, check=r.check,
                          check_timeout=r.check_timeout)
        found = [Template("colours.router.nginx.command", spec.nginx)]
    else:
        spec = RouterSpec(r.stage, "command", switch=r.command.switch, live=r.command.live, check=r.check,
                          check_timeout=r.check_timeout)
        found = [Template("colours.router.command.switch", _without_words(spec.switch)),
                 Template("colours.router.command.live", spec.live)]
    if r.check is not None:
        found.append(Template("colours.router.check", r.check))
    templates(path, {r.stage: stages[r.stage]}, found)  # rendered on the router's hosts only
    return ColoursSpec(list(doc.stages), spec, servers)


def default_servers(path: Path, colour: str, hosts: list[HostSpec]) -> list[str]:
    """Each app host of the colour as hostname:port, its `port` var."""
    out = []
    for h in hosts:
        if "app" not in h.roles:
            continue
        if "port" not in h.vars:
            raise fail(path, f"colours.servers.{colour}", f"host {h.name} of stage {colour} has no 'port' var, "
                       "so the router's address of it is unknown", f"set vars: {{port: 8000}} on stage {colour} "
                       f"(or its hosts), or list colours.servers.{colour}")
        out.append(f"{h.hostname}:{h.vars['port']}")
    return out


def _without_words(text: str) -> str:
    for word in ROUTER_WORDS:
        text = text.replace("{" + word + "}", "")
    return text
