"""deploykit.yaml: the one place that reads and validates settings.

Every other module receives a `Config` (plain dataclasses) and never looks at
YAML or the environment for settings itself.

Every mistake is caught here, at load time, before anything connects to a
host: whatever the document holds, `load_config` returns a `Config` or
raises `ConfigError` (one line: file, key, problem; its hint says the fix).
Beyond the shape of each key it checks what only shows up later on a host:
hooks on phases no playbook has, templates naming unknown variables, `~` in
paths the remote side never expands, PostgreSQL names that would be
truncated, a stage listing the same host twice, a primary without the app.
"""
from __future__ import annotations

import functools
import math
import os
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import yamlload
from .errors import ConfigError, UnknownStage

DEFAULT_FILE = "deploykit.yaml"
ROLES = {"app", "primary", "db", "web", "worker"}
ENGINES = {"postgresql", "sqlite"}
BACKUP_KINDS = ("databases", "media", "paths")
BUILTIN_PLAYBOOKS = Path(__file__).parent / "playbooks"
PG_MAX_IDENTIFIER = 63  # bytes: NAMEDATALEN - 1; PostgreSQL silently truncates longer names

# `{name}` is a template; `${NAME}` (shell) and `{{` / `}}` are left exactly as written.
_TEMPLATE = re.compile(r"\$\{\w+\}|\{\{|\}\}|\{(\w+)\}")


def template_names(text: str) -> list[str]:
    """The `{names}` a host's render() would fill in text, in order."""
    return [m[1] for m in _TEMPLATE.finditer(text) if m[1] is not None]


@dataclass
class HostSpec:
    """One host of a stage, with everything that may differ per host."""

    name: str
    address: str  # "local" or "user@hostname:port"
    user: str | None
    hostname: str
    port: int  # the SSH port (0 for local)
    roles: set[str]
    deploy_to: str
    python: str
    vars: dict[str, Any] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.address == "local"

    def template_vars(self) -> dict[str, Any]:
        return {"deploy_to": self.deploy_to, "hostname": self.hostname,
                "name": self.name, "python": self.python, "ssh_port": self.port,
                **self.vars}

    def render(self, text: str) -> str:
        """Fill `{deploy_to}`, `{hostname}`, `{name}`, `{python}`, `{ssh_port}` and host vars into text.

        A var overrides a built-in of the same name; `{port}` is not a built-in
        (the SSH port is `{ssh_port}`), so a var `port` can hold the app's port.
        `${NAME}` (shell) and `{{` / `}}` are not templates and stay as written;
        an unknown `{name}` is left alone too (load_config rejects those in
        every configured template, so none reaches a host).
        """
        values = self.template_vars()

        def fill(m: re.Match) -> str:
            return str(values[m[1]]) if m[1] is not None and m[1] in values else m[0]
        return _TEMPLATE.sub(fill, text)


@dataclass
class ProcessSpec:
    """A process the release restarts: shell commands for each verb (templates: render per host).

    `manager` says how it is managed, for checks before a release: "supervisor"
    (`program`, `conf` or None, `ctl` the supervisorctl command), "systemd"
    (`unit`) or "commands" (only the four commands).
    """

    name: str
    start: str
    stop: str
    restart: str
    status: str
    writes: bool = True  # stopped before a snapshot or restore
    manager: str = "commands"  # "supervisor" | "systemd" | "commands"
    program: str | None = None  # supervisor program name
    conf: str | None = None  # supervisord.conf for `supervisorctl -c` (None: supervisorctl's default)
    ctl: str | None = None  # the supervisorctl command
    unit: str | None = None  # systemd unit


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
    hooks: dict[str, dict[str, list[dict]]]  # {before|after: {phase: [{run, on, timeout}]}}; timeout None: default
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


