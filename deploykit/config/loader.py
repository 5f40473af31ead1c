"""The one loader: find deploykit.yaml ($DEPLOYKIT_CONFIG or ./), read it, validate it, resolve it.

Whatever the file holds, `load_config` returns a `Config` or raises
`ConfigError` (one line: file, key, problem; its hint says the fix), before
anything connects to a host.
"""
from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import ConfigError
from . import balancer, checks, colours, refresh
from .checks import Template
from .fields import parse_address
from .models import Database, DataPath, Document, Health, Process, Stage
from .phases import playbook_phases
from .problems import fail, from_validation
from .specs import Config, DatabaseSpec, HealthCheck, HostSpec, PathSpec, ProcessSpec
from .yamltext import check_no_nul, load_yaml

DEFAULT_FILE = "deploykit.yaml"


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
    return parse_config(load_yaml(text, cfg_path, "the YAML syntax (indentation, colons, quotes) there"), cfg_path)


def parse_config(raw: Any, cfg_path: Path) -> Config:
    """A Config from the document's data; relative controller paths start at cfg_path's directory."""
    check_no_nul(raw, cfg_path)
    try:
        doc = Document.model_validate(raw)
    except ValidationError as exc:
        raise from_validation(exc, cfg_path) from None
    return _resolve(doc, cfg_path)


def _local_path(path: Path, key: str, value: str | None, base: Path | None, resolve: bool = False) -> Path | None:
    """A path on the controller: `~` is expanded; relative paths start at `base` when given."""
    if value is None:
        return None
    try:
        out = Path(value).expanduser()
        if base is not None and not out.is_absolute():
            out = base / out
        return out.resolve() if resolve else out
    except (RuntimeError, OSError, ValueError) as exc:  # ~nosuchuser, a loop of links
        raise fail(path, key, f"cannot use {value!r}: {exc}", "write an absolute path") from None


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long, a permission refused
        return False


def _hosts(name: str, stage: Stage, doc: Document) -> list[HostSpec]:
    deploy_to = stage.deploy_to or doc.deploy_to
    python = stage.python or doc.python
    hosts = []
    for i, h in enumerate(stage.hosts):
        user, hostname, port = parse_address(h.address)
        hosts.append(HostSpec(
            name=h.name or ("local" if h.address == "local" else hostname), address=h.address, user=user,
            hostname=hostname, port=port,
            roles=set(h.roles) if h.roles is not None else ({"app", "primary"} if i == 0 else {"app"}),
            deploy_to=h.deploy_to or deploy_to, python=h.python or python, vars={**stage.vars, **h.vars}))
    return hosts


def _process(i: int, p: Process, found: list[Template]) -> ProcessSpec:
    where = f"processes[{i}]."
    if p.supervisor is not None:
        sw = f"{where}supervisor."
        program, ctl, conf = p.supervisor.program or p.name, p.supervisor.supervisorctl, p.supervisor.conf
        found += [Template(f"{sw}program", program, one_word=True), Template(f"{sw}supervisorctl", ctl)]
        if conf is not None:
            found.append(Template(f"{sw}conf", conf, host_path=True, one_word=True))
        base = f"{ctl} -c {conf}" if conf else ctl
        return ProcessSpec(p.name, f"{base} start {program}", f"{base} stop {program}", f"{base} restart {program}",
                           f"{base} status {program}", p.writes, manager="supervisor", program=program, conf=conf,
                           ctl=ctl, on=p.on)
    if p.systemd is not None:
        sd = p.systemd
        found += [Template(f"{where}systemd.unit", sd.unit, one_word=True),
                  Template(f"{where}systemd.systemctl", sd.systemctl)]
        ctl = f"{sd.systemctl} --user" if sd.user else sd.systemctl
        return ProcessSpec(p.name, f"{ctl} start {sd.unit}", f"{ctl} stop {sd.unit}", f"{ctl} restart {sd.unit}",
                           f"{ctl} is-active {sd.unit}", p.writes, manager="systemd", unit=sd.unit, user=sd.user,
                           systemctl=sd.systemctl, on=p.on)
    for verb in ("start", "stop", "restart", "status"):
        if getattr(p, verb) is not None:
            found.append(Template(f"{where}{verb}", getattr(p, verb)))
    return ProcessSpec(p.name, p.start, p.stop, p.restart or f"{p.stop} && {p.start}", p.status or "true", p.writes,
                       manager="commands", on=p.on)


def _database(alias: str, d: Database, found: list[Template]) -> DatabaseSpec:
    where = f"databases.{alias}."
    if d.engine == "sqlite":
        key = "path" if d.path is not None else "name"
        found.append(Template(f"{where}{key}", getattr(d, key), host_path=True))
        return DatabaseSpec(alias, d.engine, getattr(d, key))
    if d.passfile is not None:
        found.append(Template(f"{where}passfile", d.passfile, host_path=True))
    return DatabaseSpec(alias, d.engine, d.name, owner=d.owner, host=d.host, port=d.port, admin_user=d.admin_user,
                        password_env=d.password_env, passfile=d.passfile, jobs=d.jobs)


def _data_paths(path: Path, kind: str, entries: list[DataPath], found: list[Template]) -> list[PathSpec]:
    out = []
    for i, e in enumerate(entries):
        found.append(Template(f"{kind}[{i}].path", e.path, host_path=True))
        out.append(PathSpec(e.name or re.sub(r"[^A-Za-z0-9_.-]+", "-", e.path.strip("/")) or kind, e.path, kind))
    checks.unique(path, kind, [p.name for p in out], "backup")
    norms = [posixpath.normpath(p.path) for p in out]
    if len(set(norms)) != len(norms):
        raise fail(path, kind, "the same path is listed twice", "list each directory once")
    return out


