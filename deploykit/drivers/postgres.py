"""PostgreSQL: directory-format dumps on the host, restore on a clean slate.

All tools run on the host (bulk data never crosses the controller), as the
admin role, with the password in a passfile named by PGPASSFILE.
"""
from __future__ import annotations

import posixpath
import re

from ..errors import HostCommandFailed
from ..host import q
from .base import Driver, prefixed


_CACHE: dict = {}
ACL_PRIVS = {"C": "CREATE", "c": "CONNECT", "T": "TEMPORARY"}


def acl_statements(db: str, acl: list[str]) -> list[str]:
    """GRANT/REVOKE statements that rebuild a database's datacl (aclitem text form)."""
    if not acl:
        return []  # NULL datacl: the defaults CREATE DATABASE gives
    out = [f"REVOKE ALL ON DATABASE {ident(db)} FROM PUBLIC;"]
    for item in acl:
        grantee, _, rest = item.partition("=")
        privs = rest.split("/", 1)[0]
        names = [ACL_PRIVS[c] for c in privs if c in ACL_PRIVS]
        if names:
            who = "PUBLIC" if grantee == "" else ident(grantee.strip('"'))
            out.append(f"GRANT {', '.join(names)} ON DATABASE {ident(db)} TO {who};")
    return out


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