_ADDRESS = re.compile(r"^(?:(?P<user>[^@\s]+)@)?(?P<host>[^:@\s/]+)(?::(?P<port>[0-9]+))?$")
_IDENTIFIER = re.compile(r"^\w+$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$", re.ASCII)
_MODULE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def _show(value: Any) -> str:
    """A short one-line repr for messages."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001  (an int too long to print, a broken object)
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


@dataclass
class _Template:
    """A configured string that is rendered per host, and what to check after rendering."""

    key: str
    text: str
    on: str | None = None  # only hosts with this role ("all" / None: every host)
    host_path: bool = False  # a path on the host: must not start with "~" once rendered
    one_word: bool = False  # put unquoted into a command: no whitespace once rendered


class _Reader:
    """Walks the YAML with a key path so every error names file and key."""

    def __init__(self, path: Path):
        self.path = path
        self.templates: list[_Template] = []

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
        raise self.fail(f"{where}{key}", f"expected {names}, got {_type_name(value)} {_show(value)}",
                        f"give '{key}' a {names} value")

    def mapping(self, data: dict, key: str, where: str) -> dict:
        return self.get(data, key, where, dict, default={})

    def text(self, data: dict, key: str, where: str, default=None, required=False) -> str | None:
        """A non-empty string."""
        value = self.get(data, key, where, str, default=default, required=required)
        if value is not None and not value.strip():
            raise self.fail(f"{where}{key}", "empty", f"give '{key}' a value or remove it")
        return value

    def number(self, data: dict, key: str, where: str, default: float, minimum: float = 0.0,
               inclusive: bool = False) -> float:
        """A finite number above `minimum` (at least, when inclusive)."""
        try:
            value = float(self.get(data, key, where, (int, float), default=default))
        except OverflowError:
            value = math.inf
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            bound = f"at least {minimum:g}" if inclusive else f"more than {minimum:g}"
            raise self.fail(f"{where}{key}", f"must be a number {bound}, got {value:g}", f"give '{key}' a number {bound}")
        return value

    def integer(self, data: dict, key: str, where: str, default=None, low: int | None = None,
                high: int | None = None) -> int | None:
        value = self.get(data, key, where, int, default=default)
        if value is None:
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            span = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise self.fail(f"{where}{key}", f"must be {span}, got {_show(value)}", f"give '{key}' a whole number {span}")
        return value

    def text_list(self, data: dict, key: str, where: str, scalars: bool = False) -> list[str]:
        """A list of non-empty strings (with scalars: numbers too, as text)."""
        items = self.get(data, key, where, list, default=[])
        out = []
        for i, item in enumerate(items):
            ok = isinstance(item, str) or (scalars and isinstance(item, (int, float)) and not isinstance(item, bool))
            if not ok or not str(item).strip():
                raise self.fail(f"{where}{key}[{i}]", f"expected a non-empty string, got {_type_name(item)} {_show(item)}",
                                "write each entry as text (quote it if needed)")
            out.append(str(item))
        return out

    def names(self, data: dict, where: str, what: str, pattern: re.Pattern | None = None, example: str = "") -> None:
        """The keys of an open mapping (stages, aliases, vars, phases) are non-empty text."""
        for key in data:
            if not isinstance(key, str) or not key.strip() or (pattern is not None and not pattern.match(key)):
                rule = f" ({example})" if example else ""
                raise self.fail(f"{where}{key}", f"{_show(key)} is not a valid {what}{rule}",
                                f"name each {what} with text{rule}")

    def unknown_keys(self, data: dict, allowed: set[str], where: str) -> None:
        extra = sorted(set(data) - allowed, key=str)
        if extra:
            raise self.fail(f"{where}{extra[0]}", "unknown key",
                            f"remove it or use one of: {', '.join(sorted(allowed))}")

    def host_path(self, value: str | None, key: str) -> str | None:
        """A path on the host: `~` is never expanded there, so it would name a directory called '~'."""
        if value is not None and value.startswith("~"):
            raise self.fail(key, f"{value!r} starts with '~', which the host never expands",
                            "write the absolute path (e.g. /home/deploy/...)")
        return value

    def template(self, key: str, text: str | None, **kind) -> None:
        if text is not None:
            self.templates.append(_Template(key, text, **kind))


TOP_KEYS = {"app", "repo", "deploy_to", "python", "settings_module", "stages", "shared",
            "processes", "databases", "media", "paths", "backup_order", "health",
            "keep_releases", "keep_backups", "hooks", "install", "collectstatic", "ssh",
            "min_free_mb", "playbooks_dir", "journal_dir", "snapshots", "venv", "lock"}


def find_config(path: str | os.PathLike | None = None) -> Path:
    """The config file: the given path, $DEPLOYKIT_CONFIG, or ./deploykit.yaml."""
    given = path or os.environ.get("DEPLOYKIT_CONFIG") or DEFAULT_FILE
    try:
        candidate = Path(given).expanduser()
        found = candidate.is_file()
    except (RuntimeError, ValueError, OSError):  # ~unknownuser, a NUL byte, an unreadable parent
        candidate, found = Path(str(given).replace("\0", "\\0")), False
    if not found:
        raise ConfigError(f"no configuration file at {candidate}",
                          hint="create deploykit.yaml in the project (see README) or pass --config PATH")
    return candidate.resolve()


def load_config(path: str | os.PathLike | None = None) -> Config:
    cfg_path = find_config(path)
    try:
        text = cfg_path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{cfg_path}: cannot read it: {exc.strerror or exc}",
                          hint="check the file's permissions") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{cfg_path}: not UTF-8 text (byte {exc.start + 1})",
                          hint="save the file as UTF-8") from None
    raw = _load_yaml(text, cfg_path, "the YAML syntax (indentation, colons, quotes) there")
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: expected a mapping of settings at the top level",
                          hint="start the file with keys such as 'app:', 'deploy_to:', 'stages:'")
    return parse_config(raw, cfg_path)


def _load_yaml(text: str, path: Path, what: str):
    try:
        return yamlload.load(text)
    except yamlload.DuplicateKey as exc:
        raise ConfigError(f"{path}: {exc.path}: duplicate key {_show(exc.key)} at line {exc.line} "
                          f"(first at line {exc.first_line})",
                          hint="keep only one of them: YAML would silently use the last") from None
    except yaml.YAMLError as exc:
        where, problem = yamlload.error_line(exc, text)
        raise ConfigError(f"{path}: malformed YAML at {where}: {problem}", hint=f"fix {what}") from None
    except RecursionError:
        raise ConfigError(f"{path}: malformed YAML: nested too deeply", hint="flatten the structure") from None


def _check_text(r: _Reader, raw: Any) -> None:
    """No NUL byte in any key or value: no shell command, path or name can carry one."""
    seen: set[int] = set()
    todo = [(raw, "")]
    while todo:
        value, where = todo.pop()
        if isinstance(value, str):
            if "\0" in value:
                raise r.fail(where or "(top)", "contains a NUL byte", "remove the \\0 character")
        elif isinstance(value, (dict, list, tuple, set, frozenset)):
            if id(value) in seen:
                continue
            seen.add(id(value))
            if isinstance(value, dict):
                for k, v in value.items():
                    child = yamlload._join(where, k)
                    if isinstance(k, str) and "\0" in k:
                        raise r.fail(child.replace("\0", "\\0"), "contains a NUL byte", "remove the \\0 character")
                    todo.append((v, child))
            else:
                todo.extend((v, f"{where}[{i}]") for i, v in enumerate(value))


def parse_config(raw: dict, cfg_path: Path) -> Config:
    r = _Reader(cfg_path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: expected a mapping of settings at the top level",
                          hint="start the file with keys such as 'app:', 'deploy_to:', 'stages:'")
    _check_text(r, raw)
    r.unknown_keys(raw, TOP_KEYS, "")
    project_dir = cfg_path.parent
    app = r.text(raw, "app", "", default=project_dir.name or "app")
    deploy_to = _deploy_to(r, raw, "")
    python = r.host_path(r.text(raw, "python", "", default="python3"), "python")
    repo = _local_path(r, raw, "repo", ".", project_dir, resolve=True)

    stages_raw = r.get(raw, "stages", "", dict, required=True)
    if not stages_raw:
        raise r.fail("stages", "no stage defined", "add at least one stage, e.g. 'prod: {hosts: [local]}'")
    r.names(stages_raw, "stages.", "stage name")
    stages = {name: _parse_stage(r, name, spec, deploy_to, python) for name, spec in stages_raw.items()}
    roles_in_use = {role for hosts in stages.values() for h in hosts for role in h.roles}

    processes = [_parse_process(r, i, p) for i, p in enumerate(r.get(raw, "processes", "", list, default=[]))]
    _unique(r, "processes", [p.name for p in processes], "process")
    databases = _parse_databases(r, r.get(raw, "databases", "", dict, default={}))
    data_paths = (_parse_paths(r, "media", r.get(raw, "media", "", list, default=[]))
                  + _parse_paths(r, "paths", r.get(raw, "paths", "", list, default=[])))
    order = _parse_backup_order(r, raw, databases, data_paths)
    health = [_parse_health(r, i, h) for i, h in enumerate(r.get(raw, "health", "", list, default=[]))]
    keep = r.get(raw, "keep_releases", "", int, default=5)
    if keep < 2:
        raise r.fail("keep_releases", f"must be at least 2, got {_show(keep)}", "keep the live release and the one before it")
    keep_backups = r.integer(raw, "keep_backups", "", default=keep, low=1)
    ssh = r.mapping(raw, "ssh", "")
    r.unknown_keys(ssh, {"known_hosts", "identity", "connect_timeout", "command_timeout"}, "ssh.")
    known_hosts = _local_path(r, ssh, "known_hosts", "~/.ssh/known_hosts", None, where="ssh.")
    identity = _local_path(r, ssh, "identity", None, None, where="ssh.")
    journal_dir = _local_path(r, raw, "journal_dir", ".deploykit/journal", project_dir)
    playbooks_dir = _local_path(r, raw, "playbooks_dir", None, project_dir)
    if playbooks_dir is not None and not _is_dir(playbooks_dir):
        raise r.fail("playbooks_dir", f"no directory at {playbooks_dir}",
                     "create it or fix the path (relative paths start at the config file's directory)")
    install = r.text_list(raw, "install", "")
    for i, cmd in enumerate(install):
        r.template(f"install[{i}]", cmd)
    phases = _playbook_phases(playbooks_dir)  # also refuses a malformed playbook in playbooks_dir now
    hooks = _parse_hooks(r, r.mapping(raw, "hooks", ""), phases, roles_in_use)
    settings_module = r.text(raw, "settings_module", "")
    if settings_module is not None and not _MODULE.match(settings_module):
        raise r.fail("settings_module", f"{settings_module!r} is not a Python module path",
                     "write the dotted module, e.g. mysite.settings")
    config = Config(
        path=cfg_path,
        project_dir=project_dir,
        app=app,
        repo=repo,
        deploy_to=deploy_to,
        python=python,
        settings_module=settings_module,
        stages=stages,
        shared=_parse_shared(r, raw),
        processes=processes,
        databases=databases,
        data_paths=data_paths,
        backup_order=order,
        health=health,
        keep_releases=keep,
        keep_backups=keep_backups,
        hooks=hooks,
        install=install,
        collectstatic=r.get(raw, "collectstatic", "", bool, default=True),
        known_hosts=str(known_hosts),
        identity=str(identity) if identity else None,
        connect_timeout=r.number(ssh, "connect_timeout", "ssh.", 10),
        command_timeout=r.number(ssh, "command_timeout", "ssh.", 3600),
        min_free_mb=r.integer(raw, "min_free_mb", "", default=100, low=0),
        snapshots=r.get(raw, "snapshots", "", bool, default=True),
        playbooks_dir=playbooks_dir,
        journal_dir=journal_dir,
        venv=_parse_venv(r, raw),
        lock=_parse_lock(r, r.mapping(raw, "lock", "")),
    )
    _check_templates(r, stages)
    return config


def _local_path(r: _Reader, data: dict, key: str, default: str | None, base: Path | None,
                where: str = "", resolve: bool = False) -> Path | None:
    """A path on the controller: `~` is expanded; relative paths start at `base` when given."""
    value = r.text(data, key, where, default=default)
    if value is None:
        return None
    try:
        path = Path(value).expanduser()
        if base is not None and not path.is_absolute():
            path = base / path
        return path.resolve() if resolve else path
    except (RuntimeError, OSError, ValueError) as exc:  # ~nosuchuser, a loop of links
        raise r.fail(f"{where}{key}", f"cannot use {value!r}: {exc}", "write an absolute path") from None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long, a permission refused
        return False


def _deploy_to(r: _Reader, data: dict, where: str, default: str | None = None) -> str:
    value = r.host_path(r.text(data, "deploy_to", where, default=default, required=default is None), f"{where}deploy_to")
    if not value.startswith("/"):
        raise r.fail(f"{where}deploy_to", f"must be an absolute path, got {value!r}", "write it from the root, e.g. /srv/app")
    if posixpath.normpath(value) in ("/", "//"):
        raise r.fail(f"{where}deploy_to", "is the root directory",
                     "give the app its own directory (releases/, shared/ and backups/ are created in it)")
    return value


def _unique(r: _Reader, key: str, names: list, what: str) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise r.fail(key, f"two entries share the {what} name {name!r}", "give each entry a distinct 'name:'")
        seen.add(name)


def _parse_shared(r: _Reader, raw: dict) -> list[str]:
    shared = r.text_list(raw, "shared", "")
    for i, item in enumerate(shared):
        parts = item.split("/")
        if item.startswith(("/", "~")) or ".." in parts or posixpath.normpath(item) == ".":
            raise r.fail(f"shared[{i}]", f"{item!r} is not a path inside shared/",
                         "write a relative path such as .env or media (linked from shared/ into each release)")
    _unique(r, "shared", [posixpath.normpath(s) for s in shared], "path")
    return shared


def _parse_backup_order(r: _Reader, raw: dict, databases: list, data_paths: list) -> list[str]:
    order = r.get(raw, "backup_order", "", list, default=list(BACKUP_KINDS))
    for item in order:
        if not isinstance(item, str) or item not in BACKUP_KINDS:
            raise r.fail("backup_order", f"unknown item {_show(item)}", f"use items from {', '.join(BACKUP_KINDS)}")
    for item in order:
        if order.count(item) > 1:
            raise r.fail("backup_order", f"{item!r} is listed twice", "list each kind once")
    configured = {"databases": bool(databases), "media": any(p.kind == "media" for p in data_paths),
                  "paths": any(p.kind == "paths" for p in data_paths)}
    for kind in BACKUP_KINDS:
        if configured[kind] and kind not in order:
            raise r.fail("backup_order", f"{kind!r} is configured but missing, so it would never be backed up",
                         f"add {kind} to backup_order (usual order: {', '.join(BACKUP_KINDS)})")
    return list(order)


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
        raise r.fail("venv", f"expected false or a mapping, got {_type_name(spec)} {_show(spec)}",
                     "write 'venv: {requirements: requirements.txt}' or 'venv: false'")
    r.unknown_keys(spec, {"requirements", "system_site_packages", "pip_args"}, "venv.")
    requirements = r.text(spec, "requirements", "venv.", default="requirements.txt")
    r.host_path(requirements, "venv.requirements")
    return VenvSpec(requirements=requirements,
                    system_site_packages=r.get(spec, "system_site_packages", "venv.", bool, default=False),
                    pip_args=r.text_list(spec, "pip_args", "venv.", scalars=True))


def _parse_lock(r: _Reader, spec: dict) -> LockSpec:
    r.unknown_keys(spec, {"heartbeat", "stale_after"}, "lock.")
    beat = r.number(spec, "heartbeat", "lock.", 10)
    stale = r.number(spec, "stale_after", "lock.", 120)
    if stale < 3 * beat:
        raise r.fail("lock.stale_after", f"must be at least 3 heartbeats ({3 * beat:g} s), got {stale:g}",
                     "a holder is only declared gone after several missed heartbeats")
    return LockSpec(heartbeat=beat, stale_after=stale)


def _parse_vars(r: _Reader, data: dict, where: str) -> dict[str, Any]:
    values = r.mapping(data, "vars", where)
    r.names(values, f"{where}vars.", "var name", _IDENTIFIER, "letters, digits and _, used as {name}")
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise r.fail(f"{where}vars.{key}", f"expected text or a number, got {_type_name(value)} {_show(value)}",
                         "give the var a text or number value (quote it: 'true', '')")
    return dict(values)


def _parse_stage(r: _Reader, name: str, spec, deploy_to: str, python: str) -> list[HostSpec]:
    where = f"stages.{name}."
    if isinstance(spec, list):
        spec = {"hosts": spec}
    if not isinstance(spec, dict):
        raise r.fail(f"stages.{name}", "expected a mapping with 'hosts:'", "write 'hosts: [...]' under the stage")
    r.unknown_keys(spec, {"hosts", "deploy_to", "python", "vars"}, where)
    stage_deploy_to = _deploy_to(r, spec, where, default=deploy_to)
    stage_python = r.host_path(r.text(spec, "python", where, default=python), f"{where}python")
    stage_vars = _parse_vars(r, spec, where)
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
        address = r.text(entry, "address", hwhere, required=True)
        if address == "local":
            user, hostname, port = None, "localhost", 0
        else:
            m = _ADDRESS.match(address)
            if not m:
                raise r.fail(f"{hwhere}address", f"cannot read {address!r}", "write it as user@host:port, e.g. deploy@10.0.0.5:22")
            user, hostname, port = m["user"], m["host"], int(m["port"] or 22)
            if not 1 <= port <= 65535:
                raise r.fail(f"{hwhere}address", f"port {port} is out of range",
                             "write it as user@host:port with a port from 1 to 65535")
        roles_raw = r.get(entry, "roles", hwhere, list, default=None)
        if roles_raw is None:
            roles = {"app", "primary"} if i == 0 else {"app"}
        else:
            for role in roles_raw:
                if not isinstance(role, str) or role not in ROLES:
                    raise r.fail(f"{hwhere}roles", f"unknown role {_show(role)}", f"use roles from {', '.join(sorted(ROLES))}")
            roles = set(roles_raw)
            if not roles:
                raise r.fail(f"{hwhere}roles", "empty", f"give the host at least one role from {', '.join(sorted(ROLES))}")
        hosts.append(HostSpec(
            name=r.text(entry, "name", hwhere, default=hostname if address != "local" else "local"),
            address=address, user=user, hostname=hostname, port=port, roles=roles,
            deploy_to=_deploy_to(r, entry, hwhere, default=stage_deploy_to),
            python=r.host_path(r.text(entry, "python", hwhere, default=stage_python), f"{hwhere}python"),
            vars={**stage_vars, **_parse_vars(r, entry, hwhere)},
        ))
    primaries = [i for i, h in enumerate(hosts) if "primary" in h.roles]
    if len(primaries) != 1:
        raise r.fail(f"{where}hosts", f"needs exactly one host with role 'primary', found {len(primaries)}",
                     "give the host that runs migrations and database work 'roles: [app, primary]'")
    if "app" not in hosts[primaries[0]].roles:
        raise r.fail(f"{where}hosts[{primaries[0]}].roles", "the primary host lacks the 'app' role",
                     "write 'roles: [app, primary]': migrations run in the primary's release directory")
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise r.fail(f"{where}hosts", "two hosts share a name", "give each host a distinct 'name:'")
    places: dict[tuple, int] = {}
    for i, h in enumerate(hosts):
        root = posixpath.normpath(h.deploy_to)
        place = ("local", root) if h.is_local else (h.hostname.lower(), h.port, root)
        if place in places:
            j = places[place]
            shown = "local" if h.is_local else f"{h.hostname} port {h.port}"
            raise r.fail(f"{where}hosts[{i}]", f"is the same host and deploy_to as hosts[{j}] ({hosts[j].name}): "
                         f"{shown}, {root}", "list each host once per stage: the run would lock itself out")
        places[place] = i
    return hosts


def _parse_process(r: _Reader, i: int, spec) -> ProcessSpec:
    where = f"processes[{i}]."
    if not isinstance(spec, dict):
        raise r.fail(f"processes[{i}]", "expected a mapping", "write '- name: web' with 'supervisor:', 'systemd:' or commands")
    r.unknown_keys(spec, {"name", "supervisor", "systemd", "start", "stop", "restart", "status", "writes"}, where)
    name = r.text(spec, "name", where, required=True)
    writes = r.get(spec, "writes", where, bool, default=True)
    kinds = [k for k in ("supervisor", "systemd") if k in spec]
    commands = [k for k in ("start", "stop", "restart", "status") if k in spec]
    if len(kinds) + bool(commands) != 1:
        found = ", ".join(kinds + commands) or "none"
        raise r.fail(f"processes[{i}]", f"needs exactly one of 'supervisor:', 'systemd:' or 'start:'+'stop:' (found: {found})",
                     "manage each process one way: supervisor: {program: NAME}, systemd: UNIT, or start:/stop: commands")
    if "supervisor" in spec:
        sup = spec["supervisor"]
        if not isinstance(sup, dict):
            raise r.fail(f"{where}supervisor", f"expected a mapping, got {_type_name(sup)} {_show(sup)}",
                         "write 'supervisor: {program: NAME, conf: /etc/supervisor/supervisord.conf}'")
        sw = f"{where}supervisor."
        r.unknown_keys(sup, {"program", "conf", "supervisorctl"}, sw)
        program = r.text(sup, "program", sw, default=name)
        ctl = r.text(sup, "supervisorctl", sw, default="supervisorctl")
        conf = r.host_path(r.text(sup, "conf", sw), f"{sw}conf")
        r.template(f"{sw}program", program, one_word=True)
        r.template(f"{sw}supervisorctl", ctl)
        r.template(f"{sw}conf", conf, host_path=True, one_word=True)
        base = f"{ctl} -c {conf}" if conf else ctl
        return ProcessSpec(name, f"{base} start {program}", f"{base} stop {program}",
                           f"{base} restart {program}", f"{base} status {program}", writes,
                           manager="supervisor", program=program, conf=conf, ctl=ctl)
    if "systemd" in spec:
        if spec["systemd"] is None:
            raise r.fail(f"{where}systemd", "expected a unit name, got null", "write 'systemd: app-web.service'")
        unit = r.text(spec, "systemd", where, required=True)
        r.template(f"{where}systemd", unit, one_word=True)
        return ProcessSpec(name, f"systemctl start {unit}", f"systemctl stop {unit}",
                           f"systemctl restart {unit}", f"systemctl is-active {unit}", writes,
                           manager="systemd", unit=unit)
    start = r.text(spec, "start", where, required=True)
    stop = r.text(spec, "stop", where, required=True)
    restart = r.text(spec, "restart", where, default=f"{stop} && {start}")
    status = r.text(spec, "status", where, default="true")
    for key in ("start", "stop", "restart", "status"):
        if key in spec:
            r.template(f"{where}{key}", spec[key])
    return ProcessSpec(name, start, stop, restart, status, writes, manager="commands")


def _pg_identifier(r: _Reader, spec: dict, key: str, where: str, default=None, required=False) -> str | None:
    value = r.text(spec, key, where, default=default, required=required)
    if value is not None:
        size = len(value.encode("utf-8"))
        if size > PG_MAX_IDENTIFIER:
            raise r.fail(f"{where}{key}", f"{value!r} is {size} bytes in UTF-8; PostgreSQL silently truncates "
                         f"names to {PG_MAX_IDENTIFIER} bytes", f"use a name of at most {PG_MAX_IDENTIFIER} bytes")
    return value


def _parse_databases(r: _Reader, raw: dict) -> list[DatabaseSpec]:
    r.names(raw, "databases.", "database alias", _SAFE_NAME, "letters, digits, _ . -")
    out = []
    servers: dict[tuple, str] = {}
    for alias, spec in raw.items():
        where = f"databases.{alias}."
        if not isinstance(spec, dict):
            raise r.fail(f"databases.{alias}", "expected a mapping", "give engine, name and owner")
        engine = r.text(spec, "engine", where, required=True)
        if engine not in ENGINES:
            raise r.fail(f"{where}engine", f"unsupported engine {engine!r}", f"use one of {', '.join(sorted(ENGINES))}")
        if engine == "sqlite":
            r.unknown_keys(spec, {"engine", "name", "path"}, where)
            if spec.get("name") is not None and spec.get("path") is not None:
                raise r.fail(f"{where}path", "both 'path:' and 'name:' given", "give the database file once, as 'path:'")
            key = "path" if spec.get("path") is not None else "name"
            name = r.host_path(r.text(spec, key, where, required=True), f"{where}{key}")
            r.template(f"{where}{key}", name, host_path=True)
            out.append(DatabaseSpec(alias, engine, name))
            continue
        r.unknown_keys(spec, {"engine", "name", "owner", "host", "port", "admin_user",
                              "password_env", "passfile", "jobs"}, where)
        password_env = r.text(spec, "password_env", where)
        if password_env is not None and not _ENV_NAME.match(password_env):
            raise r.fail(f"{where}password_env", f"{password_env!r} is not an environment variable name",
                         "name the controller's environment variable that holds the password, e.g. APP_PG_PASSWORD")
        passfile = r.host_path(r.text(spec, "passfile", where), f"{where}passfile")
        r.template(f"{where}passfile", passfile, host_path=True)
        db = DatabaseSpec(
            alias, engine, _pg_identifier(r, spec, "name", where, required=True),
            owner=_pg_identifier(r, spec, "owner", where, required=True),
            host=r.text(spec, "host", where), port=r.integer(spec, "port", where, low=1, high=65535),
            admin_user=_pg_identifier(r, spec, "admin_user", where, default="postgres"),
            password_env=password_env,
            passfile=passfile,
            jobs=r.integer(spec, "jobs", where, low=1),
        )
        server = (db.host, db.port, db.name)
        if server in servers:
            raise r.fail(f"{where}name", f"database {db.name!r} on that server is already listed as {servers[server]!r}",
                         "list each database once: it would be backed up and restored twice")
        servers[server] = alias
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
        path = r.host_path(r.text(spec, "path", where, required=True), f"{where}path")
        norm = posixpath.normpath(path)
        if norm in (".", "/", "//", "..") or norm.startswith("../"):
            raise r.fail(f"{where}path", f"{path!r} is not a directory of the app",
                         "name a directory such as shared/media or /var/lib/app/uploads")
        r.template(f"{where}path", path, host_path=True)
        name = r.text(spec, "name", where, default=re.sub(r"[^A-Za-z0-9_.-]+", "-", path.strip("/")) or kind)
        if not _SAFE_NAME.match(name):
            raise r.fail(f"{where}name", f"{name!r} cannot name a backup file", "use only letters, digits, _ . -")
        out.append(PathSpec(name, path, kind))
    _unique(r, kind, [p.name for p in out], "backup")
    paths = [posixpath.normpath(p.path) for p in out]
    if len(set(paths)) != len(paths):
        raise r.fail(kind, "the same path is listed twice", "list each directory once")
    return out


def _parse_health(r: _Reader, i: int, spec) -> HealthCheck:
    where = f"health[{i}]."
    if not isinstance(spec, dict):
        raise r.fail(f"health[{i}]", "expected a mapping", "write '- http: http://127.0.0.1:8000/health/' or '- manage: check'")
    r.unknown_keys(spec, {"http", "manage", "command", "expect_status", "contains", "timeout"}, where)
    timeout = r.number(spec, "timeout", where, 30)
    kinds = [k for k in ("http", "manage", "command") if k in spec]
    if len(kinds) != 1:
        problem = "no check given" if not kinds else f"several checks in one entry ({', '.join(kinds)})"
        raise r.fail(f"health[{i}]", problem, "give each entry exactly one of 'http:', 'manage:' or 'command:'")
    kind = kinds[0]
    if kind != "http":
        extra = [k for k in ("expect_status", "contains") if k in spec]
        if extra:
            raise r.fail(f"{where}{extra[0]}", f"only applies to 'http:' checks, not '{kind}:'", f"remove '{extra[0]}:'")
    if kind == "http":
        url = r.text(spec, "http", where, required=True)
        r.template(f"{where}http", url)
        if not re.match(r"^https?://", url) and not url.startswith("{"):
            raise r.fail(f"{where}http", f"{url!r} is not an http:// or https:// URL", "write the full URL, e.g. http://{hostname}:8000/health/")
        return HealthCheck("http", url=url, timeout=timeout,
                           expect_status=r.integer(spec, "expect_status", where, default=200, low=100, high=599),
                           contains=r.get(spec, "contains", where, str))
    if kind == "manage":
        return HealthCheck("manage", command=r.text(spec, "manage", where, required=True), timeout=timeout)
    command = r.text(spec, "command", where, required=True)
    r.template(f"{where}command", command)
    return HealthCheck("command", command=command, timeout=timeout)


def _phases_in(base: Path) -> frozenset[str]:
    """The stage names (phases) of the playbooks in a directory, read with the playbooks' own loader."""
    phases: set[str] = set()
    try:
        files = sorted(base.glob("*.yml"))
    except OSError:
        files = []
    for path in files:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read this playbook: {exc}", hint="fix or remove the file") from None
        book = _load_yaml(text, path, "the playbook's YAML")
        stages = book.get("stages") if isinstance(book, dict) else None
        for st in stages if isinstance(stages, list) else []:
            if isinstance(st, dict) and isinstance(st.get("name"), str):
                phases.add(st["name"])
    return frozenset(phases)


