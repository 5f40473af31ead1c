"""Drivers with the command runner patched (django-dbbackup's style): a fake Host records
every command and helper call and answers from a script, so each driver's engine-specific
work (credentials, tools, preflight, snapshots) is checked without a server."""
from __future__ import annotations

import ast
import pathlib
import posixpath
import threading


import os
from dataclasses import dataclass

from deploykit import drivers
from deploykit.drivers.base import BASIC, Driver
from deploykit.drivers.files import FilesDriver
from deploykit.drivers.postgres import PostgresDriver, major
from deploykit.drivers.sqlite import SQLiteDriver
from deploykit.errors import DeployError
from deploykit.transport.host import CommandResult

ROOT = pathlib.Path(__file__).resolve().parent.parent / "deploykit"


@dataclass
class DatabaseSpec:
    """What a database driver reads of its deploykit.yaml entry (stand-in: the config models may change)."""

    alias: str
    engine: str
    name: str
    owner: str | None = None
    host: str | None = None
    port: int | None = None
    admin_user: str | None = None
    password_env: str | None = None
    passfile: str | None = None
    jobs: int | None = None

    def password(self):
        return os.environ.get(self.password_env) if self.password_env else None


@dataclass
class PathSpec:
    name: str
    path: str
    kind: str


class FakeHost:
    """Records commands and helper calls; `sql` maps a fragment of psql's stdin to its output."""

    name = "fake"
    deploy_to = "/srv/app"

    def __init__(self, sql=None, files=(), helpers=None, commands=None):
        self.sql = sql or {}
        self.files = set(files)
        self.helpers = helpers or {}
        self.commands = commands or {}
        self.runs: list[dict] = []
        self.calls: list[tuple] = []
        self.facts: dict = {}

    def render(self, text):
        return text

    def path(self, *parts):
        return posixpath.join(self.deploy_to, *parts)

    def exists(self, path):
        return path in self.files

    def run(self, command, *, stdin=None, env=None, secrets=None, check=True, read_only=False, **kw):
        self.runs.append({"command": command, "stdin": stdin, "env": env, "secrets": secrets,
                          "read_only": read_only})
        out = ""
        if command.startswith("psql"):
            out = next((v for k, v in self.sql.items() if k in (stdin or "")), "")
        else:
            out = next((v for k, v in self.commands.items() if command.startswith(k)), "")
        return CommandResult(command, 0, out, "", 0.0)

    def helper(self, module, action, args=None, **kw):
        self.calls.append((module, action, args, kw))
        return self.helpers[(module, action)](args)

    def read_json(self, path):  # Host.read_json: through the files helper
        doc = self.helper("files", "read_json", {"path": path})
        return doc["data"] if doc.get("exists") else None

    def fact(self, key, read):  # Host.fact: read once per run
        if key not in self.facts:
            self.facts[key] = read()
        return self.facts[key]


class FakeJournal:
    def __init__(self):
        self.events = []

    def record(self, event, **fields):
        self.events.append((event, fields))


class FakeCtx:
    run_id = "20260101T000000Z-release-1-abcd"

    def __init__(self):
        self.journal = FakeJournal()
        self.lock = threading.RLock()


def pg(**kw) -> PostgresDriver:
    spec = dict(alias="default", engine="postgresql", name="shop", owner="shop", admin_user="admin", port=5433)
    spec.update(kw)
    return PostgresDriver(DatabaseSpec(**spec))


def test_every_driver_declares_the_basic_capabilities_and_only_postgres_snapshots():
    pgd = pg()
    lite = SQLiteDriver(DatabaseSpec(alias="default", engine="sqlite", name="db.sqlite3"))
    media = FilesDriver(PathSpec(name="media", path="shared/media", kind="media"))
    for d in (pgd, lite, media):
        assert BASIC <= d.capabilities
    assert pgd.can("snapshot") and pgd.can("row_diff")
    assert not lite.can("snapshot") and lite.can("row_diff")
    assert not media.can("snapshot") and not media.can("row_diff")


def test_engines_registered_once_by_their_own_name():
    assert drivers.ENGINES == {"postgresql": PostgresDriver, "sqlite": SQLiteDriver}
    for engine, cls in drivers.ENGINES.items():
        assert cls.engine == engine


