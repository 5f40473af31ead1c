"""The state of one run: config, hosts, journal, and what steps hand on."""
from __future__ import annotations

import threading

from .config import Config, DatabaseSpec
from .host import Host, make_host, q
from .journal import STATE_DIR, Journal, new_run_id, release_lock
from .pyenv import app_python

RELEASES, SHARED, BACKUPS, FAILED, CURRENT = "releases", "shared", "backups", "failed", "current"


class Context:
    def __init__(self, config: Config, stage: str, *, command: str, dry_run: bool = False,
                 options: dict | None = None):
        self.config = config
        self.stage = stage
        self.command = command
        self.hosts: list[Host] = [make_host(spec, config) for spec in config.stage(stage)]
        self.primary: Host = next(h for h in self.hosts if h.is_primary)
        self.run_id = new_run_id(command)
        self.journal = Journal(self.run_id, config.journal_dir, self.hosts)
        self.dry_run = dry_run
        self.options = options or {}
        self.state: dict = {}
        self.failure = None
        self.locked: list[Host] = []
        self.done: set[tuple[str, str, str]] = set()  # (playbook, step, host) already done by a resumed run
        # what the run is about
        self.revision = None  # gitrepo.Revision being released
        self.release_id: str | None = None  # the release being made (or recovered from)
        self.previous: dict | None = None  # registry entry of the release to go back to
        self.failed: dict | None = None  # registry entry of the release being undone
        self.backup_id: str | None = None
        self._passfiles: dict[str, str] = {}
        self.lock = threading.RLock()  # for state that steps running on several hosts share

    # -- hosts -------------------------------------------------------------
    @property
    def app_hosts(self) -> list[Host]:
        return [h for h in self.hosts if "app" in h.roles]

    def is_done(self, playbook: str, step: str, host: str) -> bool:
        return (playbook, step, host) in self.done

    # -- layout -------------------------------------------------------------
    def release_dir(self, host: Host, release_id: str | None = None) -> str:
        return host.path(RELEASES, release_id or self.release_id)

    def backup_dir(self, host: Host, backup_id: str | None = None) -> str:
        return host.path(BACKUPS, backup_id or self.backup_id)

    def failed_dir(self, host: Host, release_id: str | None = None) -> str:
        return host.path(FAILED, release_id or self.release_id or f"run-{self.run_id}")

    def state_path(self, host: Host, *parts: str) -> str:
        return host.path(STATE_DIR, *parts)

    def manage(self, host: Host, args: str, release_dir: str | None = None, check: bool = True, timeout=None):
        """Run `python manage.py ARGS` in a release directory on the host, with the release's own Python."""
        cwd = release_dir or host.path(CURRENT)
        env = {"DJANGO_SETTINGS_MODULE": self.config.settings_module} if self.config.settings_module else None
        return host.run(f"{app_python(self.config, host, cwd)} manage.py {args}", cwd=cwd, env=env, check=check, timeout=timeout)

    # -- database credentials ---------------------------------------------------
    def db_env(self, host: Host, db: DatabaseSpec) -> dict:
        """Environment for libpq tools: a passfile, never a password in argv."""
        if db.passfile:
            return {"PGPASSFILE": host.render(db.passfile)}
        password = db.password()
        if not password:
            return {}
        key = f"{host.name}:{db.alias}"
        with self.lock:
            return self._passfile_env(host, db, password, key)

    def _passfile_env(self, host: Host, db: DatabaseSpec, password: str, key: str) -> dict:
        if key not in self._passfiles:
            path = self.state_path(host, f"pgpass-{self.run_id}-{db.alias}")

            def esc(v):
                return str(v).replace("\\", "\\\\").replace(":", "\\:")
            line = f"{esc(db.host or '*')}:{esc(db.port or '*')}:*:{esc(db.admin_user)}:{esc(password)}\n"
            host.helper("files", "write_file", {"path": path, "content": line, "mode": 0o600})
            self._passfiles[key] = path
        return {"PGPASSFILE": self._passfiles[key]}

    # -- end of run -----------------------------------------------------------
    def close(self) -> None:
        self.journal.record("run_end", locked=[h.name for h in self.locked])
        for key, path in list(self._passfiles.items()):
            host = next(h for h in self.hosts if h.name == key.split(":", 1)[0])
            try:
                host.run(f"rm -f {q(path)}", check=False)
            except Exception:
                pass
        self._passfiles.clear()
        for host in self.hosts:
            host.close()

    def unlock_all(self) -> None:
        for host in list(self.locked):
            release_lock(host, self.run_id)
            self.locked.remove(host)