_builtin_phases = functools.lru_cache(maxsize=1)(lambda: _phases_in(BUILTIN_PLAYBOOKS))


def _playbook_phases(playbooks_dir: Path | None) -> set[str]:
    """The phases of every playbook deploykit may run: the built-in ones and those in playbooks_dir."""
    return set(_builtin_phases()) | (set(_phases_in(playbooks_dir)) if playbooks_dir else set())


def _parse_hooks(r: _Reader, raw: dict, phases: set[str], roles_in_use: set[str]) -> dict[str, dict[str, list[dict]]]:
    """hooks: {before|after: {phase: [cmd | {run, on, timeout}]}}, phases being playbook stage names."""
    r.unknown_keys(raw, {"before", "after"}, "hooks.")
    out: dict[str, dict[str, list[dict]]] = {"before": {}, "after": {}}
    targets = {"all"} | ROLES | roles_in_use
    for when in ("before", "after"):
        entries = r.mapping(raw, when, "hooks.")
        r.names(entries, f"hooks.{when}.", "phase name")
        for phase, cmds in entries.items():
            where = f"hooks.{when}.{phase}"
            if phase not in phases:
                raise r.fail(where, f"no playbook has a phase {phase!r}, so this hook would never run",
                             f"use one of: {', '.join(sorted(phases))}")
            if isinstance(cmds, str):
                cmds = [cmds]
            if not isinstance(cmds, list):
                raise r.fail(where, "expected a list of commands", "write '- ./manage.py clearsessions'")
            items = []
            for j, cmd in enumerate(cmds):
                if isinstance(cmd, str):
                    cmd = {"run": cmd}
                if not isinstance(cmd, dict) or "run" not in cmd:
                    raise r.fail(f"{where}[{j}]", "expected a command or {run: ..., on: role, timeout: seconds}",
                                 "write '- run: CMD' with optional 'on: primary' and 'timeout: 60'")
                hw = f"{where}[{j}]."
                r.unknown_keys(cmd, {"run", "on", "timeout"}, hw)
                run = r.text(cmd, "run", hw, required=True)
                on = r.text(cmd, "on", hw, default="app")
                if on not in targets:
                    raise r.fail(f"{hw}on", f"no host can have the role {on!r}",
                                 f"use 'all' or a role: {', '.join(sorted(targets - {'all'}))}")
                timeout = r.number(cmd, "timeout", hw, 1) if cmd.get("timeout") is not None else None
                r.template(f"{hw}run", run, on=on)
                items.append({"run": run, "on": on, "timeout": timeout})
            out[when][phase] = items
    return out


