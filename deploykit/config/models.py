"""The typed models of deploykit.yaml: one per section, as the operator writes it.

Each field carries what the README's key reference shows (a one-line
description, an example, the default) next to the type that checks it, so the
documentation cannot drift from the validation. The loader turns a validated
`Document` into the resolved specs the rest of deploykit uses (specs.py).
"""
from __future__ import annotations

import difflib
import posixpath
import re
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, model_validator
from pydantic_core import PydanticCustomError, PydanticUndefined

from .. import layout
from .fields import (
    BACKUP_KINDS, KEY, SAFE_NAME, WHERE, Address, AnyText, BackupOrder, Engine, EnvName, Flag, Headers, HostDir,
    HostPath, JsonPaths, KeepReleases, Label, LocalPath, ModulePath, Number, OneOf, PgName, Roles, Text, TextList, Vars,
    Whole, check_of, names, of_kind, problem, show, type_name,
)
from .rollout import WORKER_POLICIES, BatchSizes, Duration, Rate
from .rules import KeyEnv, Media, ProofSample, Rules, Subset


def key(description: str, example: str, default: Any = PydanticUndefined, *, default_text: str | None = None,
        default_factory=None, alias: str | None = None) -> Any:
    """A field with what the key reference shows: description, example and (when it is not the value) the default.

    `alias`: the key as written in deploykit.yaml, when it cannot be the attribute's name (`json`
    would shadow pydantic's own method).
    """
    extra = {"default_text": default_text} if default_text else None
    if default_factory is not None:
        return Field(default_factory=default_factory, description=description, examples=[example],
                     json_schema_extra=extra, alias=alias)
    return Field(default, description=description, examples=[example], json_schema_extra=extra, alias=alias)


def yaml_key(name: str, info) -> str:
    """The key of a field as deploykit.yaml spells it."""
    return info.alias or name


def Listed(item: Any, label: str, empty: tuple[str, str] | None = None) -> Any:
    """A list of sections; with `empty`, an empty list is refused with that (problem, hint)."""
    def check(value: Any) -> Any:
        of_kind(value, list)
        if empty and not value:
            raise problem(*empty)
        return value
    return Annotated[list[item], BeforeValidator(check), Label(label)]


def Named(item: Any, label: str, what: str, pattern=None, example: str = "",
          empty: tuple[str, str] | None = None) -> Any:
    """A mapping of names (stages, aliases, phases) to sections; the names are checked first."""
    def check(value: Any) -> Any:
        of_kind(value, dict)
        if empty and not value:
            raise problem(*empty)
        names(value, what, pattern, example)
        return value
    return Annotated[dict[str, item], BeforeValidator(check), Label(label)]


def _again(key_name: str, check, value: Any) -> Any:
    """Run a field check from a model validator, so its refusal names that key."""
    try:
        return check(value)
    except PydanticCustomError as exc:
        raise problem(exc.context["problem"], exc.context["hint"], at=(key_name,) + exc.context["at"]) from None


def _missing(key_name: str) -> PydanticCustomError:
    return problem("missing", f"add '{KEY}:' to {WHERE}", at=(key_name,))


class Section(BaseModel):
    """A mapping of deploykit.yaml: its keys are known, a null value means the default."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    shape: ClassVar[tuple[str, str]] = ("expected dict", f"give '{KEY}' a dict value")

    @classmethod
    def expand(cls, data: Any) -> Any:
        """The short form of a section (a host as its address) as the mapping it stands for."""
        return data

    @classmethod
    def yaml_keys(cls) -> list[str]:
        """The keys this section accepts, as deploykit.yaml spells them."""
        return [yaml_key(name, info) for name, info in cls.model_fields.items()]

    @classmethod
    def check_keys(cls, data: dict) -> None:
        """Rules on which keys are present, before their values are read."""

    @model_validator(mode="before")
    @classmethod
    def _read(cls, data: Any) -> Any:
        data = cls.expand(data)
        if not isinstance(data, dict):
            text, hint = cls.shape
            raise problem(f"{text}, got {type_name(data)} {show(data)}", hint)
        unknown_keys(data, cls.yaml_keys())
        cls.check_keys(data)
        return {k: v for k, v in data.items() if v is not None}


def unknown_keys(data: dict, allowed) -> None:
    """The first unknown key (in sorted order), with the nearest known one when there is one."""
    extra = sorted((k for k in data if k not in allowed), key=str)
    if extra:
        known = ", ".join(sorted(allowed))
        close = difflib.get_close_matches(str(extra[0]), list(allowed), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? Otherwise remove it (known: {known})" if close else \
            f"remove it or use one of: {known}"
        raise problem("unknown key", hint, at=(str(extra[0]),))


class SshSection(Section):
    """How the controller reaches the hosts."""

    known_hosts: LocalPath = key("known_hosts file on the controller; hosts whose key is not in it are refused",
                                 "known_hosts: ~/.ssh/known_hosts", "~/.ssh/known_hosts")
    identity: LocalPath | None = key("private key file on the controller (default: the SSH agent and ~/.ssh keys)",
                                     "identity: ~/.ssh/id_ed25519", None)
    connect_timeout: Number() = key("seconds to wait for a host to answer", "connect_timeout: 10", 10.0)
    command_timeout: Number() = key("seconds one command on a host may take", "command_timeout: 3600", 3600.0)


class LockSpec(Section):
    """The stage lock's liveness: a holder whose heartbeat is older than stale_after is gone."""

    heartbeat: Number() = key("seconds between the lock holder's heartbeats", "heartbeat: 10", 10.0)
    stale_after: Number() = key("seconds without a heartbeat after which a holder is declared gone "
                                "(at least 3 heartbeats)", "stale_after: 120", 120.0)

    @model_validator(mode="after")
    def _several_beats(self) -> "LockSpec":
        if self.stale_after < 3 * self.heartbeat:
            raise problem(f"must be at least 3 heartbeats ({3 * self.heartbeat:g} s), got {self.stale_after:g}",
                          "a holder is only declared gone after several missed heartbeats", at=("stale_after",))
        return self


