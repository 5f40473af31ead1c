"""The command driver of a balancer: the operator's own commands, run on the balancer host in its deploy_to.

`drain` gets {server} (a quoted word) and must exit 0 only once no request
is in flight there; `restore` gets {server} and exits 0 once it takes
requests again; `errors` gets {since} (epoch seconds with a fraction, on the
balancer host's clock) and prints one JSON object {"requests": N, "errors":
M} of what the balancer answered since then (read-only: the preflight and the
gates run it). A server whose drain command failed stays listed as drained
(its state is unknown; a restore of it is expected to be harmless).
"""
from __future__ import annotations

import json

from ..transport.host import q
from .balancer import Balancer, BalancerError


class CommandBalancer(Balancer):
    kind = "command"

    def _command(self, host, template: str, **words) -> str:
        cmd = host.render(template)
        for word, value in words.items():
            cmd = cmd.replace("{" + word + "}", q(value))
        return cmd

    def check(self, ctx, host) -> list[str]:
        try:
            self.errors(ctx, host, self.mark(ctx, host))
        except BalancerError as exc:
            return [str(exc)]
        return []

    def mark(self, ctx, host) -> dict:
        return {"time": host.helper("balancer", "mark", {})["time"]}

    def errors(self, ctx, host, since) -> dict:
        when = since["time"] if isinstance(since, dict) else float(since)
        res = host.run(self._command(host, self.spec.errors, since=f"{when:.3f}"), cwd=host.deploy_to, check=False,
                       read_only=True)
        fix = "fix rollout.balancer.command.errors: it prints {\"requests\": N, \"errors\": M}"
        if not res.ok:
            raise BalancerError(f"{host.name}: the balancer's errors command failed: {res.tail(2)}", hint=fix)
        try:
            doc = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise BalancerError(f"{host.name}: the balancer's errors command printed {res.stdout.strip()[:80]!r}, "
                                "not one JSON object", hint=fix) from None
        if not isinstance(doc, dict) or not all(isinstance(doc.get(k), int) and not isinstance(doc.get(k), bool)
                                                and doc[k] >= 0 for k in ("requests", "errors")):
            raise BalancerError(f"{host.name}: the balancer's errors command printed {json.dumps(doc)[:80]}, "
                                "without whole numbers 'requests' and 'errors'", hint=fix)
        return doc

    def drain(self, ctx, host, server: str) -> str:
        self._known(server)
        drained = self._with(ctx, host, server)
        self._refuse_last(host, drained, server)
        self._record(ctx, host, drained)  # first: whatever the command did, a rerun restores it
        res = host.run(self._command(host, self.spec.drain, server=server), cwd=host.deploy_to, check=False,
                       timeout=self.spec.drain_timeout + 30)
        if not res.ok:
            raise BalancerError(f"{host.name}: the balancer's drain command failed for {server}: {res.tail(2)}; it "
                                "stays listed as drained", hint="see what the drain command printed; fix it, then "
                                "restore the server or run again")
        return f"{server} drained on {host.name}"

    def restore(self, ctx, host, server: str) -> str:
        self._known(server)
        res = host.run(self._command(host, self.spec.restore, server=server), cwd=host.deploy_to, check=False)
        if not res.ok:
            raise BalancerError(f"{host.name}: the balancer's restore command failed for {server}: {res.tail(2)}; "
                                "it stays listed as drained", hint="see what the restore command printed; fix it, "
                                "then run again")
        self._record(ctx, host, self._without(host, server))
        return f"{server} restored on {host.name}"
