"""deploykit.yaml: the one place that reads and validates settings.

Every other module receives a `Config` (plain dataclasses) and never looks at
YAML or the environment for settings itself.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, UnknownStage

DEFAULT_FILE = "deploykit.yaml"
ROLES = {"app", "primary", "db", "web", "worker"}
ENGINES = {"postgresql", "sqlite"}
BACKUP_KINDS = ("databases", "media", "paths")


@dataclass
class HostSpec:
    """One host of a stage, with everything that may differ per host."""

    name: str
    address: str  # "local" or "user@hostname:port"
    user: str | None
    hostname: str
    port: int
    roles: set[str]
    deploy_to: str
    python: str
    vars: dict[str, Any] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.address == "local"

    def template_vars(self) -> dict[str, Any]:
        return {"deploy_to": self.deploy_to, "hostname": self.hostname,
                "name": self.name, "python": self.python, "port": self.port,
                **self.vars}

    def render(self, text: str) -> str:
        """Fill `{deploy_to}`, `{hostname}`, `{python}` and host vars into text.

        Unknown `{names}` are left alone, so shell syntax like `${HOME}` survives.
        """
        values = self.template_vars()
        return re.sub(r"\{(\w+)\}", lambda m: str(values[m[1]]) if m[1] in values else m[0], text)


@dataclass
class ProcessSpec:
    """A process the release restarts: shell commands for each verb."""

    name: str
    start: str
    stop: str
    restart: str
    status: str
    writes: bool = True  # stopped before a snapshot or restore


@dataclass
class DatabaseSpec:
    """A Django database alias and how to reach it as an administrator."""

    alias: str
    engine: str
    name: str  # database name, or the file path for sqlite
    owner: str | None = None
    host: str | None = None
    port: int | None = None
    admin_user: str | None = None
    password_env: str | None = None  # controller env var holding the admin password
    passfile: str | None = None  # an existing libpq passfile on the host
    jobs: int | None = None

    def password(self) -> str | None:
        if self.password_env:
            return os.environ.get(self.password_env)
        return None


@dataclass
class PathSpec:
    """A directory backed up with a per-file manifest (media or an extra path)."""

    name: str
    path: str  # absolute, or relative to deploy_to
    kind: str  # "media" or "paths"


@dataclass
class HealthCheck:
    kind: str  # "http", "manage" or "command"
    url: str | None = None
    expect_status: int = 200
    contains: str | None = None
    timeout: float = 30.0
    command: str | None = None


@dataclass
class VenvSpec:
    """Each release gets its own Python environment built from its requirements."""

    requirements: str = "requirements.txt"  # relative to the release directory
    system_site_packages: bool = False  # also see the packages of `python:` (even when that is a venv)
    pip_args: list[str] = field(default_factory=list)  # e.g. ["--no-index", "--find-links", "/srv/wheels"]


@dataclass
class LockSpec:
    """The stage lock's liveness: a holder whose heartbeat is older than stale_after is gone."""

    heartbeat: float = 10.0
    stale_after: float = 120.0


@dataclass
class Config:
    path: Path
    project_dir: Path
    app: str
    repo: Path
    deploy_to: str
    python: str
    settings_module: str | None
    stages: dict[str, list[HostSpec]]
    shared: list[str]
    processes: list[ProcessSpec]
    databases: list[DatabaseSpec]
    data_paths: list[PathSpec]
    backup_order: list[str]
    health: list[HealthCheck]
    keep_releases: int
    keep_backups: int
    hooks: dict[str, dict[str, list[dict]]]
    install: list[str]
    collectstatic: bool
    known_hosts: str
    identity: str | None
    connect_timeout: float
    command_timeout: float
    min_free_mb: int
    snapshots: bool
    playbooks_dir: Path | None
    journal_dir: Path
    venv: VenvSpec | None = None  # None: the app's shared interpreter (installs are not undone)
    lock: LockSpec = field(default_factory=LockSpec)

    def stage(self, name: str) -> list[HostSpec]:
        if name not in self.stages:
            known = ", ".join(sorted(self.stages)) or "none"
            raise UnknownStage(f"unknown stage {name!r} in {self.path} (known: {known})")
        return self.stages[name]


_ADDRESS = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>[^:@\s]+)(?::(?P<port>\d+))?$")