class VenvSpec(Section):
    """Each release gets its own Python environment built from its requirements."""

    requirements: HostPath = key("requirements file, relative to the release directory",
                                 "requirements: requirements.txt", "requirements.txt")
    system_site_packages: Flag = key("also see the packages of 'python:' (even when that is a venv)",
                                     "system_site_packages: false", False)
    pip_args: TextList(scalars=True) = key("extra arguments of pip install", "pip_args: [--no-index, --find-links, "
                                           "/srv/wheels]", default_factory=list)


FREEZE_MODES = ("stop_writers", "maintenance")


class FreezeSpec(Section):
    """How writes are frozen while data is copied (a blue/green transfer): steps freeze_writes, unfreeze_writes."""

    mode: OneOf(*FREEZE_MODES) = key(
        "stop_writers: stop the processes with 'writes: true' (workers first: the reverse of their order in "
        "processes:), start them again after (nothing is served meanwhile); maintenance: the app answers writes "
        "503 with Retry-After and keeps serving reads (needs deploykit.django.middleware.WriteFreezeMiddleware "
        "in the app's MIDDLEWARE, checked before each freeze)", "mode: maintenance", "stop_writers")
    retry_after: Whole(0) = key("maintenance: the Retry-After seconds of a refused write", "retry_after: 5", 5)
    drain_timeout: Number() = key("seconds the freeze waits for the writes in flight to end; then it is given up "
                                  "(the flag removed) and the step fails", "drain_timeout: 30", 30.0)


def _venv(value: Any) -> Any:
    """venv: false (the app's shared interpreter), true or a mapping."""
    if value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise problem(f"expected false or a mapping, got {type_name(value)} {show(value)}",
                      "write 'venv: {requirements: requirements.txt}' or 'venv: false'")
    return value


class Host(Section):
    """One host of a stage: its address, or a mapping with what differs on that host."""

    shape: ClassVar = ("expected an address or a mapping", "write 'local' or 'user@host:port'")

    address: Address = key("'local', or user@hostname:port (port 22 when not given)",
                           "address: deploy@10.0.0.5:22")
    name: Text | None = key("the host's name in output and in {name}", "name: web1", None,
                            default_text="the hostname ('local' for local)")
    roles: Roles | None = key("roles from app, primary, db, web, worker; exactly one host of a stage is primary "
                              "(migrations and database work run there)", "roles: [app, primary]", None,
                              default_text="[app, primary] for the first host, [app] for the others")
    deploy_to: HostDir | None = key("the app's directory on this host", "deploy_to: /srv/lib2", None,
                                    default_text="the stage's deploy_to")
    python: HostPath | None = key("base interpreter on this host", "python: /usr/bin/python3.12", None,
                                  default_text="the stage's python")
    vars: Vars = key("template values for this host (over the stage's)", "vars: {port: 8001}", default_factory=dict)

    @classmethod
    def expand(cls, data: Any) -> Any:
        return {"address": data} if isinstance(data, str) else data


class Stage(Section):
    """An inventory environment (prod, preprod, blue, green): its hosts and what they share."""

    shape: ClassVar = ("expected a mapping with 'hosts:'", "write 'hosts: [...]' under the stage")

    hosts: Listed(Host, "list of hosts", empty=("empty", "list at least one host ('local' or user@host:port)")) = key(
        "the stage's hosts (a list of addresses is short for 'hosts:')", "hosts: [local]")
    deploy_to: HostDir | None = key("the app's directory on the stage's hosts", "deploy_to: /srv/library", None,
                                    default_text="the top-level deploy_to")
    python: HostPath | None = key("base interpreter on the stage's hosts", "python: /usr/bin/python3.11", None,
                                  default_text="the top-level python")
    vars: Vars = key("template values for every host of the stage", "vars: {port: 8000}", default_factory=dict)

    @classmethod
    def expand(cls, data: Any) -> Any:
        return {"hosts": data} if isinstance(data, list) else data


class Supervisor(Section):
    """A process run by supervisord."""

    shape: ClassVar = ("expected a mapping",
                       "write 'supervisor: {program: NAME, conf: /etc/supervisor/supervisord.conf}'")

    program: Text | None = key("supervisor program name", "program: library-web", None,
                               default_text="the process name")
    conf: HostPath | None = key("supervisord.conf: deploykit asks supervisord over the socket it names (as "
                                "supervisorctl does, without starting it); also 'supervisorctl -c'",
                                "conf: /etc/supervisor/supervisord.conf",
                                None, default_text="supervisorctl's own default (then supervisorctl is always run)")
    supervisorctl: Text = key("the supervisorctl command: run when the socket cannot be reached, and always when "
                              "it is more than a plain supervisorctl (sudo, a wrapper)",
                              "supervisorctl: sudo supervisorctl", "supervisorctl")


