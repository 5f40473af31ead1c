"""The interface every router driver keeps.

`live` and `check` are read-only (a dry-run and the preflight run them);
`switch` changes the router and either succeeds, or raises RouterError after
leaving the router as it was before (its message says so).
"""
from __future__ import annotations

from ..errors import DeployError


class RouterError(DeployError):
    """The router refused a switch; the driver left it as it was before."""


class Router:
    kind = ""

    def __init__(self, spec, colours: list[str]):
        self.spec = spec  # config.RouterSpec
        self.colours = colours

    def live(self, ctx, host) -> str | None:
        """The colour the router on this host serves now (None: none yet)."""
        raise NotImplementedError

    def switch(self, ctx, host, colour: str, servers: list[str]) -> str:
        """Send the traffic to `colour` (at `servers`); return what changed, in a few words."""
        raise NotImplementedError

    def check(self, ctx, host) -> list[str]:
        """Read-only, for preflight: what would stop a switch on this host (nothing: [])."""
        raise NotImplementedError
