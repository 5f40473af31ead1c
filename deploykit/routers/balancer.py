"""The interface every balancer driver keeps: one stage's app servers, some drained, behind one balancer.

A rolling release drains a host (`drain`: no new request goes there and the
ones in flight ended), switches and restarts it, checks it and puts it back
(`restore`); between batches its gate asks `errors` what the balancer answered
since a `mark`. `check`, `drained`, `mark` and `errors` are read-only (the
preflight and dry-runs run them). `drain` and `restore` either succeed or
raise BalancerError; a refused change leaves the balancer as it was.

Which servers are drained is recorded in the balancer host's state
(layout.balancer_state) before a drain changes anything and after a restore
did, so a rerun or a recovery that reads `drained` never misses one that is
out of the balancer.
"""
from __future__ import annotations

from .. import layout
from ..errors import DeployError
from ..state.journal import utc_now


class BalancerError(DeployError):
    """The balancer refused a drain or a restore, or did not finish one in time; the message says its state."""


class NotInUseYet(BalancerError):
    """The change is in place (nginx checked it) but was not seen in use in time: a drained server stays drained."""


class Balancer:
    kind = ""

    def __init__(self, spec):
        self.spec = spec  # config.BalancerConfig

    # -- what it balances --------------------------------------------------------
    @property
    def servers(self) -> list[str]:
        """Every app server of the served stage, in the stage's order."""
        return list(self.spec.servers.values())

    def server_of(self, host) -> str:
        """The address the balancer reaches an app host at (a Host, a HostSpec or a host name)."""
        name = host if isinstance(host, str) else host.name
        try:
            return self.spec.servers[name]
        except KeyError:
            raise BalancerError(f"{name} is not an app host of stage {self.spec.serves}, which the balancer serves",
                                hint="drain only the app hosts of rollout.balancer.serves") from None

    def _known(self, server: str) -> None:
        if server not in self.servers:
            raise BalancerError(f"{server!r} is not one of the balancer's servers ({', '.join(self.servers)})",
                                hint="use the address of an app host (Balancer.server_of)")

    # -- state on the balancer host ------------------------------------------------
    def state(self, host) -> dict:
        """The balancer host's record: {"servers": [...], "drained": {server: {"since", "run_id"}}, ...}."""
        doc = host.read_json(layout.balancer_state(host)) or {}
        doc.setdefault("drained", {})
        return doc

    def drained(self, ctx, host) -> list[str]:
        """The servers recorded as drained on this balancer host (in the servers' order)."""
        marked = self.state(host)["drained"]
        return [s for s in self.servers if s in marked] + sorted(s for s in marked if s not in self.servers)

    def _record(self, ctx, host, drained: dict) -> None:
        host.write_json(layout.balancer_state(host), self._state_doc(ctx, drained))

    def _state_doc(self, ctx, drained: dict) -> dict:
        return {"kind": self.kind, "servers": self.servers, "drained": drained, "updated": utc_now(),
                "run_id": ctx.run_id, **self._state_extra()}

    def _state_extra(self) -> dict:
        return {}

    def _with(self, ctx, host, server: str) -> dict:
        drained = {s: v for s, v in self.state(host)["drained"].items() if s in self.servers}
        drained.setdefault(server, {"since": utc_now(), "run_id": ctx.run_id})
        return drained

    def _without(self, host, server: str) -> dict:
        return {s: v for s, v in self.state(host)["drained"].items() if s in self.servers and s != server}

    def _refuse_last(self, host, drained: dict, server: str) -> None:
        if all(s in drained for s in self.servers):
            raise BalancerError(f"{host.name}: draining {server} would leave no server in the balancer (drained: "
                                f"{', '.join(s for s in self.servers if s in drained)})",
                                hint="restore a drained server first; a rolling batch must leave one serving")

    # -- the driver's part ---------------------------------------------------------------
    def check(self, ctx, host) -> list[str]:
        """Read-only, for preflight: what would stop a drain, restore or error count on this host ([]: none)."""
        raise NotImplementedError

    def drain(self, ctx, host, server: str) -> str:
        """Take `server` out: return once no new request goes there and the ones in flight ended."""
        raise NotImplementedError

    def restore(self, ctx, host, server: str) -> str:
        """Put `server` back: return once the balancer sends it requests again."""
        raise NotImplementedError

    def drain_all(self, ctx, host, servers: list[str]) -> str:
        """Take several servers out at once (a rolling batch); a driver that can does it in one change."""
        return "; ".join(self.drain(ctx, host, s) for s in servers)

    def restore_all(self, ctx, host, servers: list[str]) -> str:
        """Put several servers back at once (a rolling batch)."""
        return "; ".join(self.restore(ctx, host, s) for s in servers)

    def mark(self, ctx, host) -> dict:
        """Read-only: a point to count errors from (`errors(ctx, host, since=mark)`)."""
        raise NotImplementedError

    def errors(self, ctx, host, since) -> dict:
        """Read-only: {"requests": n, "errors": m, ...} the balancer answered since a mark (m: 5xx, no answer)."""
        raise NotImplementedError