class _Reader:
    """Walks the YAML with a key path so every error names file and key."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}: {problem}", hint=fix)

    def get(self, data: dict, key: str, where: str, kind, default=None, required=False):
        if key not in data or data[key] is None:
            if required:
                raise self.fail(f"{where}{key}", "missing", f"add '{key}:' to {where.rstrip('.') or 'the top level'}")
            return default
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if bool in kinds or not isinstance(value, bool):
            if isinstance(value, kinds):
                return value
        names = " or ".join(k.__name__ for k in kinds)
        raise self.fail(f"{where}{key}", f"expected {names}, got {type(value).__name__} {value!r}",
                        f"give '{key}' a {names} value")

    def mapping(self, data: dict, key: str, where: str) -> dict:
        return self.get(data, key, where, dict, default={})

    def unknown_keys(self, data: dict, allowed: set[str], where: str) -> None:
        extra = sorted(set(data) - allowed)
        if extra:
            raise self.fail(f"{where}{extra[0]}", "unknown key",
                            f"remove it or use one of: {', '.join(sorted(allowed))}")


TOP_KEYS = {"app", "repo", "deploy_to", "python", "settings_module", "stages", "shared",
            "processes", "databases", "media", "paths", "backup_order", "health",
            "keep_releases", "keep_backups", "hooks", "install", "collectstatic", "ssh",
            "min_free_mb", "playbooks_dir", "journal_dir", "snapshots", "venv", "lock"}


def find_config(path: str | os.PathLike | None = None) -> Path:
    """The config file: the given path, $DEPLOYKIT_CONFIG, or ./deploykit.yaml."""
    candidate = Path(path or os.environ.get("DEPLOYKIT_CONFIG") or DEFAULT_FILE).expanduser()
    if not candidate.is_file():
        raise ConfigError(f"no configuration file at {candidate}",
                          hint="create deploykit.yaml in the project (see README) or pass --config PATH")
    return candidate.resolve()


def load_config(path: str | os.PathLike | None = None) -> Config:
    cfg_path = find_config(path)
    try:
        raw = yaml.safe_load(cfg_path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{cfg_path}: malformed YAML at {where}: {problem}",
                          hint="fix the YAML syntax (indentation, colons, quotes) there") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: expected a mapping of settings at the top level",
                          hint="start the file with keys such as 'app:', 'deploy_to:', 'stages:'")
    return parse_config(raw, cfg_path)


def parse_config(raw: dict, cfg_path: Path) -> Config:
    r = _Reader(cfg_path)
    r.unknown_keys(raw, TOP_KEYS, "")
    project_dir = cfg_path.parent
    app = r.get(raw, "app", "", str, default=project_dir.name)
    deploy_to = r.get(raw, "deploy_to", "", str, required=True)
    python = r.get(raw, "python", "", str, default="python3")
    repo = Path(r.get(raw, "repo", "", str, default=".")).expanduser()
    if not repo.is_absolute():
        repo = (project_dir / repo).resolve()

    stages_raw = r.get(raw, "stages", "", dict, required=True)
    if not stages_raw:
        raise r.fail("stages", "no stage defined", "add at least one stage, e.g. 'prod: {hosts: [local]}'")
    stages = {name: _parse_stage(r, name, spec, deploy_to, python) for name, spec in stages_raw.items()}

    processes = [_parse_process(r, i, p) for i, p in enumerate(r.get(raw, "processes", "", list, default=[]))]
    databases = _parse_databases(r, r.get(raw, "databases", "", dict, default={}))
    data_paths = (_parse_paths(r, "media", r.get(raw, "media", "", list, default=[]))
                  + _parse_paths(r, "paths", r.get(raw, "paths", "", list, default=[])))
    order = r.get(raw, "backup_order", "", list, default=list(BACKUP_KINDS))
    for item in order:
        if item not in BACKUP_KINDS:
            raise r.fail("backup_order", f"unknown item {item!r}", f"use items from {', '.join(BACKUP_KINDS)}")
    health = [_parse_health(r, i, h) for i, h in enumerate(r.get(raw, "health", "", list, default=[]))]
    keep = r.get(raw, "keep_releases", "", int, default=5)
    if keep < 2:
        raise r.fail("keep_releases", f"must be at least 2, got {keep}", "keep the live release and the one before it")
    ssh = r.mapping(raw, "ssh", "")
    r.unknown_keys(ssh, {"known_hosts", "identity", "connect_timeout", "command_timeout"}, "ssh.")
    identity = r.get(ssh, "identity", "ssh.", str)
    journal_dir = Path(r.get(raw, "journal_dir", "", str, default=".deploykit/journal"))
    playbooks_dir = r.get(raw, "playbooks_dir", "", str)
    return Config(
        path=cfg_path,
        project_dir=project_dir,
        app=app,
        repo=repo,
        deploy_to=deploy_to,
        python=python,
        settings_module=r.get(raw, "settings_module", "", str),
        stages=stages,
        shared=[str(s) for s in r.get(raw, "shared", "", list, default=[])],
        processes=processes,
        databases=databases,
        data_paths=data_paths,
        backup_order=order,
        health=health,
        keep_releases=keep,
        keep_backups=r.get(raw, "keep_backups", "", int, default=keep),
        hooks=_parse_hooks(r, r.mapping(raw, "hooks", "")),
        install=[str(c) for c in r.get(raw, "install", "", list, default=[])],
        collectstatic=r.get(raw, "collectstatic", "", bool, default=True),
        known_hosts=str(Path(r.get(ssh, "known_hosts", "ssh.", str, default="~/.ssh/known_hosts")).expanduser()),
        identity=str(Path(identity).expanduser()) if identity else None,
        connect_timeout=float(r.get(ssh, "connect_timeout", "ssh.", (int, float), default=10)),
        command_timeout=float(r.get(ssh, "command_timeout", "ssh.", (int, float), default=3600)),
        min_free_mb=r.get(raw, "min_free_mb", "", int, default=100),
        snapshots=r.get(raw, "snapshots", "", bool, default=True),
        playbooks_dir=(project_dir / playbooks_dir) if playbooks_dir else None,
        journal_dir=journal_dir if journal_dir.is_absolute() else project_dir / journal_dir,
        venv=_parse_venv(r, raw),
        lock=_parse_lock(r, r.mapping(raw, "lock", "")),
    )


def _parse_venv(r: _Reader, raw: dict) -> VenvSpec | None:
    """venv: false (the shared interpreter), or a mapping; default: requirements.txt of each release."""
    if "venv" not in raw:
        return VenvSpec()
    spec = raw["venv"]
    if spec is False:
        return None
    if spec is True or spec is None:
        return VenvSpec()
    if not isinstance(spec, dict):
        raise r.fail("venv", f"expected false or a mapping, got {type(spec).__name__} {spec!r}",
                     "write 'venv: {requirements: requirements.txt}' or 'venv: false'")
    r.unknown_keys(spec, {"requirements", "system_site_packages", "pip_args"}, "venv.")
    return VenvSpec(requirements=r.get(spec, "requirements", "venv.", str, default="requirements.txt"),
                    system_site_packages=r.get(spec, "system_site_packages", "venv.", bool, default=False),
                    pip_args=[str(a) for a in r.get(spec, "pip_args", "venv.", list, default=[])])


def _parse_lock(r: _Reader, spec: dict) -> LockSpec:
    r.unknown_keys(spec, {"heartbeat", "stale_after"}, "lock.")
    beat = float(r.get(spec, "heartbeat", "lock.", (int, float), default=10))
    stale = float(r.get(spec, "stale_after", "lock.", (int, float), default=120))
    if beat <= 0 or stale < 3 * beat:
        raise r.fail("lock.stale_after", f"must be at least 3 heartbeats ({3 * beat:g} s), got {stale:g}",
                     "a holder is only declared gone after several missed heartbeats")
    return LockSpec(heartbeat=beat, stale_after=stale)


def _parse_stage(r: _Reader, name: str, spec, deploy_to: str, python: str) -> list[HostSpec]:
    where = f"stages.{name}."
    if isinstance(spec, list):
        spec = {"hosts": spec}
    if not isinstance(spec, dict):
        raise r.fail(f"stages.{name}", "expected a mapping with 'hosts:'", "write 'hosts: [...]' under the stage")
    r.unknown_keys(spec, {"hosts", "deploy_to", "python", "vars"}, where)
    stage_deploy_to = r.get(spec, "deploy_to", where, str, default=deploy_to)
    stage_python = r.get(spec, "python", where, str, default=python)
    stage_vars = r.mapping(spec, "vars", where)
    hosts_raw = r.get(spec, "hosts", where, list, required=True)
    if not hosts_raw:
        raise r.fail(f"{where}hosts", "empty", "list at least one host ('local' or user@host:port)")
    hosts = []
    for i, entry in enumerate(hosts_raw):
        hwhere = f"{where}hosts[{i}]."
        if isinstance(entry, str):
            entry = {"address": entry}
        if not isinstance(entry, dict):
            raise r.fail(f"{where}hosts[{i}]", "expected an address or a mapping", "write 'local' or 'user@host:port'")
        r.unknown_keys(entry, {"address", "name", "roles", "deploy_to", "python", "vars"}, hwhere)
        address = r.get(entry, "address", hwhere, str, required=True)
        if address == "local":
            user, hostname, port = None, "localhost", 0
        else:
            m = _ADDRESS.match(address)
            if not m:
                raise r.fail(f"{hwhere}address", f"cannot read {address!r}", "write it as user@host:port, e.g. deploy@10.0.0.5:22")
            user, hostname, port = m["user"], m["host"], int(m["port"] or 22)
        roles = r.get(entry, "roles", hwhere, list, default=None)
        roles = set(roles) if roles is not None else ({"app", "primary"} if i == 0 else {"app"})
        bad = roles - ROLES
        if bad:
            raise r.fail(f"{hwhere}roles", f"unknown role {sorted(bad)[0]!r}", f"use roles from {', '.join(sorted(ROLES))}")
        hosts.append(HostSpec(
            name=r.get(entry, "name", hwhere, str, default=hostname if address != "local" else "local"),
            address=address, user=user, hostname=hostname, port=port, roles=roles,
            deploy_to=r.get(entry, "deploy_to", hwhere, str, default=stage_deploy_to),
            python=r.get(entry, "python", hwhere, str, default=stage_python),
            vars={**stage_vars, **r.mapping(entry, "vars", hwhere)},
        ))
    primaries = [h.name for h in hosts if "primary" in h.roles]
    if len(primaries) != 1:
        raise r.fail(f"{where}hosts", f"needs exactly one host with role 'primary', found {len(primaries)}",
                     "give the host that runs migrations and database work 'roles: [app, primary]'")
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise r.fail(f"{where}hosts", "two hosts share a name", "give each host a distinct 'name:'")
    return hosts


def _parse_process(r: _Reader, i: int, spec) -> ProcessSpec:
    where = f"processes[{i}]."
    if not isinstance(spec, dict):
        raise r.fail(f"processes[{i}]", "expected a mapping", "write '- name: web' with 'supervisor:', 'systemd:' or commands")
    r.unknown_keys(spec, {"name", "supervisor", "systemd", "start", "stop", "restart", "status", "writes"}, where)
    name = r.get(spec, "name", where, str, required=True)
    writes = r.get(spec, "writes", where, bool, default=True)
    if "supervisor" in spec:
        sup = r.get(spec, "supervisor", where, dict)
        r.unknown_keys(sup, {"program", "conf", "supervisorctl"}, f"{where}supervisor.")
        program = r.get(sup, "program", f"{where}supervisor.", str, default=name)
        ctl = r.get(sup, "supervisorctl", f"{where}supervisor.", str, default="supervisorctl")
        conf = r.get(sup, "conf", f"{where}supervisor.", str)
        base = f"{ctl} -c {conf}" if conf else ctl
        return ProcessSpec(name, f"{base} start {program}", f"{base} stop {program}",
                           f"{base} restart {program}", f"{base} status {program}", writes)
    if "systemd" in spec:
        unit = r.get(spec, "systemd", where, str)
        return ProcessSpec(name, f"systemctl start {unit}", f"systemctl stop {unit}",
                           f"systemctl restart {unit}", f"systemctl is-active {unit}", writes)
    start = r.get(spec, "start", where, str, required=True)
    stop = r.get(spec, "stop", where, str, required=True)
    return ProcessSpec(name, start, stop, r.get(spec, "restart", where, str, default=f"{stop} && {start}"),
                       r.get(spec, "status", where, str, default="true"), writes)


def _parse_databases(r: _Reader, raw: dict) -> list[DatabaseSpec]:
    out = []
    for alias, spec in raw.items():
        where = f"databases.{alias}."
        if not isinstance(spec, dict):
            raise r.fail(f"databases.{alias}", "expected a mapping", "give engine, name and owner")
        r.unknown_keys(spec, {"engine", "name", "path", "owner", "host", "port", "admin_user",
                              "password_env", "passfile", "jobs"}, where)
        engine = r.get(spec, "engine", where, str, required=True)
        if engine not in ENGINES:
            raise r.fail(f"{where}engine", f"unsupported engine {engine!r}", f"use one of {', '.join(sorted(ENGINES))}")
        if engine == "sqlite":
            name = r.get(spec, "path", where, str) or r.get(spec, "name", where, str, required=True)
            out.append(DatabaseSpec(alias, engine, name))
            continue
        db = DatabaseSpec(
            alias, engine, r.get(spec, "name", where, str, required=True),
            owner=r.get(spec, "owner", where, str, required=True),
            host=r.get(spec, "host", where, str), port=r.get(spec, "port", where, int),
            admin_user=r.get(spec, "admin_user", where, str, default="postgres"),
            password_env=r.get(spec, "password_env", where, str),
            passfile=r.get(spec, "passfile", where, str),
            jobs=r.get(spec, "jobs", where, int),
        )
        out.append(db)
    return out


def _parse_paths(r: _Reader, kind: str, raw: list) -> list[PathSpec]:
    out = []
    for i, spec in enumerate(raw):
        if isinstance(spec, str):
            spec = {"path": spec}
        where = f"{kind}[{i}]."
        if not isinstance(spec, dict):
            raise r.fail(f"{kind}[{i}]", "expected a path or a mapping", "write '- shared/media' or '- {name: media, path: shared/media}'")
        r.unknown_keys(spec, {"name", "path"}, where)
        path = r.get(spec, "path", where, str, required=True)
        name = r.get(spec, "name", where, str, default=re.sub(r"[^A-Za-z0-9_.-]+", "-", path.strip("/")) or kind)
        out.append(PathSpec(name, path, kind))
    names = [p.name for p in out]
    if len(set(names)) != len(names):
        raise r.fail(kind, "two entries share a name", "give each entry a distinct 'name:'")
    return out


def _parse_health(r: _Reader, i: int, spec) -> HealthCheck:
    where = f"health[{i}]."
    if not isinstance(spec, dict):
        raise r.fail(f"health[{i}]", "expected a mapping", "write '- http: http://127.0.0.1:8000/health/' or '- manage: check'")
    r.unknown_keys(spec, {"http", "manage", "command", "expect_status", "contains", "timeout"}, where)
    timeout = float(r.get(spec, "timeout", where, (int, float), default=30))
    if "http" in spec:
        return HealthCheck("http", url=r.get(spec, "http", where, str), timeout=timeout,
                           expect_status=r.get(spec, "expect_status", where, int, default=200),
                           contains=r.get(spec, "contains", where, str))
    if "manage" in spec:
        return HealthCheck("manage", command=r.get(spec, "manage", where, str), timeout=timeout)
    if "command" in spec:
        return HealthCheck("command", command=r.get(spec, "command", where, str), timeout=timeout)
    raise r.fail(f"health[{i}]", "no check given", "use one of 'http:', 'manage:' or 'command:'")


def _parse_hooks(r: _Reader, raw: dict) -> dict[str, dict[str, list[dict]]]:
    """hooks: {before: {stage: [cmd | {run, on}]}, after: {...}}."""
    r.unknown_keys(raw, {"before", "after"}, "hooks.")
    out: dict[str, dict[str, list[dict]]] = {"before": {}, "after": {}}
    for when in ("before", "after"):
        for stage, cmds in r.mapping(raw, when, "hooks.").items():
            where = f"hooks.{when}.{stage}"
            if isinstance(cmds, str):
                cmds = [cmds]
            if not isinstance(cmds, list):
                raise r.fail(where, "expected a list of commands", "write '- ./manage.py clearsessions'")
            items = []
            for j, cmd in enumerate(cmds):
                if isinstance(cmd, str):
                    cmd = {"run": cmd}
                if not isinstance(cmd, dict) or "run" not in cmd:
                    raise r.fail(f"{where}[{j}]", "expected a command or {run: ..., on: role}", "write '- run: CMD' with optional 'on: primary'")
                r.unknown_keys(cmd, {"run", "on"}, f"{where}[{j}].")
                items.append({"run": str(cmd["run"]), "on": str(cmd.get("on", "app"))})
            out[when][stage] = items
    return out
