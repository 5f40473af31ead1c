"""The router in front of the colours behind one interface, whatever the router is.

Each driver is a module here with one class (see `base.Router`); `ROUTERS`
maps the config's driver name (`colours.router.nginx` or `.command`) to it.
Steps call `router_for(config)` and never look at which driver it is.
"""
from __future__ import annotations

from .base import Router, RouterError
from .command import CommandRouter
from .nginx import NginxRouter

#: config driver name -> class (the one registration line per driver)
ROUTERS: dict[str, type[Router]] = {
    "nginx": NginxRouter,
    "command": CommandRouter,
}


def router_for(config) -> Router:
    """The driver of the configured router (`config.colours.router`)."""
    spec = config.colours.router
    try:
        cls = ROUTERS[spec.driver]
    except KeyError:
        raise ValueError(f"unknown router driver {spec.driver!r} (known: {', '.join(ROUTERS)})") from None
    return cls(spec, list(config.colours.stages))


__all__ = ["ROUTERS", "Router", "RouterError", "router_for"]
