"""The built-in nginx balancer: one upstream file deploykit owns lists every app server, a drained one `down`.

A drain or a restore writes the whole file beside and renames it into place
(remote/router.py), then `nginx -t` and `nginx -s reload`; when either fails
the file it replaced is put back and nothing is reloaded. A reload makes the
master start new workers with the new file and tell the old ones to finish
their requests and exit: a drain returns once every worker from before the
reload is gone (remote/balancer.py apply, up to drain_timeout), so no
request is in flight on the drained server any more. Errors are counted from
an access log in deploykit's format (LOG_FORMAT, which the operator's
nginx.conf declares and its server uses: `access_log PATH deploykit;`).
"""
from __future__ import annotations

from .. import layout
from ..state.journal import utc_now
from .balancer import Balancer, BalancerError, NotInUseYet
from .nginx import check_nginx

#: the access log format errors() reads: one JSON object a line (nginx >= 1.11.8 for escape=json)
LOG_FORMAT = ("log_format deploykit escape=json '{\"msec\":\"$msec\",\"status\":\"$status\","
              "\"method\":\"$request_method\",\"upstream_addr\":\"$upstream_addr\","
              "\"upstream_status\":\"$upstream_status\",\"request_time\":\"$request_time\"}';")


def upstream_text(name: str, servers: list[str], drained, run_id: str, options: str | None = None,
                  directives: list[str] | tuple = ()) -> str:
    """The upstream block: every server, the drained ones `down` (nginx sends them no new request)."""
    down = [s for s in servers if s in drained]
    lines = [f"# deploykit balancer: {name}",
             f"# drained: {', '.join(down) or 'none'}",
             f"# written by deploykit run {run_id} at {utc_now()}; deploykit rewrites this file whole",
             f"upstream {name} {{"]
    lines += [f"    {d};" for d in directives]
    for s in servers:
        words = [s] + ([options] if options else []) + (["down"] if s in down else [])
        lines.append(f"    server {' '.join(words)};")
    return "\n".join(lines + ["}", ""])


