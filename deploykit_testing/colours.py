"""Blue/green made of real parts: two colour stages of the sample project, and nginx in front of them.

`make_colours()` starts what an operator has before a first `deploykit
switch`: three sshd hosts (host1 runs blue, host2 green, host3 the router),
on each colour host gunicorn under supervisord with its own SQLite database
(the colours share nothing), and on the router host a real nginx (see
nginx.py) whose upstream file deploykit owns. Before any switch nginx serves
blue from an upstream file deploykit did not write (no colour is live).
"""
from __future__ import annotations

import json
import shlex
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deploykit.config import load_config
from .nginx import Nginx
from .ports import free_port
from .supervisor import Supervisor, supervisor_command

UPSTREAM = "library"


@dataclass
class Colours:
    config_path: Path
    rig: object
    nginx: Nginx
    http: dict = field(default_factory=dict)  # colour -> "addr:port" of its gunicorn
    supervisors: list = field(default_factory=list)

    @property
    def router_host(self):
        return self.rig.hosts[2]

    def host(self, colour: str):
        return self.rig.hosts[0 if colour == "blue" else 1]

    def config(self):
        return load_config(self.config_path)

    def through_router(self, path: str = "/"):
        """(status, JSON or text) of a GET through nginx."""
        status, body = self.nginx.get(path)
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def version(self) -> str | None:
        """The version the app answers through nginx (None: no JSON answer)."""
        status, body = self.through_router("/")
        return body.get("version") if status == 200 and isinstance(body, dict) else None

    def router_state(self) -> dict | None:
        path = self.router_host.deploy_to / ".deploykit" / "router.json"
        return json.loads(path.read_text()) if path.exists() else None

    def cli_argv(self, *args: str, config: Path | None = None) -> list[str]:
        return [sys.executable, "-m", "deploykit.cli", *args, "--config", str(config or self.config_path)]

    def edit(self, change, path: Path) -> Path:
        """A copy of the config with `change(doc)` applied, written to path."""
        doc = yaml.safe_load(self.config_path.read_text())
        change(doc)
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def stop(self) -> None:
        for sup in self.supervisors:
            try:
                sup.shutdown()
            except Exception:
                pass


def make_colours(rig, repo: Path, wheelhouse: Path, nginx_factory) -> Colours:
    """blue on rig.hosts[0], green on rig.hosts[1], nginx on rig.hosts[2] (the stage 'edge')."""
    tag = uuid.uuid4().hex[:8]
    edge = rig.hosts[2]
    stages, http = {}, {}
    supervisors = []
    for colour, h in (("blue", rig.hosts[0]), ("green", rig.hosts[1])):
        shared = h.deploy_to / "shared"
        shared.mkdir(parents=True, exist_ok=True)
        (shared / "db.sqlite3").touch()  # an empty SQLite database: the release migrates it
        (shared / ".env").write_text(f"DB_ENGINE=sqlite\nDB_NAME={shared / 'db.sqlite3'}\n"
                                     f"MEDIA_ROOT={shared / 'media'}\nSECRET_KEY=test-{uuid.uuid4().hex}\n")
        port = free_port(h.address)
        http[colour] = f"{h.address}:{port}"
        sup = Supervisor.start(h.root / "sv", {"web": {
            "command": f"{h.deploy_to / 'current' / '.venv' / 'bin' / 'python'} -m gunicorn "
                       f"--chdir {h.deploy_to / 'current'} --bind {http[colour]} --workers 1 libsite.wsgi",
            "directory": str(h.deploy_to)}})
        supervisors.append(sup)
        stages[colour] = {"hosts": [{"name": h.name, "address": f"{rig.user}@{h.address}:{h.port}",
                                     "deploy_to": str(h.deploy_to),
                                     "vars": {"port": port, "http": http[colour], "supervisor_conf": str(sup.conf)}}]}
    nginx = nginx_factory(edge.root / "nginx", UPSTREAM, [http["blue"]])
    # the router host runs no app: its vars only satisfy the app's templates, which every stage renders
    stages["edge"] = {"hosts": [{"name": edge.name, "address": f"{rig.user}@{edge.address}:{edge.port}",
                                 "deploy_to": str(edge.deploy_to),
                                 "vars": {"port": nginx.port, "http": "-", "supervisor_conf": "/nonexistent"}}]}
    cfg = {
        "app": "library",
        "repo": str(repo),
        "deploy_to": "/nonexistent",  # every host sets its own
        "python": sys.executable,
        "settings_module": "libsite.settings",
        "ssh": {"known_hosts": str(rig.known_hosts), "identity": str(rig.client_key), "connect_timeout": 5},
        "stages": stages,
        "shared": [".env"],
        "venv": {"system_site_packages": True, "pip_args": ["--no-index", "--find-links", str(wheelhouse)]},
        "processes": [{"name": "web", "supervisor": {
            "program": "web", "conf": "{supervisor_conf}",
            "supervisorctl": shlex.join(supervisor_command("supervisorctl"))}}],
        "databases": {"default": {"engine": "sqlite", "path": "shared/db.sqlite3"}},
        "health": [{"http": "http://{http}/health/", "json": {"status": "ok"}, "expect_status": 200, "timeout": 10}],
        "colours": {"stages": ["blue", "green"], "router": {
            "stage": "edge",
            "nginx": {"upstream_file": str(nginx.upstream_file), "upstream": UPSTREAM, "command": nginx.command},
            "check": f"http://{nginx.address}:{{port}}/", "check_timeout": 10}},
        "journal_dir": str(repo / ".deploykit" / f"colours-{tag}"),
    }
    path = repo / f"deploykit-colours-{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return Colours(path, rig, nginx, http, supervisors)
