"""A deploy stage made of real parts: sshd test hosts, PostgreSQL, supervisord + gunicorn.

`make_stage()` prepares what an operator prepares before a first release: a
deploy root per host with `shared/.env`, a process manager whose `web`
program runs gunicorn in `<deploy_to>/current` with the release's own Python
environment (`current/.venv`), the app's database owned by its own role, and
a deploykit.yaml naming all of it. Release environments are built offline
from the test wheelhouse (deploykit_testing.wheelhouse) over the packages of
the Python running the tests (`venv: {system_site_packages: true}`). Tests then call the
library (`deploykit.api`) or the `deploykit` command and check real outcomes.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from deploykit.config import load_config
from .ports import free_port
from .supervisor import Supervisor, supervisor_command
from .wheelhouse import build_wheelhouse

PASSWORD_ENV = "DK_TEST_PG_ADMIN_PASSWORD"
OWNER = "library_owner"
OWNER_PASSWORD = "owner-" + uuid.uuid4().hex[:12]


@dataclass
class DeployedStage:
    name: str
    config_path: Path
    repo: Path
    rig: object
    pg: object
    db: str
    supervisors: list = field(default_factory=list)
    http: dict = field(default_factory=dict)  # host name -> "addr:port"

    # -- accessors -------------------------------------------------------------
    @property
    def hosts(self):
        return self.rig.hosts

    @property
    def primary(self):
        return self.rig.hosts[0]

    def config(self):
        return load_config(self.config_path)

    def env(self) -> dict:
        return {**os.environ, PASSWORD_ENV: self.pg.admin_password}

    def media_root(self) -> Path:
        return self.primary.deploy_to / "shared" / "media"

    def url(self, host, path: str = "/") -> str:
        return f"http://{self.http[host.name]}{path}"

    def get(self, host, path: str = "/"):
        """(status, parsed JSON or text) of an HTTP GET to the host's gunicorn."""
        try:
            with urllib.request.urlopen(self.url(host, path), timeout=10) as resp:
                body = resp.read().decode()
                status = resp.status
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body

    def revision(self, host) -> list[str]:
        """[commit, tag] from current/REVISION on the host."""
        path = host.deploy_to / "current" / "REVISION"
        return path.read_text().split() if path.exists() else []

    def current_target(self, host) -> str | None:
        link = host.deploy_to / "current"
        return os.readlink(link) if link.is_symlink() else None

    def python(self, host=None) -> str:
        """The Python of the live release on the host (its .venv), else the one running the tests."""
        env = (host or self.primary).deploy_to / "current" / ".venv" / "bin" / "python"
        return str(env) if env.exists() else sys.executable

    def manage(self, *args: str, host=None) -> subprocess.CompletedProcess:
        host = host or self.primary
        return subprocess.run([self.python(host), "manage.py", *args], cwd=host.deploy_to / "current",
                              capture_output=True, text=True, check=True)

    def freeze(self, host) -> list[str]:
        """`pip freeze` of the live release's environment on the host."""
        cp = subprocess.run([self.python(host), "-m", "pip", "freeze"], capture_output=True, text=True, check=True,
                            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
        return cp.stdout.splitlines()

    def media_checksums(self) -> dict:
        root = self.media_root()
        return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(root.rglob("*")) if p.is_file()} if root.exists() else {}

    def snapshot(self) -> dict:
        """Everything a recovery must put back: rows, schema, media, ownership."""
        return {"rows": self.pg.row_checksums(self.db), "schema": self.pg.schema(self.db),
                "media": self.media_checksums(), "owners": self.pg.owners(self.db)}

    def tree(self, ignore_journal: bool = False) -> dict:
        """Every path under every deploy root with its sha256 or link target (to prove no change)."""
        out = {}
        for h in self.hosts:
            for p in sorted(h.deploy_to.rglob("*")):
                key = f"{h.name}:{p.relative_to(h.deploy_to)}"
                if ignore_journal and key.split(":", 1)[1].startswith(".deploykit/journal"):
                    continue
                if p.is_symlink():
                    out[key] = "->" + os.readlink(p)
                elif p.is_file():
                    out[key] = hashlib.sha256(p.read_bytes()).hexdigest()
                else:
                    out[key] = "dir"
        return out

    def cli_argv(self, *args: str, config: Path | None = None) -> list[str]:
        return [sys.executable, "-m", "deploykit.cli", *args, "--config", str(config or self.config_path)]

    def cli(self, *args: str, config: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
        """Run the `deploykit` command as an operator would."""
        return subprocess.run(self.cli_argv(*args, config=config), capture_output=True, text=True,
                              env=env or self.env(), timeout=600, stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        for sup in self.supervisors:
            try:
                sup.shutdown()
            except Exception:
                pass


def make_stage(rig, pg, repo: Path, name: str = "prod", *, keep_releases: int = 3,
               snapshots: bool = True, wheelhouse: Path | None = None) -> DeployedStage:
    db = f"library_{uuid.uuid4().hex[:8]}"
    if wheelhouse is None:
        wheelhouse = build_wheelhouse(repo.parent / "wheelhouse")
    pg.create_role(OWNER, OWNER_PASSWORD)  # creates it, or resets its password
    pg.create_database(db, OWNER)
    os.environ[PASSWORD_ENV] = pg.admin_password  # the in-process API reads it like the CLI does
    stage = DeployedStage(name, repo / f"deploykit-{db}.yaml", repo, rig, pg, db)
    primary = rig.hosts[0]
    hosts_cfg = []
    for i, h in enumerate(rig.hosts):
        shared = h.deploy_to / "shared"
        (shared / "media").mkdir(parents=True, exist_ok=True)
        (shared / ".env").write_text(
            "DB_ENGINE=postgresql\n"
            f"DB_NAME={db}\nDB_USER={OWNER}\nDB_PASSWORD={OWNER_PASSWORD}\n"
            f"DB_HOST={pg.host}\nDB_PORT={pg.port}\n"
            # the same database for settings that read DATABASE_URL (the sample's -dotenv tags)
            f"DATABASE_URL=postgresql://{OWNER}:{OWNER_PASSWORD}@{pg.host}:{pg.port}/{db}\n"
            # media live on the primary; the other hosts see them as a shared mount would
            f"MEDIA_ROOT={primary.deploy_to / 'shared' / 'media'}\n"
            f"SECRET_KEY=test-{uuid.uuid4().hex}\n")
        http = f"{h.address}:{free_port(h.address)}"
        stage.http[h.name] = http
        sup = Supervisor.start(h.root / "sv", {"web": {
            # the release's own environment: current/.venv (gunicorn comes from its base layer)
            "command": f"{h.deploy_to / 'current' / '.venv' / 'bin' / 'python'} -m gunicorn "
                       f"--chdir {h.deploy_to / 'current'} --bind {http} --workers 1 libsite.wsgi",
            "directory": str(h.deploy_to)}})
        stage.supervisors.append(sup)
        hosts_cfg.append({"name": h.name, "address": f"{rig.user}@{h.address}:{h.port}",
                          "roles": ["app", "primary"] if i == 0 else ["app"],
                          "deploy_to": str(h.deploy_to),
                          "vars": {"http": http, "supervisor_conf": str(sup.conf)}})
    cfg = {
        "app": "library",
        "repo": str(repo),
        "deploy_to": "/nonexistent",  # every host sets its own
        "python": sys.executable,
        "settings_module": "libsite.settings",
        "ssh": {"known_hosts": str(rig.known_hosts), "identity": str(rig.client_key), "connect_timeout": 5},
        "stages": {name: {"hosts": hosts_cfg}},
        "shared": [".env", "media"],
        "install": ["echo installed {name} > INSTALLED"],
        "venv": {"system_site_packages": True, "pip_args": ["--no-index", "--find-links", str(wheelhouse)]},
        "processes": [{"name": "web", "supervisor": {
            "program": "web", "conf": "{supervisor_conf}",
            "supervisorctl": shlex.join(supervisor_command("supervisorctl"))}}],
        "databases": {"default": {"engine": "postgresql", "name": db, "owner": OWNER, "host": pg.host,
                                  "port": pg.port, "admin_user": pg.admin_user, "password_env": PASSWORD_ENV}},
        "media": [{"name": "media", "path": "shared/media"}],
        "health": [{"http": "http://{http}/health/", "json": {"status": "ok"}, "expect_status": 200, "timeout": 10},
                   {"manage": "check"}],
        "keep_releases": keep_releases,
        "snapshots": snapshots,
        # hooks attach to stage names; these leave a trace the tests read
        "hooks": {"before": {"migrate": [{"run": "echo before-migrate {name} >> {deploy_to}/hooks.log", "on": "primary"}]},
                  "after": {"switch": ["echo after-switch {name} >> {deploy_to}/hooks.log"]}},
        "journal_dir": str(repo / ".deploykit" / db),
    }
    stage.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return stage