class NginxBalancer(Balancer):
    kind = "nginx"

    def _state_extra(self) -> dict:
        return {"upstream": self.spec.upstream, "upstream_file": self.spec.upstream_file}

    def _workers(self, host) -> list:
        try:
            return host.helper("balancer", "workers", {"pid_file": self.spec.pid_file})["workers"]
        except BalancerError:
            raise
        except Exception as exc:  # noqa: BLE001 - a helper's failure: said as the balancer's
            raise BalancerError(f"{host.name}: cannot see nginx's workers: {_said(exc)}",
                                hint="set rollout.balancer.nginx.pid_file to nginx's 'pid' and check nginx "
                                     "runs") from None

    # -- read-only -------------------------------------------------------------------
    def check(self, ctx, host) -> list[str]:
        problems = check_nginx(host, self.spec.nginx, self.spec.upstream_file)
        try:
            self._workers(host)
        except BalancerError as exc:
            problems.append(str(exc))
        end = self.mark(ctx, host)
        if end["inode"] is None:
            problems.append(f"{host.name}: no access log at {self.spec.access_log} (nginx writes it in "
                            "deploykit's format: 'access_log PATH deploykit;')")
        else:
            tail = host.helper("balancer", "count", {"path": self.spec.access_log, "since": {
                **end, "offset": max(0, end["offset"] - 8192), "time": 0}})
            if tail["requests"] == 0 and tail["unparsed"] > 1:  # the first line read may be cut
                problems.append(f"{host.name}: the access log {self.spec.access_log} is not in deploykit's format "
                                "(declare LOG_FORMAT of deploykit.routers.nginx_balancer in nginx.conf and write "
                                "'access_log PATH deploykit;')")
        return problems

    def mark(self, ctx, host) -> dict:
        return host.helper("balancer", "mark", {"path": self.spec.access_log})

    def errors(self, ctx, host, since) -> dict:
        if not isinstance(since, dict):  # epoch seconds on the balancer host's clock
            since = {"time": float(since), "inode": None, "offset": 0}
        return host.helper("balancer", "count", {"path": self.spec.access_log, "since": since})

    # -- changes ---------------------------------------------------------------------
    def drain(self, ctx, host, server: str) -> str:
        return self.drain_all(ctx, host, [server])

    def drain_all(self, ctx, host, servers: list[str]) -> str:
        """Every server of `servers` marked down in one upstream file and one reload."""
        for server in servers:
            self._known(server)
        before = self.state(host)["drained"]
        drained = {s: v for s, v in before.items() if s in self.servers}
        for server in servers:
            drained.setdefault(server, {"since": utc_now(), "run_id": ctx.run_id})
        self._refuse_last(host, drained, ", ".join(servers))
        try:  # recorded first: a run that dies mid-way leaves them listed as drained
            waited = self._apply(ctx, host, drained, old_gone=True, record="before")
        except NotInUseYet:
            raise  # the file nginx checked is in place: the servers stay listed as drained
        except BalancerError:
            self._record(ctx, host, {s: v for s, v in before.items() if s in self.servers})
            raise
        return f"{', '.join(servers)} drained on {host.name} (old workers gone after {waited:.2f} s)"

    def restore(self, ctx, host, server: str) -> str:
        return self.restore_all(ctx, host, [server])

    def restore_all(self, ctx, host, servers: list[str]) -> str:
        for server in servers:
            self._known(server)
        drained = {s: v for s, v in self.state(host)["drained"].items() if s in self.servers and s not in servers}
        # recorded after: until nginx uses the file, the servers stay listed as drained
        self._apply(ctx, host, drained, old_gone=False, record="after")
        return f"{', '.join(servers)} restored on {host.name}"

    def _apply(self, ctx, host, drained: dict, old_gone: bool, record: str) -> float:
        """Record `drained` (`record`: before the change, or once nginx uses it), install the upstream file
        for it, check it, reload, wait until nginx uses it; seconds waited.

        One call of the balancer helper on the host (remote/balancer.py apply): a batch's drain is one round
        trip, not one per file and command."""
        text = upstream_text(self.spec.upstream, self.servers, drained, ctx.run_id, self.spec.server_options,
                             self.spec.directives)
        nginx = host.render(self.spec.nginx)
        timeout = self.spec.drain_timeout
        # a helper that fails past the install says so as a DeployError: the servers stay listed as drained
        res = host.helper("balancer", "apply", {
            "pid_file": self.spec.pid_file, "path": self.spec.upstream_file,
            "previous": layout.previous_of(self.spec.upstream_file), "text": text,
            "check": f"{nginx} -t", "reload": f"{nginx} -s reload", "old_gone": old_gone,
            "timeout": timeout, "record": {"path": layout.balancer_state(host), "when": record,
                                           "data": self._state_doc(ctx, drained)}}, timeout=timeout + 90)
        if res.get("failed"):
            failed = res["failed"]
            raise BalancerError(
                f"{host.name}: {failed[0]}: {failed[1]}; the previous upstream file was put back and "
                "nginx was not reloaded: the balancer serves as before",
                hint=f"fix the nginx configuration on {host.name} (run '{nginx} -t' there), then run again")
        if not res["done"]:
            if not res["new"]:
                raise NotInUseYet(f"{host.name}: nginx started no new worker within {timeout:g} s of the reload; "
                                  "the new upstream file is in place but may not be in use",
                                  hint="see nginx's error log on the balancer host, then run again")
            else:
                raise NotInUseYet(f"{host.name}: nginx's old workers (pids {', '.join(map(str, res['left']))}) "
                                  f"still serve requests {timeout:g} s after the reload; new requests avoid the "
                                  "drained server, but some in flight there have not ended",
                                  hint="raise rollout.balancer.drain_timeout, or bound nginx's wait with "
                                       "worker_shutdown_timeout; 'restore' puts the server back")
        return res["waited"]


def _said(exc: Exception) -> str:
    return exc.one_line() if hasattr(exc, "one_line") else str(exc)
