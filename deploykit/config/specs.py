"""The resolved settings the rest of deploykit receives: one spec per host, process, database, path, check.

The loader builds them from a validated Document (models.py): defaults filled
in, stage and host settings merged, short forms expanded. Nothing here reads
YAML or the environment, except a database's password, read when it is used.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MaskKeyMissing, UnknownStage
from .models import FreezeSpec, LockSpec, VenvSpec

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
    (`unit`, `user`, `systemctl`) or "commands" (only the four commands).
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
    user: bool = False  # systemd: the user's own manager (systemctl --user)
    systemctl: str | None = None  # systemd: the systemctl command (default: systemctl)
    on: str = "app"  # the role of the hosts it runs on ("all": every host)


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
    """One health check; the http ones are judged by deploykit/http_answer.py (templates: render per host)."""

    kind: str  # "http", "manage" or "command"
    url: str | None = None
    expect_status: int = 200
    contains: str | None = None
    timeout: float = 30.0  # seconds it may keep failing while the app starts
    command: str | None = None
    headers: dict[str, str] = field(default_factory=dict)  # sent with each request (values are templates)
    json: dict[str, Any] | None = None  # dotted path -> the value the JSON body must hold there
    follow_redirects: bool = False
    fail_after: int = 3  # definite wrong answers in a row that fail the check at once


@dataclass
class RouterSpec:
    """The router in front of the colours: its stage and driver ("nginx" or "command") with the driver's keys."""

    stage: str
    driver: str  # a key of deploykit.routers.ROUTERS
    upstream_file: str | None = None  # nginx: the file deploykit owns on the router host
    upstream: str | None = None  # nginx: the upstream block's name
    nginx: str = "nginx"  # nginx: how to run it there (a template)
    pid_file: str | None = None  # nginx: its pid file there; a switch then waits for the old workers
    switch: str | None = None  # command: sends traffic to {colour} {servers}
    live: str | None = None  # command: prints the live colour
    check: str | None = None  # URL through the router, asked from the router host (a template)
    check_timeout: float = 10.0


@dataclass
class ColoursSpec:
    """Blue/green: two stages (the colours) behind one router, and each colour's addresses as the router sees them."""

    stages: list[str]
    router: RouterSpec
    servers: dict[str, list[str]]


@dataclass
class BalancerConfig:
    """The balancer in front of one stage's app hosts (rollout.balancer): its stage, driver and each host's
    address as the balancer reaches it."""

    stage: str  # the stage whose hosts run the balancer
    serves: str  # the stage whose app hosts it balances
    driver: str  # a key of deploykit.routers.BALANCERS
    servers: dict[str, str]  # app host name -> address (in the stage's order)
    drain_timeout: float = 60.0
    upstream_file: str | None = None  # nginx: the file deploykit owns on the balancer host
    upstream: str | None = None  # nginx: the upstream block's name
    nginx: str = "nginx"  # nginx: how to run it there (a template)
    pid_file: str | None = None  # nginx: its master's pid file
    access_log: str | None = None  # nginx: the log in deploykit's format
    server_options: str | None = None  # nginx: words after each server's address
    directives: list[str] = field(default_factory=list)  # nginx: lines inside the upstream block
    drain: str | None = None  # command: takes {server} out
    restore: str | None = None  # command: puts {server} back
    errors: str | None = None  # command: prints {"requests": n, "errors": m} since {since}


MIN_MASK_KEY = 16  # characters of the masking key: a short one could be guessed from masked values


@dataclass
class RefreshSpec:
    """The anonymized refresh: canonical rules (config/rules.py) by the key they were written under, and the rest.

    A key is app_label.Model.field or table.column (deploykit.anonymize.resolve maps it to a column);
    rule_sources says which file each came from. media: directory ("avatars/") or "default" -> placeholder,
    exclude or keep; proof_sample: values per column kept for the proof (None: all of them).
    """

    key_env: str
    rules: dict[str, dict]
    rule_sources: dict[str, str] = field(default_factory=dict)
    rules_file: Path | None = None  # resolved; may not exist yet (--init-rules writes it)
    rules_file_found: bool = False
    subset: dict[str, str] = field(default_factory=dict)  # table or app_label.Model -> SQL condition
    media: dict[str, str] = field(default_factory=lambda: {"default": "keep"})
    proof_sample: int | None = None

    def mask_key(self) -> bytes:
        """The masking key from the controller's environment (read when used, never stored in the spec)."""
        value = os.environ.get(self.key_env, "")
        if len(value) < MIN_MASK_KEY:
            said = "is not set" if not value else f"holds {len(value)} characters, fewer than {MIN_MASK_KEY}"
            raise MaskKeyMissing(f"the masking key: ${self.key_env} {said}",
                                 hint=f"export {self.key_env}=<a secret of at least {MIN_MASK_KEY} characters>; "
                                      "keep it: the same key gives the same masked values")
        return value.encode("utf-8", "surrogateescape")


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
    freeze: FreezeSpec = field(default_factory=FreezeSpec)  # how writes are frozen (work/freeze.py)
    keep_runs: int = 50  # local run journals kept (state/local.py)
    snapshot_budget: float = 2.0  # seconds the writers may stay stopped for snapshots (work/snapshots.py)
    colours: ColoursSpec | None = None  # blue/green (deploykit switch, deploykit colours)
    refresh: RefreshSpec | None = None  # the anonymized refresh (deploykit refresh)
    rollout: Any = None  # models.RolloutSpec: batches of a rolling release (work/rollout.py); None: all at once
    balancer: BalancerConfig | None = None  # rollout.balancer: drain/restore/errors of a rolling release

    def stage(self, name: str) -> list[HostSpec]:
        if name not in self.stages:
            known = ", ".join(sorted(self.stages)) or "none"
            raise UnknownStage(f"unknown stage {name!r} in {self.path} (known: {known})")
        return self.stages[name]
