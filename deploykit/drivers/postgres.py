"""PostgreSQL: snapshot-consistent dumps on the host; restores built beside the live database, then swapped in.

All tools run on the host (bulk data never crosses the controller), as the
admin role, with the password on the command's stdin (PGPASSWORD in its
environment only). Every name deploykit makes (snapshot, restore, set-aside,
scratch) is derived by `names.derived_name` and recorded in the registry
before the database exists; SQL text comes from `sqltext` (psycopg.sql).
"""
from __future__ import annotations

import posixpath
import re

from .. import names
from ..errors import DeployError, DryRunWrite, HostCommandFailed, Interrupted
from ..transport.host import q
from ..sqltext import ident, literal, set_database_setting
from .base import BASIC, Driver, prefixed
from .psql import MAINTENANCE_DB, run_sql

ACL_PRIVS = {"C": "CREATE", "c": "CONNECT", "T": "TEMPORARY"}
SEP = "\x1f"

# rows of every table (not of extension members), counted inside one transaction's snapshot
COUNT_SQL = (
    "SELECT n.nspname || '.' || c.relname, (xpath('/row/c/text()', query_to_xml(format("
    "'SELECT count(*) AS c FROM %I.%I', n.nspname, c.relname), false, true, '')))[1]::text "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' "
    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
    "AND d.deptype = 'e') ORDER BY 1;")

# objects not owned by the owner role: tables, sequences, views, functions, types, schemas
NOT_OWNED_SQL = """
WITH ext AS (SELECT classid, objid FROM pg_depend WHERE deptype = 'e')
SELECT kind || ' ' || name || ' ' || owner FROM (
  SELECT c.relkind::text AS kind, n.nspname || '.' || c.relname AS name, pg_get_userbyid(c.relowner) AS owner
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r','S','v','m','p','f') AND n.nspname NOT IN ('pg_catalog','information_schema')
    AND n.nspname NOT LIKE 'pg\\_toast%' AND (c.tableoid, c.oid) NOT IN (SELECT * FROM ext)
  UNION ALL
  SELECT 'function', n.nspname || '.' || p.proname, pg_get_userbyid(p.proowner)
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname NOT IN ('pg_catalog','information_schema') AND (p.tableoid, p.oid) NOT IN (SELECT * FROM ext)
  UNION ALL
  SELECT 'type', n.nspname || '.' || t.typname, pg_get_userbyid(t.typowner)
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE t.typtype IN ('c','d','e','r','m') AND n.nspname NOT IN ('pg_catalog','information_schema')
    AND (t.typtype <> 'c' OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
    AND (t.tableoid, t.oid) NOT IN (SELECT * FROM ext)
  UNION ALL
  SELECT 'schema', n.nspname, pg_get_userbyid(n.nspowner)
  FROM pg_namespace n
  WHERE n.nspname NOT IN ('pg_catalog','information_schema') AND n.nspname NOT LIKE 'pg\\_%'
    AND (n.tableoid, n.oid) NOT IN (SELECT * FROM ext)
) o WHERE owner NOT IN ({owner}, 'pg_database_owner') ORDER BY 1;
"""


def acl_statements(db: str, acl: list[str]) -> list[str]:
    """GRANT/REVOKE statements that rebuild a database's datacl (aclitem text form)."""
    if not acl:
        return []  # NULL datacl: the defaults CREATE DATABASE gives
    out = [f"REVOKE ALL ON DATABASE {ident(db)} FROM PUBLIC;"]
    for item in acl:
        grantee, _, rest = item.partition("=")
        privs = rest.split("/", 1)[0]
        privs_names = [ACL_PRIVS[c] for c in privs if c in ACL_PRIVS]
        if privs_names:
            grantee = grantee.strip('"').replace('""', '"')
            who = "PUBLIC" if grantee == "" else ident(grantee)
            out.append(f"GRANT {', '.join(privs_names)} ON DATABASE {ident(db)} TO {who};")
    return out