def test_tools_come_from_the_drivers_each_once():
    class Cfg:
        databases = [DatabaseSpec(alias="default", engine="postgresql", name="a"),
                     DatabaseSpec(alias="other", engine="postgresql", name="b"),
                     DatabaseSpec(alias="lite", engine="sqlite", name="c.sqlite3")]
        data_paths = []
        backup_order = ["databases", "media", "paths"]

    assert drivers.tools_for(Cfg) == ["psql", "pg_dump", "pg_restore"]
    assert [d.item_name for d in drivers.capable(Cfg, "snapshot")] == ["db-default", "db-other"]
    Cfg.databases = Cfg.databases[2:]
    assert drivers.tools_for(Cfg) == [] and drivers.capable(Cfg, "snapshot") == []


def test_postgres_credentials_go_on_stdin_and_in_the_environment_never_argv(monkeypatch):
    monkeypatch.setenv("DK_TEST_PW", "s3cret")
    host, ctx = FakeHost(sql={"pg_database WHERE datname": "1\n"}), FakeCtx()
    d = pg(password_env="DK_TEST_PW", passfile="/home/app/.pgpass")
    assert d.exists(ctx, host)
    run = host.runs[-1]
    assert "s3cret" not in run["command"] and "s3cret" not in (run["stdin"] or "")
    assert run["secrets"] == {"PGPASSWORD": "s3cret"}
    assert run["env"]["PGPASSFILE"] == "/home/app/.pgpass"
    assert run["env"]["PGAPPNAME"] == f"deploykit {ctx.run_id}"[:63]
    # a read-only query is refused by PostgreSQL itself if it tried to write
    assert "default_transaction_read_only=on" in run["env"]["PGOPTIONS"]
    assert run["read_only"] is True
    assert "-U admin" in run["command"] and "-p 5433" in run["command"] and "--no-password" in run["command"]


def test_postgres_without_a_password_sends_no_secret():
    host, ctx = FakeHost(), FakeCtx()
    pg().exists(ctx, host)
    assert host.runs[-1]["secrets"] is None and "PGPASSFILE" not in host.runs[-1]["env"]


def _versions(server_num="160002", dump="pg_dump (PostgreSQL) 16.2"):
    return {"server_version_num": server_num + "\n", "server_version;": server_num[:2] + ".2\n"}, \
        {"pg_dump --version": dump + "\n"}


def test_postgres_preflight_finds_an_old_pg_dump_a_missing_role_and_a_missing_database():
    sql, cmds = _versions(dump="pg_dump (PostgreSQL) 14.9")
    host, ctx = FakeHost(sql=sql, commands=cmds), FakeCtx()
    problems = pg().preflight(ctx, host, {"id": "r1"})
    assert any("older than the server" in p for p in problems)
    assert any("owner role 'shop' does not exist" in p for p in problems)
    assert any("database shop does not exist while release r1 is live" in p for p in problems)


def test_postgres_preflight_passes_when_all_is_there_and_no_release_is_live():
    sql, cmds = _versions()
    sql.update({"pg_roles WHERE rolname": "1\n"})
    host, ctx = FakeHost(sql=sql, commands=cmds), FakeCtx()
    assert pg().preflight(ctx, host, None) == []
    # a release is live and its database is missing: refused
    sql.update({"FROM pg_database WHERE datname": ""})
    assert pg().preflight(ctx, host, {"id": "r1"}) != []


def test_postgres_preflight_says_when_the_server_does_not_answer():
    class Down(FakeHost):
        def run(self, command, **kw):
            raise DeployError("connection refused")

    problems = pg().preflight(FakeCtx(), Down(), None)
    assert len(problems) == 1 and "cannot reach PostgreSQL as admin" in problems[0]


def test_postgres_backup_bytes_is_half_the_database_and_zero_when_absent():
    host = FakeHost(sql={"pg_database WHERE datname": "1\n", "pg_database_size": "1000\n"})
    assert pg().backup_bytes(FakeCtx(), host) == 500
    assert pg().backup_bytes(FakeCtx(), FakeHost()) == 0


def test_usable_snapshot_only_when_it_still_exists_and_never_for_a_driver_without_snapshots():
    ctx = FakeCtx()
    host = FakeHost(sql={"datname = 'dks_1'": "1\n"})
    assert pg().usable_snapshot(ctx, host, {"default": "dks_1"}) == "dks_1"
    assert pg().usable_snapshot(ctx, host, {"default": "dks_gone"}) is None
    assert pg().usable_snapshot(ctx, host, {"other": "dks_1"}) is None
    assert pg().usable_snapshot(ctx, host, None) is None
    lite = SQLiteDriver(DatabaseSpec(alias="default", engine="sqlite", name="db.sqlite3"))
    assert lite.usable_snapshot(ctx, host, {"default": "dks_1"}) is None