def _health(i: int, h: Health, found: list[Template]) -> HealthCheck:
    where = f"health[{i}]."
    if h.kind == "http":
        found.append(Template(f"{where}http", h.http))
        found += [Template(f"{where}headers.{name}", value) for name, value in h.headers.items()]
        return HealthCheck("http", url=h.http, timeout=h.timeout, expect_status=h.expect_status, contains=h.contains,
                           headers=dict(h.headers), json=h.json_fields, follow_redirects=h.follow_redirects,
                           fail_after=h.fail_after)
    if h.kind == "manage":
        return HealthCheck("manage", command=h.manage, timeout=h.timeout)
    found.append(Template(f"{where}command", h.command))
    return HealthCheck("command", command=h.command, timeout=h.timeout)


def _resolve(doc: Document, path: Path) -> Config:
    """The specs of a validated document, after the checks across sections."""
    project_dir = path.parent
    found: list[Template] = []
    stages = {name: _hosts(name, stage, doc) for name, stage in doc.stages.items()}
    for name, hosts in stages.items():
        checks.stage_hosts(path, name, hosts)
    processes = [_process(i, p, found) for i, p in enumerate(doc.processes)]
    checks.unique(path, "processes", [p.name for p in processes], "process")
    databases = [_database(alias, d, found) for alias, d in doc.databases.items()]
    servers: dict[tuple, str] = {}
    for db in databases:
        if db.engine == "sqlite":
            continue
        server = (db.host, db.port, db.name)
        if server in servers:
            raise fail(path, f"databases.{db.alias}.name", f"database {db.name!r} on that server is already listed "
                       f"as {servers[server]!r}", "list each database once: it would be backed up and restored twice")
        servers[server] = db.alias
    data_paths = _data_paths(path, "media", doc.media, found) + _data_paths(path, "paths", doc.paths, found)
    checks.backup_order(path, doc.backup_order, {"databases": bool(databases), "media": bool(doc.media),
                                                 "paths": bool(doc.paths)})
    health = [_health(i, h, found) for i, h in enumerate(doc.health)]
    known_hosts = _local_path(path, "ssh.known_hosts", doc.ssh.known_hosts, None)
    identity = _local_path(path, "ssh.identity", doc.ssh.identity, None)
    journal_dir = _local_path(path, "journal_dir", doc.journal_dir, project_dir)
    playbooks_dir = _local_path(path, "playbooks_dir", doc.playbooks_dir, project_dir)
    if playbooks_dir is not None and not _is_dir(playbooks_dir):
        raise fail(path, "playbooks_dir", f"no directory at {playbooks_dir}",
                   "create it or fix the path (relative paths start at the config file's directory)")
    found += [Template(f"install[{i}]", cmd) for i, cmd in enumerate(doc.install)]
    hooks = {when: {phase: [{"run": h.run, "on": h.on, "timeout": h.timeout} for h in items]
                    for phase, items in getattr(doc.hooks, when).items()} for when in ("before", "after")}
    checks.host_roles(path, stages, doc.roles)
    checks.process_roles(path, processes, doc.roles)
    roles_in_use = {role for hosts in stages.values() for h in hosts for role in h.roles}
    checks.hooks(path, hooks, playbook_phases(playbooks_dir), roles_in_use)
    for when, entries in hooks.items():
        for phase, items in entries.items():
            found += [Template(f"hooks.{when}.{phase}[{j}].run", h["run"], on=h["on"]) for j, h in enumerate(items)]
    config = Config(
        path=path, project_dir=project_dir, app=doc.app or project_dir.name or "app",
        repo=_local_path(path, "repo", doc.repo, project_dir, resolve=True), deploy_to=doc.deploy_to,
        python=doc.python, settings_module=doc.settings_module, stages=stages, shared=doc.shared,
        processes=processes, databases=databases, data_paths=data_paths, backup_order=doc.backup_order,
        health=health, keep_releases=doc.keep_releases,
        keep_backups=doc.keep_backups if doc.keep_backups is not None else doc.keep_releases,
        hooks=hooks, install=doc.install, collectstatic=doc.collectstatic, known_hosts=str(known_hosts),
        identity=str(identity) if identity else None, connect_timeout=doc.ssh.connect_timeout,
        command_timeout=doc.ssh.command_timeout, min_free_mb=doc.min_free_mb, snapshots=doc.snapshots,
        snapshot_budget=doc.snapshot_budget,
        playbooks_dir=playbooks_dir, journal_dir=journal_dir, venv=doc.venv, lock=doc.lock,
        keep_runs=doc.keep_runs, freeze=doc.freeze, rollout=doc.rollout, colours=colours.resolve(path, doc.colours, stages),
        refresh=refresh.resolve(path, doc.refresh, _local_path(path, "refresh.rules_file", doc.refresh.rules_file,
                                                               project_dir) if doc.refresh else None))
    config.balancer = balancer.resolve(path, doc.rollout.balancer, stages, config.colours)
    if "freeze" in doc.model_fields_set:  # a config that never mentions the freeze is not refused for it
        checks.freeze(path, doc.freeze, processes, doc.ssh.command_timeout)
    checks.templates(path, stages, found)
    return config