def major(text: str) -> int:
    """The major version in a version string ("pg_dump (PostgreSQL) 16.2" -> 16)."""
    m = re.search(r"(\d+)(?:\.\d+)?", text or "")
    return int(m.group(1)) if m else 0


class PostgresDriver(Driver):
    kind = "databases"
    engine = "postgresql"
    capabilities = BASIC | {"snapshot", "row_diff"}
    tools = ("psql", "pg_dump", "pg_restore")

    @property
    def item_name(self) -> str:
        return f"db-{self.spec.alias}"

    @property
    def label(self) -> str:
        return self.spec.name

    # -- what the app's Django uses -------------------------------------------------
    def django_uses_it(self, host, seen, resolved):
        engine = seen.get("ENGINE") or ""
        same = ("postgresql" in engine or "postgis" in engine) and seen.get("NAME") == self.spec.name
        if same and self.spec.host:
            same = (seen.get("HOST") or "") == self.spec.host
        if same and self.spec.port:
            same = int(seen.get("PORT") or 5432) == int(self.spec.port)
        return same

    def django_expected(self, host, resolved):
        s = self.spec
        where = f" on {s.host or 'local socket'}:{s.port or 'default port'}" if (s.host or s.port) else ""
        return f"postgresql {s.name!r}{where}"

    # -- read-only looks ---------------------------------------------------------
    def backup_bytes(self, ctx, host) -> int:
        """About half the database's size: a compressed directory dump."""
        if not self.exists(ctx, host):
            return 0
        return int(self.value(ctx, host, f"SELECT pg_database_size({literal(self.spec.name)});") or 0) // 2

    def preflight(self, ctx, host, live):
        """The server answers the admin role, pg_dump is not older than it, the owner role and the database exist."""
        try:
            server = self.versions(ctx, host)
        except DeployError as exc:
            return [f"{self.spec.alias}: cannot reach PostgreSQL as {self.spec.admin_user}: {exc}"]
        problems = []
        if major(server["pg_dump"]) < server["server_num"] // 10000:
            problems.append(f"{self.spec.alias}: {server['pg_dump'] or 'pg_dump'} is older than the server "
                            f"({server['server']}): its dumps would fail")
        if not self.role_exists(ctx, host, self.spec.owner):
            problems.append(f"{self.spec.alias}: the owner role {self.spec.owner!r} does not exist")
        if live and not self.exists(ctx, host):
            problems.append(f"{self.spec.alias}: database {self.spec.name} does not exist while release "
                            f"{live['id']} is live")
        return problems

    def restore_notes(self, ctx, host):
        """The database's owner and the objects others own, journaled before its data is replaced."""
        if not self.exists(ctx, host):
            return []
        rep = self.owner_report(ctx, host)
        ctx.journal.record("owners", host=host, report=rep)
        return [f"{rep['database']} owned by {rep['owner']} (expected {rep['expected']}), "
                f"{len(rep['objects_not_owned'])} object(s) owned by others"]

    # -- plumbing ------------------------------------------------------------
    def conn_argv(self) -> list[str]:
        """The libpq tools' connection arguments (as the admin role, never asking a password), as argv words."""
        s = self.spec
        argv = ["--no-password"]
        if s.host:
            argv += ["-h", s.host]
        if s.port:
            argv += ["-p", str(int(s.port))]
        if s.admin_user:
            argv += ["-U", s.admin_user]
        return argv

    def conn_args(self) -> str:
        return " ".join(q(a) for a in self.conn_argv())

    def conn(self) -> dict:
        return {"host": self.spec.host, "port": self.spec.port, "user": self.spec.admin_user}

    def access(self, ctx, host, read_only: bool = False) -> dict:
        """Keyword arguments for host.run of a libpq tool: the password on stdin, never argv or a file."""
        env = {"PGAPPNAME": f"deploykit {ctx.run_id}"[:63]}
        if self.spec.passfile:
            env["PGPASSFILE"] = host.render(self.spec.passfile)
        password = self.spec.password()
        kw = {"env": env, "secrets": {"PGPASSWORD": password} if password else None}
        if read_only:  # PostgreSQL itself refuses any write in these sessions
            kw["env"] = {**kw["env"], "PGOPTIONS": "-c default_transaction_read_only=on"}
        return kw

    def psql(self, ctx, host, sql: str, db: str = "postgres", check: bool = True, read_only: bool = False,
             track: str | None = None, always: bool = False):
        """Run SQL with ON_ERROR_STOP; returns the command result.

        Through the run's psql session on the host (drivers/psql.py); a tracked
        statement (long work a later run must be able to find), one that
        must run after an interrupt, and a host that keeps no sessions (a
        stand-in in unit tests) get a psql of their own, the SQL on stdin.
        """
        if track or always or not getattr(host, "keeps_sessions", False):
            return host.run(f"psql {self.conn_args()} -X -q -A -t -F $'\\x1f' -v ON_ERROR_STOP=1 -d {q(db)}",
                            stdin=sql, check=check, read_only=read_only, track=track, always=always,
                            **self.access(ctx, host, read_only))
        if host.read_only and not read_only:
            raise DryRunWrite(f"{host.name}: refused SQL {sql[:100]!r} during a dry-run",
                              hint="this is a bug in a step that claims to be read-only; please report it")
        if host.cancelled.is_set():
            raise Interrupted(f"{host.name}: interrupted before SQL {sql[:80]!r}")
        command = f"psql {self.conn_args()} -X -q -A -t -F $'\\x1f' -v ON_ERROR_STOP=1 -d {MAINTENANCE_DB}"
        key = ("psql", self.spec.host, self.spec.port, self.spec.admin_user, read_only)
        result = run_sql(host, key, command, self.access(ctx, host, read_only), sql, db)
        return host.judge(result, check=check)

    def query(self, ctx, host, sql: str, db: str = "postgres") -> list[list[str]]:
        """Rows of a read-only query (columns split)."""
        out = self.psql(ctx, host, sql, db=db, read_only=True).stdout
        return [line.split(SEP) for line in out.splitlines() if line.strip()]

    def value(self, ctx, host, sql: str, db: str = "postgres") -> str:
        rows = self.query(ctx, host, sql, db)
        return rows[0][0] if rows else ""

    def jobs(self, host) -> int:
        if self.spec.jobs:
            return self.spec.jobs
        res = host.run("nproc", check=False, read_only=True)
        return max(1, int(res.stdout.strip())) if res.ok and res.stdout.strip().isdigit() else 2

    def database_exists(self, ctx, host, name: str) -> bool:
        return self.value(ctx, host, f"SELECT 1 FROM pg_database WHERE datname = {literal(name)};") == "1"

    def exists(self, ctx, host) -> bool:
        return self.database_exists(ctx, host, self.spec.name)

    def role_exists(self, ctx, host, role: str) -> bool:
        return self.value(ctx, host, f"SELECT 1 FROM pg_roles WHERE rolname = {literal(role)};") == "1"

    def owner_report(self, ctx, host, db: str | None = None) -> dict:
        """Database owner and every object in it not owned by the owner role."""
        db = db or self.spec.name
        owner = self.value(ctx, host, f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {literal(db)};")
        wrong = []
        if owner:
            wrong = [r[0] for r in self.query(ctx, host, NOT_OWNED_SQL.format(owner=literal(self.spec.owner)), db=db)]
        return {"database": db, "owner": owner or None, "expected": self.spec.owner, "objects_not_owned": wrong}

    def row_counts(self, ctx, host, db: str) -> dict[str, int]:
        return {r[0]: int(r[1]) for r in self.query(ctx, host, COUNT_SQL, db=db)}

    def versions(self, ctx, host) -> dict:
        """The server's version and the host's pg_dump, read once per run (preflight, backup, snapshot ask)."""
        s = self.spec

        def read():
            num = self.value(ctx, host, "SHOW server_version_num;")
            return {"server": self.value(ctx, host, "SHOW server_version;"),
                    "server_num": int(num) if num.isdigit() else 0, "pg_dump": self.pg_dump(host)}
        return host.fact(("postgres server", s.host, s.port, s.admin_user), read)

    @staticmethod
    def pg_dump(host) -> str:
        """`pg_dump --version` on the host (read once per run)."""
        return host.fact("pg_dump --version", lambda: host.run("pg_dump --version", check=False,
                                                              read_only=True).stdout.strip())

    def compression(self, host) -> str:
        """The fastest compression this pg_dump offers: lz4 (16+), else gzip level 1."""
        return "--compress=lz4" if major(self.pg_dump(host)) >= 16 else "--compress=1"

    def database_settings(self, ctx, host, name: str | None = None) -> dict:
        """What a plain CREATE DATABASE would lose: settings, grants, extensions, encoding and locale."""
        lit = literal(name or self.spec.name)
        settings = [r[0] for r in self.query(ctx, host, "SELECT unnest(s.setconfig) FROM pg_db_role_setting s "
                                                        f"JOIN pg_database d ON d.oid = s.setdatabase "
                                                        f"WHERE d.datname = {lit} AND s.setrole = 0;")]
        row = self.query(ctx, host, "SELECT coalesce(array_to_string(datacl, ' '), ''), pg_encoding_to_char(encoding), "
                                    f"datcollate, datctype FROM pg_database WHERE datname = {lit};")
        acl, encoding, collate, ctype = (row[0] + ["", "", "", ""])[:4] if row else ("", "", "", "")
        ext = [] if name else [r[0] for r in self.query(
            ctx, host, "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1;", db=self.spec.name)]
        return {"settings": settings, "acl": acl.split(), "extensions": ext,
                "encoding": encoding, "collate": collate, "ctype": ctype}

    def db_level_sql(self, db: str, meta: dict) -> list[str]:
        """Settings (lists stay lists) and grants, as they were."""
        return [set_database_setting(db, entry) for entry in meta.get("settings", [])] + \
            acl_statements(db, meta.get("acl", []))

    # -- backup ----------------------------------------------------------------
    def backup(self, ctx, host, backup_dir):
        dest = posixpath.join(backup_dir, self.item_name)
        item = {"name": self.item_name, "kind": self.kind, "engine": self.engine, "alias": self.spec.alias,
                "database": self.spec.name, "files": {}}
        if not self.exists(ctx, host):
            if ctx.previous:
                raise DeployError(f"{host.name}: database {self.spec.name} does not exist while release "
                                  f"{ctx.previous['id']} is live: a backup of it would restore nothing",
                                  hint="find out where the live data is (databases.{alias}.name) before anything "
                                       "else; 'deploykit check' compares it with what Django uses")
            item["absent"] = True
            return item
        doc = host.helper("pgdump", "dump", {"conn": self.conn(), "dbname": self.spec.name, "dest": dest,
                                             "jobs": self.jobs(host), "compress": self.compression(host),
                                             "count_sql": COUNT_SQL},
                          track=f"pg_dump {self.spec.name}", **self.access(ctx, host))
        if ctx.previous and ctx.previous.get("migrations") and self.spec.alias == "default" \
                and not any(t.endswith(".django_migrations") for t in doc["counts"]):
            raise DeployError(f"{host.name}: database {self.spec.name} has no django_migrations table while release "
                              f"{ctx.previous['id']} is live with its migrations applied: its data is not where "
                              "deploykit expects it, and a backup of it would restore nothing",
                              hint="find out what happened to it before anything else (the last journal in "
                                   ".deploykit/journal/ says what ran)")
        tree = host.helper("files", "hash_tree", {"dir": dest})["files"]
        item["files"] = prefixed(self.item_name, tree)
        item["meta"] = {"owner": self.owner_report(ctx, host)["owner"], **self.versions(ctx, host),
                        "format": "directory", "compression": self.compression(host),
                        **self.database_settings(ctx, host), "row_counts": doc["counts"]}
        return item

    def verify(self, ctx, host, backup_dir, item):
        if item.get("absent"):
            return []
        res = host.run(f"pg_restore --list {q(posixpath.join(backup_dir, self.item_name))} > /dev/null",
                       check=False, read_only=True)
        return [] if res.ok else [f"{self.item_name}: pg_restore --list failed: {res.tail(1)}"]

    def pg_restore(self, ctx, host, src: str, dbname: str, check: bool = True, section: str | None = None):
        """pg_restore -j N as the owner role, on an empty database (`section`: only pre-data, data or post-data).

        Extensions (and their comments) are left out of the list: the admin
        created them with the database, and only their owner may comment them.
        """
        part = f"--section={q(section)} " if section else ""
        return host.run(
            f"list=$(mktemp) && pg_restore --list {q(src)} "
            "| grep -v -E '^[0-9]+; [0-9]+ [0-9]+ (EXTENSION - |COMMENT - EXTENSION )' > \"$list\" && "
            f"pg_restore {self.conn_args()} -j {self.jobs(host)} --no-owner --role={q(self.spec.owner)} {part}"
            f"--exit-on-error -L \"$list\" -d {q(dbname)} {q(src)}; rc=$?; rm -f \"$list\"; exit $rc",
            check=check, track=f"pg_restore {dbname}", **self.access(ctx, host))

    def pg_restore_items(self, ctx, host, src: str, dbname: str, lines: list[str], check: bool = True,
                         jobs: int | None = None):
        """pg_restore -j N of exactly these lines of the archive's table of contents (pg_restore --list), as
        the owner role; the list travels on stdin into a temporary file (no argument grows with it)."""
        return host.run(
            f"list=$(mktemp) && cat > \"$list\" && "
            f"pg_restore {self.conn_args()} -j {int(jobs or self.jobs(host))} --no-owner --role={q(self.spec.owner)} "
            f"--exit-on-error -L \"$list\" -d {q(dbname)} {q(src)}; rc=$?; rm -f \"$list\"; exit $rc",
            stdin="".join(line + "\n" for line in lines), check=check, track=f"pg_restore {dbname}",
            **self.access(ctx, host))

    # -- derived databases ---------------------------------------------------------
    def derived(self, ctx, kind: str, label: str) -> str:
        return names.derived_name(kind, ctx.config.app, self.spec.name, label)

    def claim(self, ctx, host, kind: str, label: str, **meta) -> str:
        """A derived name, recorded before the database exists.

        A leftover under that name from an unfinished attempt is dropped, except
        a set-aside copy: that holds data that was live, and is never replaced.
        """
        name = self.derived(ctx, kind, label)
        names.record(ctx, name, kind, engine=self.engine, alias=self.spec.alias, database=self.spec.name,
                     label=label, **meta)
        if self.database_exists(ctx, host, name):
            if kind == "aside":
                raise DeployError(f"{host.name}: a set-aside copy {name} of {self.spec.name} already exists",
                                  hint="it holds data that was live; look at it before anything else")
            self.drop(ctx, host, name)
        return name

    def create_empty(self, ctx, host, name: str, meta: dict) -> None:
        """CREATE DATABASE owned by the owner, with the encoding, locale, settings and grants it had."""
        opts = f" OWNER {ident(self.spec.owner)} TEMPLATE template0"
        if meta.get("encoding"):
            opts += f" ENCODING {literal(meta['encoding'])}"
        if meta.get("collate") and meta.get("ctype"):
            opts += f" LC_COLLATE {literal(meta['collate'])} LC_CTYPE {literal(meta['ctype'])}"
        self.psql(ctx, host, f"CREATE DATABASE {ident(name)}{opts};")
        sql = self.db_level_sql(name, meta)
        if sql:
            self.psql(ctx, host, "\n".join(sql))
        for ext in meta.get("extensions", []):  # created by the admin, before pg_restore runs as the owner
            self.psql(ctx, host, f"CREATE EXTENSION IF NOT EXISTS {ident(ext)};", db=name)

    def check_restored(self, ctx, host, name: str, item: dict) -> None:
        """Owner of every object, and the row count of every table against the manifest."""
        report = self.owner_report(ctx, host, name)
        if report["owner"] != self.spec.owner or report["objects_not_owned"]:
            shown = "; ".join(report["objects_not_owned"][:3])
            raise HostCommandFailed(f"{host.name}: the restored copy of {self.spec.name} is owned by {report['owner']}"
                                    f"{', and ' + shown if shown else ''}: not swapped in",
                                    hint="check that the admin role is a member of the owner role")
        expected = (item.get("meta") or {}).get("row_counts")
        if expected is not None:
            got = self.row_counts(ctx, host, name)
            diff = sorted(t for t in set(expected) | set(got) if expected.get(t) != got.get(t))
            if diff:
                shown = ", ".join(f"{t}: {got.get(t)} rows, backup {expected.get(t)}" for t in diff[:3])
                raise HostCommandFailed(f"{host.name}: the restored copy of {self.spec.name} differs from the "
                                        f"backup ({shown}): not swapped in", hint="the backup may be damaged")

    # -- restore: build beside, then swap -----------------------------------------
    def build(self, ctx, host, backup_dir, item, label):
        """Restore the backup into a new database beside the live one and check it; the live one is untouched."""
        meta = item.get("meta") or {}
        if not self.role_exists(ctx, host, self.spec.owner):
            raise DeployError(f"{host.name}: the owner role {self.spec.owner!r} of {self.spec.name} does not exist",
                              hint=f"fix databases.{self.spec.alias}.owner in deploykit.yaml (the live database is untouched)")
        name = self.claim(ctx, host, "restore", label)
        built = {"engine": self.engine, "alias": self.spec.alias, "name": name, "label": label}
        try:
            self.create_empty(ctx, host, name, meta)
            if not item.get("absent"):
                src = posixpath.join(backup_dir, self.item_name)
                res = self.pg_restore(ctx, host, src, name, check=False)
                if not res.ok:
                    raise HostCommandFailed(
                        f"{host.name}: pg_restore of {self.spec.name} into {name} failed: {res.tail()}",
                        hint=f"the live database is untouched; the backup stays at {src}")
                self.check_restored(ctx, host, name, item)
        except Exception:
            # never handed to swap or discard: the copy that failed is dropped here, not left behind
            try:
                self.drop(ctx, host, name, always=True)
            except Exception:  # noqa: BLE001 - the first error is the one to report; the name stays recorded
                pass
            raise
        return built

    def build_from_snapshot(self, ctx, host, snap: str, label: str) -> dict:
        """Nothing to build: the snapshot (taken with the processes stopped) is swapped in as it is."""
        return {"engine": self.engine, "alias": self.spec.alias, "name": snap, "label": label, "snapshot": True}

    def swap(self, ctx, host, built, label) -> str:
        """Rename the live database aside and the built one to the live name, in one transaction.

        The hot path of a revert: one query to see what exists, the set-aside
        name recorded before it exists, one transaction, then the built copy's
        own name forgotten (it is the live database now). A run that dies
        between the two leaves a registry name with no database: the next
        pruning forgets it.
        """
        new, live = built["name"], self.spec.name
        aside = self.derived(ctx, "aside", built.get("label") or label)
        present = {r[0] for r in self.query(ctx, host, "SELECT datname FROM pg_database WHERE datname IN "
                                                       f"({literal(new)}, {literal(aside)}, {literal(live)});")}
        if new not in present:
            if aside in present:  # an interrupted run got this far
                names.forget(ctx, new)
                return f"{self.item_name}: already swapped in (the replaced database is kept as {aside})"
            raise DeployError(f"{host.name}: the copy {new} to swap in for {live} is gone",
                              hint="run the restore again")
        if aside in present:
            raise DeployError(f"{host.name}: a set-aside copy {aside} of {live} already exists",
                              hint="it holds data that was live; look at it before anything else")
        has_live = live in present
        if has_live:
            names.record(ctx, aside, "aside", engine=self.engine, alias=self.spec.alias, database=live,
                         label=built.get("label") or label, replaced=live,
                         release=ctx.release_id or (ctx.previous or {}).get("id"))
        sql = ["SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
               f"WHERE datname IN ({literal(live)}, {literal(new)}) AND pid <> pg_backend_pid();", "BEGIN;"]
        if has_live:
            sql.append(f"ALTER DATABASE {ident(live)} RENAME TO {ident(aside)};")
        sql += [f"ALTER DATABASE {ident(new)} RENAME TO {ident(live)};",
                f"ALTER DATABASE {ident(live)} WITH ALLOW_CONNECTIONS true;"]
        if has_live:
            sql.append(f"ALTER DATABASE {ident(aside)} WITH ALLOW_CONNECTIONS false;")
        sql.append("COMMIT;")
        self.psql(ctx, host, "\n".join(sql))
        names.forget(ctx, new)
        if not has_live:
            return f"{self.item_name}: {live} created from {new}"
        return f"{self.item_name}: swapped in by rename (the replaced database is kept as {aside})"

    def discard(self, ctx, host, built) -> str:
        """Drop a built copy that was never swapped in (a snapshot is kept: it is still the way back)."""
        if built.get("snapshot"):
            return f"{self.item_name}: snapshot {built['name']} kept"
        self.drop(ctx, host, built["name"])
        return f"{self.item_name}: dropped the unfinished copy {built['name']}"

    # -- the rows a restore would lose -------------------------------------------
    def _diff(self, ctx, host, other: str) -> dict:
        return host.helper("pgrows", "diff", {"conn": self.conn(), "a": self.spec.name, "b": other},
                           **self.access(ctx, host))["tables"]

    def rows_lost_vs(self, ctx, host, snap: str) -> dict:
        """Rows live now that swapping the snapshot in would lose."""
        self.psql(ctx, host, f"ALTER DATABASE {ident(snap)} WITH ALLOW_CONNECTIONS true;")
        try:
            return self._diff(ctx, host, snap)
        finally:
            self.psql(ctx, host, f"ALTER DATABASE {ident(snap)} WITH ALLOW_CONNECTIONS false;", check=False,
                      always=True)

    def rows_lost(self, ctx, host, backup_dir, item):
        """Restore the backup into a scratch database (a derived, recorded name) and compare row by row."""
        if not self.exists(ctx, host):
            return {}
        scratch = self.claim(ctx, host, "scratch", ctx.run_id)
        try:
            self.create_empty(ctx, host, scratch, {"extensions": (item.get("meta") or {}).get("extensions", [])})
            if not item.get("absent"):
                self.pg_restore(ctx, host, posixpath.join(backup_dir, self.item_name), scratch)
            return self._diff(ctx, host, scratch)
        finally:
            self.drop(ctx, host, scratch, always=True)

    # -- snapshots: template clones, swapped in by rename --------------------------
    def snapshot_blocker(self, ctx, host) -> str | None:
        """Why a snapshot cannot be taken here (None: it can)."""
        user = literal(self.spec.admin_user or "")
        if self.value(ctx, host, f"SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = {user};") != "t":
            return f"role {self.spec.admin_user} lacks the CREATEDB privilege"
        size = self.snapshot_bytes(ctx, host)
        data_dir = self.psql(ctx, host, "SELECT current_setting('data_directory', true);", check=False,
                             read_only=True).stdout.strip()
        if data_dir and host.exists(data_dir):
            free = host.helper("files", "disk_free", {"path": data_dir})["free_bytes"]
            if free < size * 1.1 + (64 << 20):
                return f"only {free >> 20} MB free for a {size >> 20} MB clone in {data_dir}"
        return None

    def snapshot_bytes(self, ctx, host) -> int:
        return int(self.value(ctx, host, f"SELECT pg_database_size({literal(self.spec.name)});") or 0)

    def snapshot_name(self, ctx, release_id: str) -> str:
        return self.derived(ctx, "snapshot", release_id)

    def snapshot(self, ctx, host, release_id: str) -> str:
        """Clone the (quiet) database into a snapshot; FILE_COPY on PostgreSQL 15+."""
        snap = self.claim(ctx, host, "snapshot", release_id, release=release_id)
        strategy = " STRATEGY FILE_COPY" if self.versions(ctx, host)["server_num"] >= 150000 else ""
        self.terminate_sessions(ctx, host)
        self.psql(ctx, host, f"CREATE DATABASE {ident(snap)} TEMPLATE {ident(self.spec.name)} "
                             f"OWNER {ident(self.spec.owner)}{strategy};", track=f"snapshot {self.spec.name}")
        self.copy_db_level(ctx, host, self.spec.name, snap)
        self.psql(ctx, host, f"ALTER DATABASE {ident(snap)} WITH ALLOW_CONNECTIONS false;")
        return snap

    def terminate_sessions(self, ctx, host) -> None:
        self.psql(ctx, host, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             f"WHERE datname = {literal(self.spec.name)} AND pid <> pg_backend_pid();")

    def copy_db_level(self, ctx, host, src: str, dest: str) -> None:
        """A clone does not carry database-level settings and grants: copy them over."""
        sql = self.db_level_sql(dest, self.database_settings(ctx, host, src))
        if sql:
            self.psql(ctx, host, "\n".join(sql))

    def snapshot_exists(self, ctx, host, snap: str) -> bool:
        return self.database_exists(ctx, host, snap)

    def held_copies(self, ctx, host) -> list[dict]:
        """The snapshots and set-aside copies of this database the registry lists, with their size, in one
        read-only query (a name the registry lists that is gone is left out: the next prune forgets it)."""
        from ..state.releases import Registry

        derived = {n: m for n, m in Registry.load(host).derived.items()
                   if m.get("engine") == self.engine and m.get("alias") == self.spec.alias
                   and m.get("kind") in ("snapshot", "aside")}
        if not derived:
            return []
        listed = ", ".join(literal(n) for n in sorted(derived))
        sizes = {r[0]: int(r[1] or 0) for r in self.query(
            ctx, host, f"SELECT datname, pg_database_size(datname) FROM pg_database WHERE datname IN ({listed});")}
        held = [{"name": n, "kind": m.get("kind"), "release": m.get("release"), "created": m.get("created"),
                 "bytes": sizes[n]} for n, m in derived.items() if n in sizes]
        return sorted(held, key=lambda c: (c.get("created") or "", c["name"]))

    def prune_derived(self, ctx, host, kept: set[str]) -> list[str]:
        """Drop the databases derived from this one for releases not in `kept` (only names the registry lists).

        Names the registry lists that no longer exist (swapped in as the live
        name, or dropped) are forgotten first; a restore or scratch copy of
        this very run is left to the run.
        """
        from ..state.releases import Registry

        derived = {n: m for n, m in Registry.load(host).derived.items()
                   if m.get("engine") == self.engine and m.get("alias") == self.spec.alias}
        present = {r[0] for r in self.query(ctx, host, "SELECT datname FROM pg_database;")}
        gone = [n for n, m in derived.items() if n not in present and m.get("run") != ctx.run_id]
        if gone:
            names.forget(ctx, *gone)
        dropped = []
        for name, meta in sorted(derived.items()):
            if name in gone or meta.get("app") not in (None, ctx.config.app):
                continue
            if meta.get("kind") in ("snapshot", "aside"):
                if meta.get("release") in kept:
                    continue
            elif meta.get("run") == ctx.run_id:
                continue
            self.drop(ctx, host, name)
            dropped.append(name)
        return dropped

    def drop(self, ctx, host, name: str, always: bool = False) -> None:
        """Drop a database deploykit derived; refuses any name the registry does not list."""
        if name == self.spec.name or name not in names.recorded(ctx):
            raise DeployError(f"{host.name}: refusing to drop {name!r}: not a name deploykit recorded",
                              hint="this is a bug; nothing was dropped")
        self.psql(ctx, host, f"DROP DATABASE IF EXISTS {ident(name)} WITH (FORCE);", always=always)
        names.forget(ctx, name)