class PostgresDriver(Driver):
    kind = "databases"
    engine = "postgresql"

    @property
    def item_name(self) -> str:
        return f"db-{self.spec.alias}"

    # -- plumbing ------------------------------------------------------------
    def conn_args(self) -> str:
        s = self.spec
        parts = ["--no-password"]
        if s.host:
            parts.append(f"-h {q(s.host)}")
        if s.port:
            parts.append(f"-p {int(s.port)}")
        if s.admin_user:
            parts.append(f"-U {q(s.admin_user)}")
        return " ".join(parts)

    def psql(self, ctx, host, sql: str, db: str = "postgres", check: bool = True):
        """Run SQL (sent on stdin) with ON_ERROR_STOP; returns the command result."""
        return host.run(f"psql {self.conn_args()} -X -q -A -t -v ON_ERROR_STOP=1 -d {q(db)}",
                        stdin=sql, env=ctx.db_env(host, self.spec), check=check)

    def jobs(self, host) -> int:
        if self.spec.jobs:
            return self.spec.jobs
        res = host.run("nproc", check=False)
        return max(1, int(res.stdout.strip())) if res.ok and res.stdout.strip().isdigit() else 2

    def exists(self, ctx, host) -> bool:
        out = self.psql(ctx, host, f"SELECT 1 FROM pg_database WHERE datname = {literal(self.spec.name)};").stdout
        return out.strip() == "1"

    def owner_report(self, ctx, host) -> dict:
        """Database owner and any object in it not owned by the owner role."""
        out = self.psql(ctx, host, f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = {literal(self.spec.name)};")
        owner = out.stdout.strip() or None
        wrong = []
        if owner:
            res = self.psql(ctx, host, (
                "SELECT c.relkind::text || ' ' || n.nspname || '.' || c.relname || ' ' || pg_get_userbyid(c.relowner) "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relkind IN ('r','S','v','m','p') AND n.nspname NOT IN ('pg_catalog','information_schema') "
                "AND n.nspname NOT LIKE 'pg_toast%' "
                f"AND pg_get_userbyid(c.relowner) <> {literal(self.spec.owner)} ORDER BY 1;"), db=self.spec.name)
            wrong = [line for line in res.stdout.splitlines() if line.strip()]
        return {"database": self.spec.name, "owner": owner, "expected": self.spec.owner, "objects_not_owned": wrong}

    def versions(self, ctx, host) -> dict:
        server = self.psql(ctx, host, "SHOW server_version_num;").stdout.strip()
        dump = host.run("pg_dump --version", check=False).stdout.strip()
        return {"server": self.psql(ctx, host, "SHOW server_version;").stdout.strip(),
                "server_num": int(server) if server.isdigit() else 0, "pg_dump": dump}

    def compression(self, host) -> str:
        """The fastest compression this pg_dump offers: lz4 (16+), else gzip level 1."""
        key = f"pg_dump_compress:{host.name}"
        if key not in _CACHE:
            out = host.run("pg_dump --version", check=False).stdout
            major = int(m.group(1)) if (m := re.search(r"(\d+)(?:\.\d+)?", out)) else 0
            _CACHE[key] = "--compress=lz4" if major >= 16 else "--compress=1"
        return _CACHE[key]

    def database_settings(self, ctx, host, name: str | None = None) -> dict:
        """What a plain CREATE DATABASE would lose: settings, grants, extensions."""
        lit = literal(name or self.spec.name)
        settings = self.psql(ctx, host, "SELECT unnest(s.setconfig) FROM pg_db_role_setting s JOIN pg_database d "
                                        f"ON d.oid = s.setdatabase WHERE d.datname = {lit} AND s.setrole = 0;").stdout
        acl = self.psql(ctx, host, f"SELECT coalesce(array_to_string(datacl, ' '), '') FROM pg_database WHERE datname = {lit};").stdout
        ext = "" if name else self.psql(ctx, host, "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1;",
                                         db=self.spec.name).stdout
        return {"settings": [x for x in settings.splitlines() if x.strip()], "acl": acl.strip().split(),
                "extensions": [x for x in ext.splitlines() if x.strip()]}

    def _dump(self, ctx, host, dest: str) -> None:
        host.run(f"rm -rf {q(dest)} && pg_dump {self.conn_args()} -Fd -j {self.jobs(host)} {self.compression(host)} "
                 f"-f {q(dest)} {q(self.spec.name)}", env=ctx.db_env(host, self.spec))

    # -- driver interface ----------------------------------------------------
    def backup(self, ctx, host, backup_dir):
        dest = posixpath.join(backup_dir, self.item_name)
        item = {"name": self.item_name, "kind": self.kind, "engine": self.engine, "alias": self.spec.alias,
                "database": self.spec.name, "files": {}}
        if not self.exists(ctx, host):
            item["absent"] = True
            return item
        self._dump(ctx, host, dest)
        tree = host.helper("files", "hash_tree", {"dir": dest})["files"]
        item["files"] = prefixed(self.item_name, tree)
        item["meta"] = {"owner": self.owner_report(ctx, host)["owner"], **self.versions(ctx, host), "format": "directory",
                        "compression": self.compression(host), **self.database_settings(ctx, host)}
        return item

    def verify(self, ctx, host, backup_dir, item):
        if item.get("absent"):
            return []
        res = host.run(f"pg_restore --list {q(posixpath.join(backup_dir, self.item_name))} > /dev/null", check=False)
        return [] if res.ok else [f"{self.item_name}: pg_restore --list failed: {res.tail(1)}"]

    def pg_restore(self, ctx, host, src: str, dbname: str, check: bool = True):
        """pg_restore -j N as the owner role, on an empty database.

        Extensions (and their comments) are left out of the list: the admin
        created them with the database, and only their owner may comment them.
        """
        listing = "$(mktemp)"
        return host.run(
            f"list={listing} && pg_restore --list {q(src)} "
            "| grep -v -E '^[0-9]+; [0-9]+ [0-9]+ (EXTENSION - |COMMENT - EXTENSION )' > \"$list\" && "
            f"pg_restore {self.conn_args()} -j {self.jobs(host)} --no-owner --role={q(self.spec.owner)} "
            f"--exit-on-error -L \"$list\" -d {q(dbname)} {q(src)}; rc=$?; rm -f \"$list\"; exit $rc",
            env=ctx.db_env(host, self.spec), check=check)

    def keep_failed_state(self, ctx, host, dest_dir):
        if not self.exists(ctx, host):
            return f"{self.item_name}: database {self.spec.name} does not exist"
        dest = posixpath.join(dest_dir, f"{self.item_name}.failed")
        host.run(f"mkdir -p -m 700 {q(dest_dir)}")
        self._dump(ctx, host, dest)
        return f"{self.item_name} -> {dest}"

    def terminate_sessions(self, ctx, host) -> None:
        self.psql(ctx, host, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             f"WHERE datname = {literal(self.spec.name)} AND pid <> pg_backend_pid();")

    def recreate(self, ctx, host, meta: dict | None = None) -> None:
        """Drop and create the database empty, owned by its owner role, with the
        database-level settings, grants and extensions it had at backup time."""
        name, owner = ident(self.spec.name), ident(self.spec.owner)
        self.terminate_sessions(ctx, host)
        self.psql(ctx, host, f"DROP DATABASE IF EXISTS {name};")
        self.psql(ctx, host, f"CREATE DATABASE {name} OWNER {owner} TEMPLATE template0;")
        meta = meta or {}
        sql = [f"ALTER DATABASE {name} SET {k} = {literal(v)};"
               for k, _, v in (x.partition("=") for x in meta.get("settings", []))]
        sql += acl_statements(self.spec.name, meta.get("acl", []))
        if sql:
            self.psql(ctx, host, "\n".join(sql))
        for ext in meta.get("extensions", []):  # created by the admin, before pg_restore runs as the owner
            self.psql(ctx, host, f"CREATE EXTENSION IF NOT EXISTS {ident(ext)};", db=self.spec.name)

    def restore(self, ctx, host, backup_dir, item, aside_dir):
        self.recreate(ctx, host, item.get("meta"))
        if item.get("absent"):
            return f"{self.item_name}: did not exist at backup time; recreated empty"
        src = posixpath.join(backup_dir, self.item_name)
        res = self.pg_restore(ctx, host, src, self.spec.name, check=False)
        if not res.ok:
            raise HostCommandFailed(f"{host.name}: pg_restore of {self.spec.name} failed: {res.tail()}",
                                    hint=f"the backup stays at {src}; fix the cause and run the restore again")
        report = self.owner_report(ctx, host)
        if report["owner"] != self.spec.owner or report["objects_not_owned"]:
            raise HostCommandFailed(f"{host.name}: after restore, ownership is wrong: {report}",
                                    hint="check that the admin role is a member of the owner role")
        return f"{self.item_name}: recreated owned by {self.spec.owner} and restored"

    def _diff(self, ctx, host, other: str) -> dict:
        conn = {"host": self.spec.host, "port": self.spec.port, "user": self.spec.admin_user}
        return host.helper("pgrows", "diff", {"conn": conn, "a": self.spec.name, "b": other},
                           env=ctx.db_env(host, self.spec))["tables"]

    def rows_lost_vs(self, ctx, host, snap: str) -> dict:
        """Rows live now that swapping the snapshot in would lose."""
        self.psql(ctx, host, f"ALTER DATABASE {ident(snap)} WITH ALLOW_CONNECTIONS true;")
        try:
            return self._diff(ctx, host, snap)
        finally:
            self.psql(ctx, host, f"ALTER DATABASE {ident(snap)} WITH ALLOW_CONNECTIONS false;", check=False)

    def rows_lost(self, ctx, host, backup_dir, item):
        """Restore the backup into a scratch database and compare row by row on the host."""
        if not self.exists(ctx, host):
            return {}
        scratch = f"{self.spec.name}__dk_compare"
        self.psql(ctx, host, f"DROP DATABASE IF EXISTS {ident(scratch)};")
        self.psql(ctx, host, f"CREATE DATABASE {ident(scratch)} OWNER {ident(self.spec.owner)} TEMPLATE template0;")
        try:
            if not item.get("absent"):
                for ext in (item.get("meta") or {}).get("extensions", []):
                    self.psql(ctx, host, f"CREATE EXTENSION IF NOT EXISTS {ident(ext)};", db=scratch)
                self.pg_restore(ctx, host, posixpath.join(backup_dir, self.item_name), scratch)
            return self._diff(ctx, host, scratch)
        finally:
            self.psql(ctx, host, f"DROP DATABASE IF EXISTS {ident(scratch)};", check=False)

    # -- snapshots: template clones, reverted by a rename swap -------------------
    def snapshot_name(self, release_id: str) -> str:
        return f"{self.spec.name[:30]}__dk_{release_id}"

    def aside_name(self, label: str) -> str:
        return f"{self.spec.name[:30]}__dkold_{label}"

    def snapshot_blocker(self, ctx, host) -> str | None:
        """Why a snapshot cannot be taken here (None: it can)."""
        user = literal(self.spec.admin_user or "")
        ok = self.psql(ctx, host, f"SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = {user};").stdout.strip()
        if ok != "t":
            return f"role {self.spec.admin_user} lacks the CREATEDB privilege"
        size = int(self.psql(ctx, host, f"SELECT pg_database_size({literal(self.spec.name)});").stdout.strip() or 0)
        data_dir = self.psql(ctx, host, "SELECT current_setting('data_directory', true);", check=False).stdout.strip()
        if data_dir and host.exists(data_dir):
            free = host.helper("files", "disk_free", {"path": data_dir})["free_bytes"]
            if free < size * 1.1 + (64 << 20):
                return f"only {free >> 20} MB free for a {size >> 20} MB clone in {data_dir}"
        return None

    def snapshot(self, ctx, host, release_id: str) -> str:
        """Clone the (quiet) database into a snapshot; FILE_COPY on PostgreSQL 15+."""
        snap = self.snapshot_name(release_id)
        strategy = " STRATEGY FILE_COPY" if self.versions(ctx, host)["server_num"] >= 150000 else ""
        self.psql(ctx, host, f"DROP DATABASE IF EXISTS {ident(snap)};")
        self.terminate_sessions(ctx, host)
        self.psql(ctx, host, f"CREATE DATABASE {ident(snap)} TEMPLATE {ident(self.spec.name)} "
                             f"OWNER {ident(self.spec.owner)}{strategy};")
        self.copy_db_level(ctx, host, self.spec.name, snap)
        self.psql(ctx, host, f"ALTER DATABASE {ident(snap)} WITH ALLOW_CONNECTIONS false;")
        return snap

    def copy_db_level(self, ctx, host, src: str, dest: str) -> None:
        """A clone does not carry database-level settings and grants: copy them over."""
        meta = self.database_settings(ctx, host, src)
        sql = [f"ALTER DATABASE {ident(dest)} SET {k} = {literal(v)};"
               for k, _, v in (x.partition("=") for x in meta.get("settings", []))]
        sql += acl_statements(dest, meta.get("acl", []))
        if sql:
            self.psql(ctx, host, "\n".join(sql))

    def snapshot_exists(self, ctx, host, snap: str) -> bool:
        return self.psql(ctx, host, f"SELECT 1 FROM pg_database WHERE datname = {literal(snap)};").stdout.strip() == "1"

    def revert(self, ctx, host, snap: str, label: str) -> str:
        """Swap the snapshot in by renaming, in one transaction; the live database is kept aside."""
        aside = self.aside_name(label)
        name = self.spec.name
        self.psql(ctx, host, f"DROP DATABASE IF EXISTS {ident(aside)};\n"
                             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             f"WHERE datname IN ({literal(name)}, {literal(snap)}) AND pid <> pg_backend_pid();\n"
                             "BEGIN;\n"
                             f"ALTER DATABASE {ident(name)} RENAME TO {ident(aside)};\n"
                             f"ALTER DATABASE {ident(snap)} RENAME TO {ident(name)};\n"
                             f"ALTER DATABASE {ident(name)} WITH ALLOW_CONNECTIONS true;\n"
                             f"ALTER DATABASE {ident(aside)} WITH ALLOW_CONNECTIONS false;\n"
                             "COMMIT;")
        return aside

    def clone_from(self, ctx, host, snap: str, label: str) -> str:
        """A new live copy of a snapshot that is kept (the live database goes aside)."""
        aside = self.aside_name(label)
        strategy = " STRATEGY FILE_COPY" if self.versions(ctx, host)["server_num"] >= 150000 else ""
        self.psql(ctx, host, f"DROP DATABASE IF EXISTS {ident(aside)};")
        self.terminate_sessions(ctx, host)
        self.psql(ctx, host, f"ALTER DATABASE {ident(self.spec.name)} RENAME TO {ident(aside)};")
        self.psql(ctx, host, f"ALTER DATABASE {ident(snap)} WITH ALLOW_CONNECTIONS true;")
        try:
            self.psql(ctx, host, f"CREATE DATABASE {ident(self.spec.name)} TEMPLATE {ident(snap)} "
                                 f"OWNER {ident(self.spec.owner)}{strategy};")
            self.copy_db_level(ctx, host, snap, self.spec.name)
        except Exception:
            self.psql(ctx, host, f"ALTER DATABASE {ident(aside)} RENAME TO {ident(self.spec.name)};", check=False)
            raise
        finally:
            self.psql(ctx, host, f"ALTER DATABASE {ident(snap)} WITH ALLOW_CONNECTIONS false;", check=False)
        return aside

    def own_databases(self, ctx, host) -> list[str]:
        """Snapshots and set-aside copies deploykit made of this database."""
        prefix = self.spec.name[:30].replace("_", "\\_")
        out = self.psql(ctx, host, f"SELECT datname FROM pg_database WHERE datname LIKE '{prefix}\\_\\_dk%' ORDER BY 1;")
        return [x for x in out.stdout.splitlines() if x.strip()]

    def drop(self, ctx, host, name: str) -> None:
        self.psql(ctx, host, f"DROP DATABASE IF EXISTS {ident(name)} WITH (FORCE);")