def test_snapshot_blocker_without_createdb_and_without_room():
    ctx = FakeCtx()
    host = FakeHost(sql={"rolsuper OR rolcreatedb": "f\n"})
    assert "lacks the CREATEDB privilege" in pg().snapshot_blocker(ctx, host)
    host = FakeHost(sql={"rolsuper OR rolcreatedb": "t\n", "pg_database_size": str(1 << 30) + "\n",
                         "data_directory": "/var/lib/pg\n"}, files={"/var/lib/pg"},
                    helpers={("files", "disk_free"): lambda a: {"free_bytes": 100 << 20}})
    assert "only 100 MB free for a 1024 MB clone in /var/lib/pg" == pg().snapshot_blocker(ctx, host)
    host.helpers[("files", "disk_free")] = lambda a: {"free_bytes": 4 << 30}
    assert pg().snapshot_blocker(ctx, host) is None


def test_restore_notes_report_and_journal_the_owners():
    ctx = FakeCtx()
    host = FakeHost(sql={"pg_get_userbyid(datdba)": "shop\n", "kind || ' ' || name": "r public.t postgres\n",
                         "SELECT 1 FROM pg_database": "1\n"})
    notes = pg().restore_notes(ctx, host)
    assert notes == ["shop owned by shop (expected shop), 1 object(s) owned by others"]
    assert ctx.journal.events[0][0] == "owners"
    assert pg().restore_notes(FakeCtx(), FakeHost()) == []  # no database: nothing to say


def test_files_and_sqlite_preflight_and_size_through_the_host():
    ctx = FakeCtx()
    helpers = {("files", "dir_size"): lambda a: {"bytes": 42}}
    lite = SQLiteDriver(DatabaseSpec(alias="default", engine="sqlite", name="db.sqlite3"))
    media = FilesDriver(PathSpec(name="media", path="/srv/media", kind="media"))
    host = FakeHost(files={"/srv/app/db.sqlite3", "/srv/media"}, helpers=helpers)
    assert lite.preflight(ctx, host, {"id": "r1"}) == [] and media.preflight(ctx, host, {"id": "r1"}) == []
    assert lite.backup_bytes(ctx, host) == 42 and media.backup_bytes(ctx, host) == 42
    assert host.calls[0][2] == {"path": "/srv/app/db.sqlite3"}
    empty = FakeHost(helpers=helpers)
    assert "does not exist while release r1 is live" in lite.preflight(ctx, empty, {"id": "r1"})[0]
    assert media.preflight(ctx, empty, {"id": "r1"}) == ["media-media: /srv/media does not exist"]
    assert lite.preflight(ctx, empty, None) == [] and lite.backup_bytes(ctx, empty) == 0
    assert not empty.calls  # nothing to measure: no helper started


def test_major_version_parsing():
    assert major("pg_dump (PostgreSQL) 16.2 (Debian 16.2-1)") == 16
    assert major("9.6.24") == 9
    assert major("") == 0


def test_a_new_driver_needs_its_module_and_one_registration_line(monkeypatch):
    """The engine map is the only place outside a driver's module that names it."""
    class Fake(Driver):
        kind, engine = "databases", "fakedb"
        tools = ("fakedump",)

        @property
        def item_name(self):
            return f"db-{self.spec.alias}"

    monkeypatch.setitem(drivers.ENGINES, "fakedb", Fake)

    class Cfg:
        databases = [DatabaseSpec(alias="default", engine="fakedb", name="x")]
        data_paths = []
        backup_order = ["databases"]

    assert [type(d) for d in drivers.drivers_for(Cfg)] == [Fake]
    assert drivers.tools_for(Cfg) == ["fakedump"]
    assert drivers.capable(Cfg, "snapshot") == []


def _isinstance_on_drivers(tree) -> list[int]:
    concrete = {"PostgresDriver", "SQLiteDriver", "FilesDriver"}
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" and len(node.args) == 2:
            names = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            if names & concrete:
                hits.append(node.lineno)
    return hits


