"""A fleet made of real parts: n app hosts of the sample project behind a real nginx that balances over them.

`make_balanced_fleet()` starts what an operator has before a first rolling
release: n sshd app hosts (stage `prod`, built by stage.make_stage: gunicorn
under supervisord on each, host1 the primary, one shared PostgreSQL database
of the initdb cluster), and one more sshd host (stage `edge`) whose nginx
(nginx.py, unprivileged) balances over all n from the upstream file
`rollout.balancer.nginx` names. nginx is set up as an operator would for
rolling releases: a connection refused or a 502/503/504 is retried on the
next server (`proxy_next_upstream`, at most 3 tries, connect timeout 2 s;
POSTs only when they never reached the server, nginx's default), and an
access log in deploykit's format (routers/nginx_balancer.LOG_FORMAT) that the
balancer's errors() reads. Before any drain the upstream file lists every
server and nothing is drained. Traffic: load.LoadLoop(fleet.nginx.url()).
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml

from deploykit.config import load_config
from deploykit.routers.nginx_balancer import LOG_FORMAT
from .nginx import Nginx
from .stage import DeployedStage, make_stage

UPSTREAM = "library"
STAGE = "prod"
EDGE = "edge"
NEXT_UPSTREAM = ["proxy_next_upstream error timeout http_502 http_503 http_504;",
                 "proxy_next_upstream_tries 3;", "proxy_connect_timeout 2s;", "proxy_read_timeout 30s;"]


class _AppHosts:
    """The rig as make_stage sees it: only its first n hosts."""

    def __init__(self, rig, n: int):
        self._rig, self.hosts = rig, rig.hosts[:n]

    def __getattr__(self, name):
        return getattr(self._rig, name)


@dataclass
class BalancedFleet:
    stage: DeployedStage  # the app hosts (stage prod) and their database
    rig: object  # every sshd host: the app hosts, then the balancer host
    nginx: Nginx

    @property
    def config_path(self) -> Path:
        return self.stage.config_path

    @property
    def app_hosts(self) -> list:
        return self.stage.hosts

    @property
    def router_host(self):
        return self.rig.hosts[-1]

    @property
    def access_log(self) -> Path:
        return self.nginx.prefix / "balancer.log"

    def config(self):
        return load_config(self.config_path)

    def env(self) -> dict:
        return self.stage.env()

    def server(self, host) -> str:
        """The address nginx reaches an app host at (its gunicorn's bind address)."""
        return self.stage.http[host.name]

    def supervisor(self, host):
        return self.stage.supervisors[self.app_hosts.index(host)]

    def balancer_state(self) -> dict | None:
        path = self.router_host.deploy_to / ".deploykit" / "balancer.json"
        return json.loads(path.read_text()) if path.exists() else None

    def titles(self) -> set[str]:
        """Every book title in the shared database."""
        return {row[0] for row in self.stage.pg.execute(self.stage.db, "SELECT title FROM library_book")}

    @contextmanager
    def balancer(self, command: str = "balance"):
        """(balancer driver, a run's Context on the edge stage, the balancer Host) for calling the driver as a
        step would; the hosts' connections are closed after."""
        from deploykit.engine.context import Context
        from deploykit.routers import balancer_for

        cfg = self.config()
        ctx = Context(cfg, EDGE, command=command)
        try:
            yield balancer_for(cfg), ctx, ctx.hosts[0]
        finally:
            for h in ctx.every_host:
                h.close()

    def cli_argv(self, *args: str, config: Path | None = None) -> list[str]:
        return [sys.executable, "-m", "deploykit.cli", *args, "--config", str(config or self.config_path)]

    def stop(self) -> None:
        self.stage.stop()


def make_balanced_fleet(rig, pg, repo: Path, wheelhouse: Path, nginx_factory, n: int = 4) -> BalancedFleet:
    """rig.hosts[:n] the app hosts of stage prod (host1 the primary), rig.hosts[n] nginx (stage edge)."""
    if len(rig.hosts) != n + 1:
        raise ValueError(f"a fleet of {n} app hosts needs a rig of {n + 1} hosts, got {len(rig.hosts)}")
    stage = make_stage(_AppHosts(rig, n), pg, repo, STAGE, wheelhouse=wheelhouse)
    edge = rig.hosts[n]
    prefix = edge.root / "nginx"
    nginx = nginx_factory(prefix, UPSTREAM, [stage.http[h.name] for h in stage.hosts],
                          http_extra=[LOG_FORMAT], server_extra=[f"access_log {prefix / 'balancer.log'} deploykit;"],
                          location_extra=NEXT_UPSTREAM)
    doc = yaml.safe_load(stage.config_path.read_text())
    # the balancer host runs no app: its vars only satisfy the app's templates, which every stage renders
    doc["stages"][EDGE] = {"hosts": [{"name": edge.name, "address": f"{rig.user}@{edge.address}:{edge.port}",
                                      "deploy_to": str(edge.deploy_to),
                                      "vars": {"http": "-", "supervisor_conf": "/nonexistent"}}]}
    doc["rollout"] = {"balancer": {
        "stage": EDGE, "serves": STAGE, "server": "{http}", "drain_timeout": 30,
        "nginx": {"upstream_file": str(nginx.upstream_file), "upstream": UPSTREAM, "command": nginx.command,
                  "pid_file": str(nginx.pid_file), "access_log": str(prefix / "balancer.log"),
                  "server_options": "max_fails=1 fail_timeout=2s"}}}
    stage.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return BalancedFleet(stage, rig, nginx)