class SystemdUnit(Section):
    """A process run as a systemd unit."""

    shape: ClassVar = ("expected a unit name or a mapping",
                       "write 'systemd: app-web.service' or 'systemd: {unit: app-web.service, user: true}'")

    unit: Text = key("the unit", "unit: library-web.service")
    user: Flag = key("the user's own manager ('systemctl --user')", "user: true", False)
    systemctl: Text = key("the systemctl command", "systemctl: sudo systemctl", "systemctl")


def _unit(value: Any) -> Any:
    """systemd: UNIT, or a mapping {unit, user, systemctl}."""
    return {"unit": value} if isinstance(value, str) else value


class Process(Section):
    """A process the release restarts: by supervisor, by systemd or by four commands."""

    shape: ClassVar = ("expected a mapping", "write '- name: web' with 'supervisor:', 'systemd:' or commands")

    name: Text = key("the process's name", "name: web")
    supervisor: Supervisor | None = key("managed by supervisord", "supervisor: {program: library-web}", None)
    systemd: Annotated[SystemdUnit | None, BeforeValidator(_unit)] = key(
        "managed by systemd: the unit ('systemd: library-worker.service'), or a mapping: unit, user (true: "
        "'systemctl --user'), systemctl (the command)", "systemd: {unit: library-worker.service, user: true}", None)
    start: Text | None = key("command that starts it", "start: ./bin/beat start", None)
    stop: Text | None = key("command that stops it", "stop: ./bin/beat stop", None)
    restart: Text | None = key("command that restarts it", "restart: ./bin/beat restart", None,
                               default_text="stop, then start")
    status: Text | None = key("command that succeeds while it runs", "status: ./bin/beat status", None,
                              default_text="true")
    writes: Flag = key("stopped before a snapshot or a restore (it writes to the data)", "writes: false", True)
    on: Text = key("the role of the hosts it runs on ('all': every host of the stage)", "on: worker", "app")

    @classmethod
    def check_keys(cls, data: dict) -> None:
        kinds = [k for k in ("supervisor", "systemd") if k in data]
        commands = [k for k in ("start", "stop", "restart", "status") if k in data]
        if len(kinds) + bool(commands) != 1:
            found = ", ".join(kinds + commands) or "none"
            raise problem(f"needs exactly one of 'supervisor:', 'systemd:' or 'start:'+'stop:' (found: {found})",
                          "manage each process one way: supervisor: {program: NAME}, systemd: UNIT, "
                          "or start:/stop: commands")
        if "supervisor" in data and data["supervisor"] is None:
            raise problem("expected a mapping, got null", Supervisor.shape[1], at=("supervisor",))
        if "systemd" in data and data["systemd"] is None:
            raise problem("expected a unit name, got null", "write 'systemd: app-web.service'", at=("systemd",))
        if commands:
            for needed in ("start", "stop"):
                if data.get(needed) is None:
                    raise _missing(needed)


SQLITE_KEYS = frozenset({"engine", "name", "path"})


class Database(Section):
    """A Django database alias and how to reach it as an administrator (SQLite: engine and path only)."""

    shape: ClassVar = ("expected a mapping", "give engine, name and owner")

    engine: Engine = key("the database engine: a driver of deploykit.drivers.ENGINES", "engine: postgresql")
    name: Text | None = key("the database name (SQLite: the file, as 'path:')", "name: library", None)
    path: HostPath | None = key("SQLite only: the database file on the host", "path: shared/db.sqlite3", None)
    owner: PgName | None = key("PostgreSQL: the role that owns every object after a restore", "owner: library", None)
    host: Text | None = key("PostgreSQL server host (default: the local socket)", "host: 127.0.0.1", None)
    port: Whole(1, 65535) | None = key("PostgreSQL server port", "port: 5432", None, default_text="libpq's (5432)")
    admin_user: PgName = key("PostgreSQL role that dumps, restores and clones", "admin_user: postgres", "postgres")
    password_env: EnvName | None = key("controller environment variable holding the admin password",
                                       "password_env: LIBRARY_PG_ADMIN_PASSWORD", None)
    passfile: HostPath | None = key("an existing libpq passfile on the host", "passfile: /home/deploy/.pgpass", None)
    jobs: Whole(1) | None = key("parallel jobs of pg_dump and pg_restore", "jobs: 4", None,
                                default_text="the host's CPU count")

    @classmethod
    def check_keys(cls, data: dict) -> None:
        engine = data.get("engine")
        if engine == "sqlite":
            unknown_keys(data, SQLITE_KEYS)
            if data.get("name") is not None and data.get("path") is not None:
                raise problem("both 'path:' and 'name:' given", "give the database file once, as 'path:'",
                              at=("path",))
        elif engine == "postgresql":
            unknown_keys(data, set(cls.yaml_keys()) - {"path"})

    @model_validator(mode="after")
    def _per_engine(self) -> "Database":
        if self.engine == "sqlite":
            if self.path is None:
                if self.name is None:
                    raise _missing("name")
                _again("name", check_of(HostPath), self.name)
            return self
        for needed in ("name", "owner"):
            if getattr(self, needed) is None:
                raise _missing(needed)
        _again("name", check_of(PgName), self.name)
        return self