def _check_templates(r: _Reader, stages: dict[str, list[HostSpec]]) -> None:
    """Every `{name}` of every configured template must be known on every host that renders it."""
    for stage, hosts in stages.items():
        for host in hosts:
            known = host.template_vars()
            for t in r.templates:
                if t.on not in (None, "all") and t.on not in host.roles:
                    continue
                for name in template_names(t.text):
                    if name in known:
                        continue
                    if name == "port":
                        fix = ("{port} is not the SSH port any more: write {ssh_port} for that, "
                               "or define 'port' in vars (of the stage or the host) for the app's port")
                    else:
                        fix = (f"use one of {{{'}, {'.join(sorted(known))}}}, define '{name}' in vars "
                               f"of the stage or the host, or write ${{{name}}} for a shell variable")
                    raise r.fail(t.key, f"unknown template {{{name}}} for host {host.name} of stage {stage}", fix)
                if t.host_path or t.one_word:
                    value = host.render(t.text)
                    if t.host_path and value.startswith("~"):
                        raise r.fail(t.key, f"is {value!r} on host {host.name} of stage {stage}; the host never expands '~'",
                                     "write the absolute path (set the var to one)")
                    if t.one_word and (not value.strip() or re.search(r"\s", value)):
                        raise r.fail(t.key, f"is {value!r} on host {host.name} of stage {stage}, which the "
                                     "command would split at its spaces", "use a name or path without spaces")