def test_no_isinstance_on_a_concrete_driver_outside_drivers():
    found = []
    for path in ROOT.rglob("*.py"):
        if "drivers" in path.relative_to(ROOT).parts:
            continue
        text = path.read_text()
        found += [f"{path}:{n}" for n in _isinstance_on_drivers(ast.parse(text))]
        for name in ("PostgresDriver", "SQLiteDriver", "FilesDriver"):
            if name in text:
                found.append(f"{path}: names {name}")
    assert found == []


def test_each_database_driver_says_whether_django_uses_it():
    host = FakeHost()
    pgd = pg(host="10.0.0.5", port=5432, name="library")
    seen = {"ENGINE": "django.db.backends.postgresql", "NAME": "library", "HOST": "10.0.0.5", "PORT": ""}
    assert pgd.django_uses_it(host, seen, {}) and pgd.django_paths(host) == []
    assert not pgd.django_uses_it(host, {**seen, "PORT": "5433"}, {})
    assert not pgd.django_uses_it(host, {**seen, "ENGINE": "django.db.backends.sqlite3"}, {})
    assert pgd.django_expected(host, {}) == "postgresql 'library' on 10.0.0.5:5432"
    assert pg().django_expected(host, {}) == "postgresql 'shop' on local socket:5433"
    lite = SQLiteDriver(DatabaseSpec(alias="default", engine="sqlite", name="shared/db.sqlite3"))
    assert lite.django_paths(host) == ["/srv/app/shared/db.sqlite3"]
    resolved = {"/srv/app/shared/db.sqlite3": "/data/db.sqlite3"}  # a symlink, resolved by the app's Python
    assert lite.django_uses_it(host, {"ENGINE": "django.db.backends.sqlite3", "NAME": "/data/db.sqlite3"}, resolved)
    assert not lite.django_uses_it(host, {"ENGINE": "django.db.backends.sqlite3", "NAME": "/other"}, resolved)
    assert lite.django_expected(host, resolved) == "sqlite '/data/db.sqlite3'"


def test_postgres_held_copies_lists_the_recorded_snapshots_and_asides_still_there_with_sizes():
    """Read-only: names from the registry (this database's only), sizes from one query; gone names left out."""
    derived = {
        "dks_old": {"kind": "snapshot", "engine": "postgresql", "alias": "default", "release": "r1",
                    "created": "2026-01-01T00:00:00Z"},
        "dks_new": {"kind": "snapshot", "engine": "postgresql", "alias": "default", "release": "r2",
                    "created": "2026-01-02T00:00:00Z"},
        "dko_aside": {"kind": "aside", "engine": "postgresql", "alias": "default", "release": "r3",
                      "created": "2026-01-03T00:00:00Z"},
        "dks_gone": {"kind": "snapshot", "engine": "postgresql", "alias": "default", "release": "r0",
                     "created": "2025-12-31T00:00:00Z"},
        "dkr_build": {"kind": "restore", "engine": "postgresql", "alias": "default"},
        "dks_other": {"kind": "snapshot", "engine": "postgresql", "alias": "other", "release": "r2"},
    }
    registry = {("files", "read_json"): lambda a: {"exists": True, "data": {"releases": [], "derived": derived}}}
    sizes = f"dks_old{chr(0x1f)}1000\ndks_new{chr(0x1f)}2000\ndko_aside{chr(0x1f)}3000\n"
    host, ctx = FakeHost(sql={"pg_database_size(datname)": sizes}, helpers=registry), FakeCtx()
    held = pg().held_copies(ctx, host)
    assert [(c["name"], c["kind"], c["release"], c["bytes"]) for c in held] == [
        ("dks_old", "snapshot", "r1", 1000), ("dks_new", "snapshot", "r2", 2000), ("dko_aside", "aside", "r3", 3000)]
    (query,) = [r for r in host.runs if "pg_database_size(datname)" in (r["stdin"] or "")]
    assert query["read_only"] is True and "default_transaction_read_only=on" in query["env"]["PGOPTIONS"]
    for name in ("dks_old", "dks_new", "dko_aside", "dks_gone"):
        assert f"'{name}'" in query["stdin"]
    assert "dkr_build" not in query["stdin"] and "dks_other" not in query["stdin"]
    # nothing recorded: no query at all; a driver without snapshots holds none
    empty = FakeHost(helpers={("files", "read_json"): lambda a: {"exists": False}})
    assert pg().held_copies(ctx, empty) == [] and not empty.runs
    lite = SQLiteDriver(DatabaseSpec(alias="default", engine="sqlite", name="db.sqlite3"))
    assert lite.held_copies(ctx, host) == []