class DataPath(Section):
    """A directory backed up with a per-file manifest (media or an extra path)."""

    shape: ClassVar = ("expected a path or a mapping",
                       "write '- shared/media' or '- {name: media, path: shared/media}'")

    path: HostPath = key("the directory: absolute, or relative to deploy_to (a bare string is short for it)",
                         "path: shared/media")
    name: Text | None = key("the backup's name (letters, digits, _ . -)", "name: media", None,
                            default_text="the path with / as -")

    @classmethod
    def expand(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _inside(self) -> "DataPath":
        norm = posixpath.normpath(self.path)
        if norm in (".", "/", "//", "..") or norm.startswith("../"):
            raise problem(f"{self.path!r} is not a directory of the app",
                          "name a directory such as shared/media or /var/lib/app/uploads", at=("path",))
        if self.name is not None and not SAFE_NAME.match(self.name):
            raise problem(f"{self.name!r} cannot name a backup file", "use only letters, digits, _ . -", at=("name",))
        return self


HEALTH_KINDS = ("http", "manage", "command")
HTTP_ONLY = ("expect_status", "contains", "headers", "json", "follow_redirects", "fail_after")


class Health(Section):
    """One check after the switch: exactly one of http, manage or command."""

    shape: ClassVar = ("expected a mapping", "write '- http: http://127.0.0.1:8000/health/' or '- manage: check'")

    http: Text | None = key("URL that must answer expect_status (asked from the host itself)",
                            "http: http://127.0.0.1:{port}/health/", None)
    manage: Text | None = key("manage.py command that must succeed", "manage: check --deploy", None)
    command: Text | None = key("shell command in the release that must succeed", "command: ./bin/smoke-test", None)
    expect_status: Whole(100, 599) = key("http: the expected status", "expect_status: 200", 200)
    headers: Headers = key("http: headers sent with each request; values may use {vars} like the URL "
                           "(Django's ALLOWED_HOSTS answers 400 without the right Host)",
                           "headers: {Host: shop.example.com, X-Forwarded-Proto: https}", default_factory=dict)
    contains: AnyText | None = key("http: text the body must contain", "contains: ok", None)
    json_fields: JsonPaths | None = key("http: the body must be JSON and each dotted path must hold that value",
                                        "json: {status: ok, db.ok: true}", None, alias="json")
    follow_redirects: Flag = key("http: follow redirects to the final answer (a health URL that redirects, to a "
                                 "login page or to https, is usually a mistake)", "follow_redirects: false", False)
    fail_after: Whole(1) = key("http: definite wrong answers in a row (an answer from the app that is not the "
                               "expected one) that fail the check at once, without waiting for timeout",
                               "fail_after: 3", 3)
    timeout: Number() = key("seconds the check may keep failing while the app starts (http: connection refused, "
                            "502/503/504) before the release is recovered; manage/command: seconds it may run",
                            "timeout: 30", 30.0)

    @classmethod
    def check_keys(cls, data: dict) -> None:
        kinds = [k for k in HEALTH_KINDS if k in data]
        if len(kinds) != 1:
            found = "no check given" if not kinds else f"several checks in one entry ({', '.join(kinds)})"
            raise problem(found, "give each entry exactly one of 'http:', 'manage:' or 'command:'")
        if kinds[0] != "http":
            extra = [k for k in HTTP_ONLY if k in data]
            if extra:
                raise problem(f"only applies to 'http:' checks, not '{kinds[0]}:'", f"remove '{extra[0]}:'",
                              at=(extra[0],))
        if data[kinds[0]] is None:
            raise _missing(kinds[0])

    @model_validator(mode="after")
    def _url(self) -> "Health":
        if self.http is not None and not self.http.startswith(("http://", "https://", "{")):
            raise problem(f"{self.http!r} is not an http:// or https:// URL",
                          "write the full URL, e.g. http://{hostname}:8000/health/", at=("http",))
        if 300 <= self.expect_status < 400 and self.follow_redirects:
            raise problem(f"expect_status {self.expect_status} is a redirect, which follow_redirects: true never "
                          "shows", "remove 'follow_redirects: true' to check the redirect itself",
                          at=("follow_redirects",))
        return self

    @property
    def kind(self) -> str:
        return next(k for k in HEALTH_KINDS if getattr(self, k) is not None)


class Hook(Section):
    """A command run before or after a phase: its text, or a mapping."""

    shape: ClassVar = ("expected a command or {run: ..., on: role, timeout: seconds}",
                       "write '- run: CMD' with optional 'on: primary' and 'timeout: 60'")

    run: Text = key("the shell command (in the release directory)", "run: ./manage.py clearsessions")
    on: Text = key("'all' or the role of the hosts it runs on", "on: primary", "app")
    timeout: Number() | None = key("seconds it may take", "timeout: 60", None, default_text="ssh.command_timeout")

    @classmethod
    def expand(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"run": data}
        if isinstance(data, dict) and "run" not in data:
            raise problem(*cls.shape)  # a mapping without 'run:' is no command
        return data


def _commands(value: Any) -> Any:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise problem("expected a list of commands", "write '- ./manage.py clearsessions'")
    return value


Commands = Annotated[list[Hook], BeforeValidator(_commands), Label("list of commands")]


class Hooks(Section):
    """Commands around the phases of any playbook (phase names: the playbooks' stage names)."""

    before: Named(Commands, "mapping of phase to commands", "phase name") = key(
        "commands run before a phase", "before: {migrate: [\"{python} manage.py clearsessions\"]}",
        default_factory=dict)
    after: Named(Commands, "mapping of phase to commands", "phase name") = key(
        "commands run after a phase", "after: {verify: [{run: ./bin/warm-cache, on: all, timeout: 90}]}",
        default_factory=dict)


def _shared(value: Any) -> list[str]:
    items = check_of(TextList())(value)
    seen = set()
    for i, item in enumerate(items):
        parts = item.split("/")
        if item.startswith(("/", "~")) or ".." in parts or posixpath.normpath(item) == ".":
            raise problem(f"{item!r} is not a path inside shared/",
                          "write a relative path such as .env or media (linked from shared/ into each release)",
                          at=(i,))
        norm = posixpath.normpath(item)
        if norm in seen:
            raise problem(f"two entries share the path name {norm!r}", "give each entry a distinct 'name:'")
        seen.add(norm)
    return items


Shared = Annotated[list, PlainValidator(_shared), Label("list of relative paths")]


COLOUR_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
# an upstream server as nginx reads it: host:port or unix:/path, nothing nginx would read as syntax
SERVER = re.compile(r"^[^\s;{}'\"#]+$")


def _servers(value: Any) -> list[str]:
    items = check_of(TextList(scalars=False))(value)
    if not items:
        raise problem("empty", "list at least one address, e.g. ['10.0.0.5:8000']")
    for i, item in enumerate(items):
        if not SERVER.match(item):
            raise problem(f"{item!r} is not an upstream address", "write host:port (or unix:/path), without "
                          "spaces, quotes or ; { } #", at=(i,))
    return items


Servers = Annotated[list, PlainValidator(_servers), Label("list of host:port")]


RELOAD_WAIT = 10.0  # seconds a switch waits for nginx's old workers (their long requests end on their own)


class NginxRouter(Section):
    """The built-in nginx driver: deploykit owns one upstream file that nginx includes."""

    shape: ClassVar = ("expected a mapping", "write 'nginx: {upstream_file: /etc/nginx/deploykit/app.conf, "
                                             "upstream: app}'")

    upstream_file: HostDir = key("the upstream file on the router host (absolute; deploykit writes it whole, "
                                 "nginx.conf includes it inside 'http {}')",
                                 "upstream_file: /etc/nginx/deploykit/library.conf")
    upstream: Text = key("the name of the upstream block (proxy_pass http://NAME)", "upstream: library")
    command: Text = key("how to run nginx on the router host ('-t' and '-s reload' are appended)",
                        "command: sudo nginx", "nginx")
    pid_file: HostDir | None = key("nginx's pid file on the router host (its 'pid' directive): a switch then "
                                   "returns once the workers from before the reload are gone (at most "
                                   f"{RELOAD_WAIT:g} s), so what it says nginx serves, nginx serves",
                                   "pid_file: /run/nginx.pid", None,
                                   default_text="none: a switch returns once nginx was told to reload")

    @model_validator(mode="after")
    def _one_word(self) -> "NginxRouter":
        if not COLOUR_NAME.match(self.upstream):
            raise problem(f"{self.upstream!r} cannot name an upstream block", "use only letters, digits, _ . -",
                          at=("upstream",))
        return self


class RouterCommands(Section):
    """The command driver: two commands of the operator's own, run on the router host in its deploy_to."""

    shape: ClassVar = ("expected a mapping", "write 'command: {switch: ./bin/route {colour} {servers}, "
                                             "live: ./bin/which-colour}'")

    switch: Text = key("sends traffic to a colour; {colour} is its name, {servers} its addresses (quoted words); "
                       "must exit 0 only when the router serves that colour", "switch: ./bin/route {colour} {servers}")
    live: Text = key("prints the colour the router serves now (nothing: none); read-only, preflight runs it",
                     "live: ./bin/which-colour")


class Router(Section):
    """What sends the traffic to one colour: the stage whose hosts run it, and one driver."""

    shape: ClassVar = ("expected a mapping", "write 'router: {stage: edge, nginx: {...}}'")

    stage: Text = key("the stage whose hosts run the router (a stage of 'stages:'; its hosts may be the "
                      "colours' hosts too)", "stage: edge")
    nginx: NginxRouter | None = key("the built-in nginx driver", "nginx: {upstream_file: /etc/nginx/deploykit/"
                                    "library.conf, upstream: library}", None)
    command: RouterCommands | None = key(
        "the command driver, for any other router",
        "command: {switch: './bin/route {colour} {servers}', live: ./bin/which-colour}", None)
    check: Text | None = key("URL of the app through the router, asked from the router host after a switch: it "
                             "must answer what the new colour's servers answer at the same path (else the switch "
                             "is undone)", "check: http://127.0.0.1:{port}/version/", None,
                             default_text="none: the switch is not verified through the router")
    check_timeout: Number() = key("seconds the router check may take to see the new colour", "check_timeout: 10",
                                  10.0)

    @classmethod
    def check_keys(cls, data: dict) -> None:
        drivers = [k for k in ("nginx", "command") if data.get(k) is not None]
        if len(drivers) != 1:
            found = ", ".join(drivers) or "none"
            raise problem(f"needs exactly one of 'nginx:' or 'command:' (found: {found})",
                          "give the built-in nginx driver or your own switch/live commands, not both")

    @model_validator(mode="after")
    def _url(self) -> "Router":
        if self.check is not None and not self.check.startswith(("http://", "https://")):
            raise problem(f"{self.check!r} is not an http:// or https:// URL",
                          "write the full URL, e.g. http://127.0.0.1:{port}/", at=("check",))
        return self


class Colours(Section):
    """Blue/green: two stages of one app behind one router (deploykit switch, deploykit colours)."""

    shape: ClassVar = ("expected a mapping", "write 'colours: {stages: [blue, green], router: {...}}'")

    stages: TextList() = key("the two colours: two distinct stages of 'stages:'", "stages: [blue, green]")
    router: Router = key("the router in front of both colours", "router: {stage: edge, nginx: {upstream_file: "
                         "/etc/nginx/deploykit/library.conf, upstream: library}}")
    servers: Named(Servers, "mapping of colour to addresses", "colour") = key(
        "each colour's addresses as the router reaches them", "servers: {blue: ['10.0.0.5:8000']}",
        default_factory=dict, default_text="each app host of the colour as {hostname}:{port} (its port var)")

    @model_validator(mode="after")
    def _two(self) -> "Colours":
        if len(self.stages) != 2:
            raise problem(f"needs exactly two stages, got {len(self.stages)}", "write 'stages: [blue, green]'",
                          at=("stages",))
        if self.stages[0] == self.stages[1]:
            raise problem(f"{self.stages[0]!r} is listed twice", "name two different stages, e.g. [blue, green]",
                          at=("stages",))
        for name in self.servers:
            if name not in self.stages:
                raise problem(f"{name!r} is not one of the colours ({', '.join(self.stages)})",
                              "give servers only for the stages of 'colours.stages'", at=("servers", name))
        return self


class Proof(Section):
    """What the refresh keeps of the original values to prove none reached the target."""

    sample: ProofSample | None = key(
        "original values per masked column whose keyed digests are kept (in the controller's memory only) and "
        "looked for in the target afterwards: all, or a sample of at least 10000 (stated in the report)",
        "sample: all", None, default_text="all")


class Refresh(Section):
    """The anonymized refresh (deploykit refresh): masking rules, subsets, media, proof."""

    shape: ClassVar = ("expected a mapping", "write 'refresh: {key_env: DEPLOYKIT_REFRESH_KEY, rules: {...}}'")

    key_env: KeyEnv = key("the controller's environment variable holding the masking key (a secret: the same key "
                          "gives the same masked values, another key others; never written in a file)",
                          "key_env: DEPLOYKIT_REFRESH_KEY", "DEPLOYKIT_REFRESH_KEY")
    rules_file: LocalPath | None = key(
        "a YAML file holding more rules under 'rules:' (relative to the config file; 'deploykit refresh "
        "--init-rules' writes one); a key in both files is refused", "rules_file: refresh-rules.yaml", None)
    rules: Rules = key(
        "how each column is masked, by app_label.Model.field (resolved through the app's models) or table.column: "
        "keep, null, email, phone, format (same shape), ip, {fixed: TEXT}, {hash: {length: N}} (keyed, hex), "
        "{faker: PROVIDER} or {faker: {provider: P, locale: L}}, {json: {dotted.path: RULE}} (* = every item); "
        "a column that looks personal and has no rule stops the refresh",
        "rules: {auth.User.email: email, auth.User.password: {fixed: '!'}, shop_customer.phone: phone}",
        default_factory=dict)
    subset: Subset = key("copy only the rows of a table (or app_label.Model) that match an SQL condition; the rows "
                         "they refer to by foreign key come along", "subset: {shop_order: \"created > now() - "
                         "interval '30 days'\"}", default_factory=dict)
    media: Media = key("per media directory (relative to the media root; 'default' for the rest): keep, exclude, or "
                       "placeholder (a file of the same type and size class)",
                       "media: {avatars/: placeholder, exports/: exclude, default: keep}",
                       default_factory=lambda: {"default": "keep"}, default_text="{default: keep}")
    proof: Proof = key("the proof that no original value reached the target", "proof: {sample: all}",
                       default_factory=Proof)


SERVER_OPTION = re.compile(r"^[A-Za-z0-9_.:=/-]+(?: [A-Za-z0-9_.:=/-]+)*$")  # nginx words: no ';', braces, quotes


class BalancerNginx(NginxRouter):
    """The built-in nginx balancer: deploykit owns one upstream file listing every app server (drained: down)."""

    shape: ClassVar = ("expected a mapping", "write 'nginx: {upstream_file: /etc/nginx/deploykit/app.conf, "
                                             "upstream: app, access_log: /var/log/nginx/app-balancer.log}'")

    pid_file: HostDir = key("nginx's pid file on the router host (its 'pid' directive): a drain waits until the "
                            "master's workers from before the reload are gone", "pid_file: /run/nginx.pid",
                            layout.NGINX_PID)
    access_log: HostDir = key("the access log in deploykit's format (log_format deploykit: README, Rolling "
                              "releases) that errors() counts 5xx and upstream failures from",
                              "access_log: /var/log/nginx/library-balancer.log")
    server_options: Text | None = key("words after each server's address (nginx 'server' parameters)",
                                      "server_options: max_fails=1 fail_timeout=5s", None,
                                      default_text="none: nginx's defaults")
    directives: TextList() = key("lines inside the upstream block before the servers (without ';')",
                                 "directives: [keepalive 16, least_conn]", default_factory=list)

    @model_validator(mode="after")
    def _words(self) -> "BalancerNginx":  # the upstream's name: NginxRouter._one_word
        if self.server_options is not None and not SERVER_OPTION.match(self.server_options):
            raise problem(f"{self.server_options!r} is not a list of nginx server parameters",
                          "write words such as 'max_fails=1 fail_timeout=5s' (no ';', braces or quotes)",
                          at=("server_options",))
        for i, line in enumerate(self.directives):
            if not SERVER_OPTION.match(line):
                raise problem(f"{line!r} is not one nginx directive", "write e.g. 'keepalive 16' (no ';', braces "
                              "or quotes)", at=("directives", i))
        return self


class BalancerCommands(Section):
    """The command driver: the operator's own commands, run on the router host in its deploy_to."""

    shape: ClassVar = ("expected a mapping", "write 'command: {drain: ./bin/drain {server}, restore: "
                                             "./bin/restore {server}, errors: ./bin/errors {since}}'")

    drain: Text = key("takes {server} (a quoted word) out of the balancer; exits 0 only once no request is in "
                      "flight there", "drain: ./bin/drain {server}")
    restore: Text = key("puts {server} back in the balancer; exits 0 once it gets requests",
                        "restore: ./bin/restore {server}")
    errors: Text = key("read-only: prints JSON {requests: N, errors: M} of the answers since {since} (epoch "
                       "seconds on the router host)", "errors: ./bin/errors {since}")


class BalancerSpec(Section):
    """The load balancer in front of a stage's app hosts: a rolling release drains and restores each host."""

    shape: ClassVar = ("expected a mapping", "write 'balancer: {stage: edge, serves: prod, nginx: {...}}'")

    stage: Text = key("the stage whose hosts run the balancer (a stage of 'stages:')", "stage: edge")
    serves: Text = key("the stage whose app hosts it balances over", "serves: prod")
    nginx: BalancerNginx | None = key("the built-in nginx driver", "nginx: {upstream_file: /etc/nginx/deploykit/"
                                      "library.conf, upstream: library, access_log: /var/log/nginx/library.log}",
                                      None)
    command: BalancerCommands | None = key(
        "the command driver, for any other balancer",
        "command: {drain: './bin/drain {server}', restore: './bin/restore {server}', errors: './bin/errors "
        "{since}'}", None)
    server: Text = key("each app host's address as the balancer reaches it (a template rendered per host: the "
                       "app's bind address)", "server: '{hostname}:{port}'", "{hostname}:{port}")
    drain_timeout: Number() = key("seconds a drain may wait for the requests in flight on the server to end",
                                  "drain_timeout: 60", 60.0)

    @classmethod
    def check_keys(cls, data: dict) -> None:
        drivers = [k for k in ("nginx", "command") if data.get(k) is not None]
        if len(drivers) != 1:
            found = ", ".join(drivers) or "none"
            raise problem(f"needs exactly one of 'nginx:' or 'command:' (found: {found})",
                          "give the built-in nginx driver or your own drain/restore/errors commands, not both")


class RolloutSpec(Section):
    """A rolling release: batches of app hosts, each drained, switched, restarted, checked and put back."""

    shape: ClassVar = ("expected a mapping", "write 'rollout: {batches: [1, 25%, 100%], pause: 5s, max_fail: 0}'")

    batches: BatchSizes | None = key(
        "batch sizes (hosts or % of the stage's app hosts; the last repeats; the first batch is the canary); "
        "unset: every host at once, as a release always did", "batches: [1, 25%, 100%]", None,
        default_text="all at once")
    pause: Duration = key("the wait after each batch but the last, before its gate is judged", "pause: 5s", 0.0)
    max_fail: Whole(0) = key("hosts that may fail (each is put back on the previous release) before the whole "
                             "rollout is undone", "max_fail: 0", 0)
    max_error_rate: Rate = key("the gate: the share of answers through the balancer during a batch that may be "
                               "errors (5xx, or no answer); above it the rollout is undone", "max_error_rate: 1%", 0.0,
                               default_text="0%")
    min_requests: Whole(0) = key("the gate judges the error rate only when the balancer saw at least this many "
                                 "requests in the batch", "min_requests: 20", 1)
    workers: OneOf(*WORKER_POLICIES) = key(
        "with_batch: hosts with the worker role are rolled in the batches like the others (without a drain); "
        "around_migrate: their processes stop before the migrate, and after it they are switched and started "
        "before the first batch", "workers: around_migrate", "with_batch")
    balancer: BalancerSpec | None = key(
        "the balancer in front of the app hosts (drain, restore, error rate)",
        "balancer: {stage: edge, serves: prod, nginx: {upstream_file: /etc/nginx/deploykit/library.conf, "
        "upstream: library, access_log: /var/log/nginx/library.log}}", None,
        default_text="none: hosts are not drained")


class Document(Section):
    """deploykit.yaml as a whole."""

    shape: ClassVar = ("expected a mapping of settings at the top level",
                       "start the file with keys such as 'app:', 'deploy_to:', 'stages:'")

    app: Text | None = key("the application's name", "app: library", None,
                           default_text="the config file's directory name")
    deploy_to: HostDir = key("the app's directory on the hosts (releases/, shared/, backups/ inside)",
                             "deploy_to: /srv/library")
    python: HostPath = key("base interpreter on the hosts: creates each release's environment",
                           "python: /usr/bin/python3.11", "python3")
    repo: LocalPath = key("the git checkout whose tags are released (relative to the config file)", "repo: .", ".")
    stages: Named(Stage, "mapping of stage name to stage", "stage name",
                  empty=("no stage defined", "add at least one stage, e.g. 'prod: {hosts: [local]}'")) = key(
        "the inventory: each stage's hosts", "stages: {prod: {hosts: [deploy@10.0.0.5]}}")
    roles: TextList() = key("the operator's own host roles, beside app, primary, db, web and worker (steps, hooks "
                            "and processes can target them with 'on:')", "roles: [cron, search]",
                            default_factory=list)
    processes: Listed(Process, "list of processes") = key(
        "the processes a release restarts", "processes: [{name: web, supervisor: {program: library-web}}]",
        default_factory=list)
    databases: Named(Database, "mapping of alias to database", "database alias", SAFE_NAME,
                     "letters, digits, _ . -") = key(
        "Django database aliases backed up and restored with each release",
        "databases: {default: {engine: postgresql, name: library, owner: library}}", default_factory=dict)
    media: Listed(DataPath, "list of directories") = key(
        "media directories backed up with a per-file manifest", "media: [shared/media]", default_factory=list)
    paths: Listed(DataPath, "list of directories") = key(
        "extra directories backed up after media", "paths: [{name: uploads, path: /var/lib/app/uploads}]",
        default_factory=list)
    backup_order: BackupOrder = key("the order of a backup (and the reverse of a restore)",
                                    "backup_order: [databases, media, paths]",
                                    default_factory=lambda: list(BACKUP_KINDS))
    health: Listed(Health, "list of checks") = key(
        "checks after the switch; a failure recovers the previous release", "health: [{manage: check}]",
        default_factory=list)
    keep_releases: KeepReleases = key("releases kept on the hosts", "keep_releases: 5", 5)
    keep_backups: Whole(1) | None = key("backups kept on the hosts", "keep_backups: 5", None,
                                        default_text="keep_releases")
    ssh: SshSection = key("how the controller reaches the hosts", "ssh: {identity: ~/.ssh/id_ed25519}",
                          default_factory=SshSection)
    journal_dir: LocalPath = key("where the controller keeps each run's journal (relative to the config file)",
                                 "journal_dir: .deploykit/journal", ".deploykit/journal")
    keep_runs: Whole(1) = key("run journals the controller keeps: the newest of the runs that change something, "
                              "and as many read-only runs (status, check, dry-runs) counted apart",
                              "keep_runs: 50", 50)
    playbooks_dir: LocalPath | None = key("a directory of playbooks overriding or adding to the built-in ones",
                                          "playbooks_dir: playbooks", None)
    install: TextList() = key("extra commands in the new release, after its environment exists",
                              "install: [\"npm ci\"]", default_factory=list)
    hooks: Hooks = key("commands before or after any phase", "hooks: {after: {verify: [./bin/warm-cache]}}",
                       default_factory=Hooks)
    settings_module: ModulePath | None = key("DJANGO_SETTINGS_MODULE of the app", "settings_module: libsite.settings",
                                             None, default_text="manage.py's own")
    shared: Shared = key("paths linked from shared/ into every release", "shared: [.env, media]",
                         default_factory=list)
    collectstatic: Flag = key("run collectstatic into each new release", "collectstatic: true", True)
    min_free_mb: Whole(0) = key("free disk space (MB) a host needs before a release", "min_free_mb: 100", 100)
    snapshots: Flag = key("PostgreSQL template clones before migrating, for an instant revert", "snapshots: true",
                          True)
    snapshot_budget: Number(0.0, inclusive=True) = key(
        "seconds the writers may stay stopped for the snapshots, estimated from the size and the last clone's "
        "speed; over it no snapshot is taken (writers keep running) and the verified dump is the way back",
        "snapshot_budget: 2", 2.0)
    venv: Annotated[VenvSpec | None, BeforeValidator(_venv)] = key(
        "each release's own Python environment ('venv: false': the shared interpreter, installs not undone)",
        "venv: {requirements: requirements.txt}", default_factory=VenvSpec)
    freeze: FreezeSpec = key("how writes are frozen while data is copied (blue/green transfer)",
                             "freeze: {mode: maintenance, retry_after: 5, drain_timeout: 30}",
                             default_factory=FreezeSpec)
    lock: LockSpec = key("the stage lock's liveness", "lock: {heartbeat: 10, stale_after: 120}",
                         default_factory=LockSpec)
    colours: Colours | None = key("blue/green: two stages of one app behind one router (README: Blue/green)",
                                  "colours: {stages: [blue, green], router: {stage: edge, nginx: {upstream_file: "
                                  "/etc/nginx/deploykit/library.conf, upstream: library}}}", None)
    refresh: Refresh | None = key("the anonymized refresh (deploykit refresh): production's data without its people",
                                  "refresh: {key_env: DEPLOYKIT_REFRESH_KEY, rules_file: refresh-rules.yaml}", None)
    rollout: RolloutSpec = key("a stage of many app hosts released in batches behind a balancer (README: Rolling "
                               "releases)", "rollout: {batches: [1, 25%, 100%], pause: 5s, max_fail: 0}",
                               default_factory=RolloutSpec, default_text="all at once")
