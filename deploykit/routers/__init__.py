"""The router in front of the colours, and the balancer in front of one stage's app hosts, each behind one
interface, whatever the product is.

Each driver is a module here with one class (see `base.Router`, `balancer.Balancer`); `ROUTERS` maps the
config's driver name (`colours.router.nginx` or `.command`) to a router, `BALANCERS` the one of
`rollout.balancer` to a balancer. Steps call `router_for(config)` / `balancer_for(config)` and never look at
which driver it is.
"""
from __future__ import annotations

from .balancer import Balancer, BalancerError, NotInUseYet
from .base import Router, RouterError
from .command import CommandRouter
from .command_balancer import CommandBalancer
from .nginx import NginxRouter
from .nginx_balancer import NginxBalancer

#: config driver name -> class (the one registration line per driver)
ROUTERS: dict[str, type[Router]] = {
    "nginx": NginxRouter,
    "command": CommandRouter,
}

BALANCERS: dict[str, type[Balancer]] = {
    "nginx": NginxBalancer,
    "command": CommandBalancer,
}


def router_for(config) -> Router:
    """The driver of the configured router (`config.colours.router`)."""
    spec = config.colours.router
    try:
        cls = ROUTERS[spec.driver]
    except KeyError:
        raise ValueError(f"unknown router driver {spec.driver!r} (known: {', '.join(ROUTERS)})") from None
    return cls(spec, list(config.colours.stages))


def balancer_for(config) -> Balancer:
    """The driver of the configured balancer (`config.balancer`, from rollout.balancer)."""
    spec = config.balancer
    if spec is None:
        raise ValueError("no rollout.balancer configured")
    try:
        cls = BALANCERS[spec.driver]
    except KeyError:
        raise ValueError(f"unknown balancer driver {spec.driver!r} (known: {', '.join(BALANCERS)})") from None
    return cls(spec)


__all__ = ["BALANCERS", "ROUTERS", "Balancer", "BalancerError", "NotInUseYet", "Router", "RouterError",
           "balancer_for", "router_for"]
