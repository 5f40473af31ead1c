"""Blue/green made of real parts: two colour stages of the sample project, and nginx in front of them.

`make_colours()` starts what an operator has before a first `deploykit
switch`: three sshd hosts (host1 runs blue, host2 green, host3 the router),
on each colour host gunicorn under supervisord with its own SQLite database
(the colours share nothing), and on the router host a real nginx (see
nginx.py) whose upstream file deploykit owns. Before any switch nginx serves
blue from an upstream file deploykit did not write (no colour is live).

With `database="postgresql"` each colour has its own PostgreSQL server
instead (`start_colour_clusters`: two clusters made by initdb, ready for
logical replication between them): the layout of separate hosts, each with
its own local server. The one deploykit.yaml both colours share names the
database without a host or port, as such a config does; each colour host's
sessions get PGHOST/PGPORT of its own cluster (sshd SetEnv, as a login on
that machine would find its server), and its app the same in shared/.env.
Both databases have the same name and the same owner role; they are two
because the servers are two. The admin password is one, in PASSWORD_ENV.
"""
from __future__ import annotations

import json
import os
import secrets
import shlex
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deploykit.config import load_config
from .nginx import Nginx
from .ports import free_port
from .postgres import PgCluster
from .stage import OWNER, OWNER_PASSWORD, PASSWORD_ENV
from .supervisor import Supervisor, supervisor_command

UPSTREAM = "library"
COLOURS = ("blue", "green")
DATABASE = "library"  # both colours' (one config); each in its own server
# what logical replication from one colour's server to the other's needs (mode replicate)
REPLICATION_SETTINGS = {"wal_level": "logical", "max_replication_slots": 10, "max_wal_senders": 10}


def start_colour_clusters(base: Path) -> dict[str, PgCluster]:
    """colour -> its own PostgreSQL cluster (one admin password for both), each with the owner role and the
    database; stop them with stop_clusters."""
    password = secrets.token_urlsafe(18)
    clusters: dict[str, PgCluster] = {}
    try:
        for colour in COLOURS:
            pg = PgCluster.start(base / f"pg-{colour}", admin_password=password, settings=REPLICATION_SETTINGS)
            clusters[colour] = pg
            pg.create_role(OWNER, OWNER_PASSWORD)
            pg.create_database(DATABASE, OWNER)
    except BaseException:
        stop_clusters(clusters)
        raise
    return clusters


def stop_clusters(clusters: dict[str, PgCluster]) -> None:
    for pg in clusters.values():
        try:
            pg.stop()
        except Exception:  # noqa: BLE001 - teardown: stop the others too
            pass


def session_env(pg: PgCluster) -> dict[str, str]:
    """What a colour host's sessions get: where its own server is (libpq's defaults), no password."""
    return {"PGHOST": pg.host, "PGPORT": str(pg.port)}


@dataclass
class Colours:
    config_path: Path
    rig: object
    nginx: Nginx
    http: dict = field(default_factory=dict)  # colour -> "addr:port" of its gunicorn
    supervisors: list = field(default_factory=list)
    clusters: dict = field(default_factory=dict)  # colour -> PgCluster (database="postgresql")
    database: str = "sqlite"

    def pg(self, colour: str) -> PgCluster:
        """The colour's own PostgreSQL server (database="postgresql")."""
        return self.clusters[colour]

    def env(self) -> dict:
        """The environment the `deploykit` command needs (the admin password, for PostgreSQL colours)."""
        extra = {PASSWORD_ENV: self.pg("blue").admin_password} if self.clusters else {}
        return {**os.environ, **extra}

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

    def hook_started(self, phase: str, playbook: str, command: str = "transfer") -> bool:
        """The newest journal of `command` shows the hook before `phase` of `playbook` started (a run waits
        there: the moment a test interrupts it)."""
        runs = sorted(self.config().journal_dir.glob(f"*-{command}-*.jsonl"), key=lambda p: p.stat().st_mtime)
        for line in (runs[-1].read_text().splitlines() if runs else []):
            if '"step_start"' in line and '"hook"' in line:
                e = json.loads(line)
                if e.get("phase") == phase and e.get("playbook") == playbook:
                    return True
        return False

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
        stop_clusters(self.clusters)


def _database_env(shared: Path, pg: PgCluster | None) -> str:
    """The Django DB settings of a colour's shared/.env (the sample project reads DB_*)."""
    if pg is None:
        return f"DB_ENGINE=sqlite\nDB_NAME={shared / 'db.sqlite3'}\n"
    return (f"DB_ENGINE=postgresql\nDB_NAME={DATABASE}\nDB_USER={OWNER}\nDB_PASSWORD={OWNER_PASSWORD}\n"
            f"DB_HOST={pg.host}\nDB_PORT={pg.port}\n")


def make_colours(rig, repo: Path, wheelhouse: Path, nginx_factory, clusters: dict | None = None) -> Colours:
    """blue on rig.hosts[0], green on rig.hosts[1], nginx on rig.hosts[2] (the stage 'edge').

    With `clusters` (start_colour_clusters) the colours use PostgreSQL, each its own server (a colour host
    started without its cluster's session_env gets it now); else each its own SQLite file."""
    tag = uuid.uuid4().hex[:8]
    edge = rig.hosts[2]
    stages, http = {}, {}
    supervisors = []
    clusters = clusters or {}
    for colour, h in (("blue", rig.hosts[0]), ("green", rig.hosts[1])):
        if clusters and any(h.env.get(k) != v for k, v in session_env(clusters[colour]).items()):
            h.set_env({**h.env, **session_env(clusters[colour])})  # a rig started without it
        shared = h.deploy_to / "shared"
        shared.mkdir(parents=True, exist_ok=True)
        if not clusters:
            (shared / "db.sqlite3").touch()  # an empty SQLite database: the release migrates it
        (shared / ".env").write_text(_database_env(shared, clusters.get(colour)) +
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
        "databases": {"default": {"engine": "postgresql", "name": DATABASE, "owner": OWNER,
                                  "admin_user": clusters["blue"].admin_user, "password_env": PASSWORD_ENV}}
        if clusters else {"default": {"engine": "sqlite", "path": "shared/db.sqlite3"}},
        "health": [{"http": "http://{http}/health/", "json": {"status": "ok"}, "expect_status": 200, "timeout": 10}],
        "colours": {"stages": ["blue", "green"], "router": {
            "stage": "edge",
            "nginx": {"upstream_file": str(nginx.upstream_file), "upstream": UPSTREAM, "command": nginx.command,
                      "pid_file": str(nginx.pid_file)},
            "check": f"http://{nginx.address}:{{port}}/", "check_timeout": 10}},
        "journal_dir": str(repo / ".deploykit" / f"colours-{tag}"),
    }
    path = repo / f"deploykit-colours-{tag}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    if clusters:
        os.environ[PASSWORD_ENV] = clusters["blue"].admin_password  # the in-process API reads it as the CLI does
    return Colours(path, rig, nginx, http, supervisors, dict(clusters), "postgresql" if clusters else "sqlite")
