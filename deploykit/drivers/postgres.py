"""PostgreSQL: directory-format dumps on the host, restore on a clean slate.

All tools run on the host (bulk data never crosses the controller), as the
admin role, with the password in a passfile named by PGPASSFILE.
"""
from __future__ import annotations

import posixpath

from ..errors import HostCommandFailed
from ..host import q
from .base import Driver, prefixed


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
        server = self.psql(ctx, host, "SHOW server_version;").stdout.strip()
        dump = host.run("pg_dump --version", check=False).stdout.strip()
        return {"server": server, "pg_dump": dump}

    def _dump(self, ctx, host, dest: str) -> None:
        host.run(f"rm -rf {q(dest)} && pg_dump {self.conn_args()} -Fd -j {self.jobs(host)} -f {q(dest)} {q(self.spec.name)}",
                 env=ctx.db_env(host, self.spec))

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
        item["meta"] = {"owner": self.owner_report(ctx, host)["owner"], **self.versions(ctx, host), "format": "directory"}
        return item

    def verify(self, ctx, host, backup_dir, item):
        if item.get("absent"):
            return []
        res = host.run(f"pg_restore --list {q(posixpath.join(backup_dir, self.item_name))} > /dev/null", check=False)
        return [] if res.ok else [f"{self.item_name}: pg_restore --list failed: {res.tail(1)}"]

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

    def recreate(self, ctx, host) -> None:
        """Drop and create the database empty, owned by its owner role."""
        name, owner = ident(self.spec.name), ident(self.spec.owner)
        self.terminate_sessions(ctx, host)
        self.psql(ctx, host, f"DROP DATABASE IF EXISTS {name};")
        self.psql(ctx, host, f"CREATE DATABASE {name} OWNER {owner} TEMPLATE template0;")

    def restore(self, ctx, host, backup_dir, item, aside_dir):
        self.recreate(ctx, host)
        if item.get("absent"):
            return f"{self.item_name}: did not exist at backup time; recreated empty"
        src = posixpath.join(backup_dir, self.item_name)
        res = host.run(f"pg_restore {self.conn_args()} -j {self.jobs(host)} --no-owner --role={q(self.spec.owner)} "
                       f"--exit-on-error -d {q(self.spec.name)} {q(src)}", env=ctx.db_env(host, self.spec), check=False)
        if not res.ok:
            raise HostCommandFailed(f"{host.name}: pg_restore of {self.spec.name} failed: {res.tail()}",
                                    hint=f"the backup stays at {src}; fix the cause and run the restore again")
        report = self.owner_report(ctx, host)
        if report["owner"] != self.spec.owner or report["objects_not_owned"]:
            raise HostCommandFailed(f"{host.name}: after restore, ownership is wrong: {report}",
                                    hint="check that the admin role is a member of the owner role")
        return f"{self.item_name}: recreated owned by {self.spec.owner} and restored"

    def rows_lost(self, ctx, host, backup_dir, item):
        """Restore the backup into a scratch database and compare row by row on the host."""
        if not self.exists(ctx, host):
            return {}
        scratch = f"{self.spec.name}__dk_compare"
        self.psql(ctx, host, f"DROP DATABASE IF EXISTS {ident(scratch)};")
        self.psql(ctx, host, f"CREATE DATABASE {ident(scratch)} OWNER {ident(self.spec.owner)} TEMPLATE template0;")
        try:
            if not item.get("absent"):
                src = posixpath.join(backup_dir, self.item_name)
                host.run(f"pg_restore {self.conn_args()} -j {self.jobs(host)} --no-owner --role={q(self.spec.owner)} "
                         f"--exit-on-error -d {q(scratch)} {q(src)}", env=ctx.db_env(host, self.spec))
            conn = {"host": self.spec.host, "port": self.spec.port, "user": self.spec.admin_user}
            doc = host.helper("pgrows", "diff", {"conn": conn, "a": self.spec.name, "b": scratch},
                              env=ctx.db_env(host, self.spec))
            return doc["tables"]
        finally:
            self.psql(ctx, host, f"DROP DATABASE IF EXISTS {ident(scratch)};", check=False)
