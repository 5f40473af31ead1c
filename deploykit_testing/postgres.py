"""A throw-away real PostgreSQL cluster for tests.

    pg = PgCluster.start()
    pg.create_role("app_owner", "s3cret")
    pg.create_database("app", owner="app_owner")
    with pg.connect("app", "app_owner", "s3cret") as conn: ...
    pg.stop()

The server listens on 127.0.0.1 on a free port with scram-sha-256 password
authentication for every connection (TCP and its own Unix socket). The
superuser is ``dkadmin`` with a random password. ``initdb`` refuses to run as
root, so when the tests run as root every server-side binary runs as an
unprivileged user (``nobody``, or ``$DEPLOYKIT_PG_USER``) and the cluster
lives in a directory under /tmp that user can reach. Passwords never appear
in argv: libpq tools get PGPASSWORD in their environment, initdb a pwfile.
"""

from __future__ import annotations

import glob
import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ._proc import RigError, alive, at_exit, children_of, forget_at_exit, is_root, wait_gone
from .ports import free_port

__all__ = ["PgCluster", "PgUnavailable", "find_pg_bin", "write_passfile"]

ADMIN_USER = "dkadmin"


class PgUnavailable(RigError):
    """PostgreSQL server binaries are missing or unusable."""


def _version_key(path: str) -> tuple:
    name = Path(path).parent.name  # /usr/lib/postgresql/<ver>/bin
    return tuple(int(x) if x.isdigit() else 0 for x in re.split(r"[.]", name))


def find_pg_bin() -> Path:
    """Directory holding initdb/pg_ctl/postgres: $DEPLOYKIT_PG_BIN, else the newest
    /usr/lib/postgresql/*/bin, else the directory of ``initdb`` on PATH."""
    env = os.environ.get("DEPLOYKIT_PG_BIN")
    if env:
        d = Path(env)
        if not (d / "initdb").exists():
            raise PgUnavailable(f"DEPLOYKIT_PG_BIN={env} has no initdb in it")
        return d
    candidates = [
        p for p in glob.glob("/usr/lib/postgresql/*/bin") if os.path.exists(os.path.join(p, "initdb"))
    ]
    candidates += [
        p
        for p in glob.glob("/usr/pgsql-*/bin")  # RHEL/PGDG layout
        if os.path.exists(os.path.join(p, "initdb"))
    ]
    if candidates:
        return Path(max(candidates, key=_version_key))
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise PgUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found: install "
        "the server (Debian/Ubuntu: apt-get install postgresql) or point DEPLOYKIT_PG_BIN "
        "at the directory that holds initdb"
    )


def _escape_passfile(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


def write_passfile(
    path: Path, host: str, port: int | str, user: str, password: str, dbname: str = "*"
) -> Path:
    """Write (replace) a libpq passfile with one entry, mode 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = ":".join(_escape_passfile(str(v)) for v in (host, port, dbname, user, password))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(line + "\n")
    os.chmod(path, 0o600)
    return path


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


_DUMP_NOISE = re.compile(
    r"^(\\restrict .*|\\unrestrict .*|-- Dumped from database version .*|"
    r"-- Dumped by pg_dump version .*|-- Started on .*|-- Completed on .*)$"
)


@dataclass
class PgCluster:
    """A running PostgreSQL cluster owned by the test run."""

    host: str
    port: int
    admin_user: str
    admin_password: str
    bin_dir: Path
    data_dir: Path
    version: str
    base: Path = field(repr=False)
    run_as: str | None = field(default=None, repr=False)  # OS user running the server (root only)
    socket_dir: Path | None = field(default=None, repr=False)
    log_path: Path | None = field(default=None, repr=False)
    _remove_base: bool = field(default=False, repr=False)

    # ------------------------------------------------------------- lifecycle --

    @classmethod
    def start(cls, base: Path | None = None, bin_dir: Path | None = None, *, admin_password: str | None = None,
              settings: dict[str, str | int] | None = None) -> "PgCluster":
        """initdb a new cluster and start it (``pg_ctl start -w``).

        ``base`` is the directory to create the cluster in; by default (and,
        when root, whenever ``base`` is not reachable by the server's user) a
        fresh ``tempfile.mkdtemp`` directory, removed again by ``stop()``.
        ``admin_password`` gives the admin role a chosen password (several
        clusters behind one config share the one its ``password_env`` names),
        else a random one; ``settings`` are more postgresql.conf lines, written
        after the rig's own (``{"wal_level": "logical"}``; strings are quoted).
        """
        bin_dir = Path(bin_dir) if bin_dir else find_pg_bin()
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not os.access(bin_dir / tool, os.X_OK):
                raise PgUnavailable(f"{bin_dir / tool} is missing or not executable")
        run_as = None
        if is_root():
            run_as = os.environ.get("DEPLOYKIT_PG_USER", "nobody")
            try:
                pw = pwd.getpwnam(run_as)
            except KeyError:
                raise PgUnavailable(
                    f"PostgreSQL cannot run as root and the user {run_as!r} meant to run it "
                    f"does not exist; set DEPLOYKIT_PG_USER to an unprivileged user"
                ) from None
            if pw.pw_uid == 0:
                raise PgUnavailable("DEPLOYKIT_PG_USER must not be a root (uid 0) user")

        remove_base = False
        if base is not None:
            base = Path(base).absolute()
            base.mkdir(parents=True, exist_ok=True)
            if run_as and not _reachable_by(base, run_as):
                base = None  # e.g. pytest's tmp_path: 0700 root-owned
        if base is None:
            base = Path(tempfile.mkdtemp(prefix="dkpg-"))
            os.chmod(base, 0o755)
            remove_base = True

        version = subprocess.run(
            [str(bin_dir / "postgres"), "-V"], capture_output=True, text=True, check=True
        ).stdout.split()[2]
        port = free_port("127.0.0.1")
        cluster = cls(
            host="127.0.0.1",
            port=port,
            admin_user=ADMIN_USER,
            admin_password=admin_password or secrets.token_urlsafe(18),
            bin_dir=bin_dir,
            data_dir=base / "data",
            version=version,
            base=base,
            run_as=run_as,
            socket_dir=base / "sock",
            log_path=base / "postgres.log",
            _remove_base=remove_base,
        )
        try:
            cluster._initdb(settings or {})
            cluster._start_server()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _chown(self, path: Path) -> None:
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _server_cmd(self, argv: list[str]) -> list[str]:
        if not self.run_as:
            return argv
        if shutil.which("runuser"):
            return ["runuser", "-u", self.run_as, "--", *argv]
        pw = pwd.getpwnam(self.run_as)
        return ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--", *argv]

    def _run_server_tool(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        proc = subprocess.run(
            self._server_cmd(argv),
            cwd=self.base,  # the server user may not be able to enter our cwd
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RigError(
                f"{' '.join(argv[:2])} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
                f"{self._log_tail()}"
            )
        return proc

    def _log_tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return ""
        return "\n--- postgres log ---\n" + "\n".join(lines)

    def _initdb(self, settings: dict) -> None:
        self._chown(self.base)
        self.socket_dir.mkdir(mode=0o755, exist_ok=True)
        self._chown(self.socket_dir)
        pwfile = self.base / "pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.admin_password + "\n")
        self._chown(pwfile)
        try:
            self._run_server_tool(
                [
                    str(self.bin_dir / "initdb"),
                    "-D", str(self.data_dir),
                    "-U", self.admin_user,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "-E", "UTF8",
                    "--locale=C",
                    "--no-sync",
                ]  # fmt: skip
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.data_dir / "postgresql.conf"
        with open(conf, "a") as f:
            f.write(
                "\n# deploykit test rig\n"
                f"port = {self.port}\n"
                "listen_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                # fsync off: only an OS crash could lose data, and tests simulate
                # process crashes. synchronous_commit stays ON: with it off a
                # SIGKILL right after COMMIT loses that commit.
                "fsync = off\n"
                "full_page_writes = off\n"
                "max_connections = 100\n"
                "shared_buffers = 32MB\n"
                "max_wal_size = 256MB\n"
                "log_min_messages = warning\n"
                "log_line_prefix = '%m [%p] %q%u@%d '\n"
                "password_encryption = 'scram-sha-256'\n"
                "TimeZone = 'UTC'\n"
            )
            for key, value in settings.items():
                if isinstance(value, bool):
                    value = "on" if value else "off"
                elif not isinstance(value, int):
                    value = _literal(str(value))
                f.write(f"{key} = {value}\n")
        self.log_path.touch()
        self._chown(self.log_path)

    def _start_server(self) -> None:
        self._run_server_tool(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D", str(self.data_dir),
                "-l", str(self.log_path),
                "-w", "-t", "60",
                "start",
            ]  # fmt: skip
        )
        at_exit(self, self._atexit)

    def _atexit(self) -> None:
        try:
            self.stop()
        except Exception:  # noqa: BLE001
            self.kill()

    @property
    def postmaster_pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (OSError, ValueError, IndexError):
            return None

    @property
    def running(self) -> bool:
        pid = self.postmaster_pid
        return pid is not None and alive(pid)

    def kill(self) -> None:
        """SIGKILL the postmaster and all its server processes (a crash).

        The next ``restart()`` runs crash recovery.
        """
        pid = self.postmaster_pid
        if pid is None or not alive(pid):
            return
        # Every server process is a child of the postmaster, each in its own
        # session (PostgreSQL calls setsid() in them), so signal them one by one.
        victims = [pid, *children_of(pid)]
        for p in victims:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not wait_gone(victims, timeout=15):
            raise RigError(f"postgres processes {victims} survived SIGKILL")
        # Orphans are re-parented to PID 1; in containers whose init never reaps,
        # the dead postmaster stays a zombie that kill(pid, 0) still "finds", and
        # the next start would refuse ("lock file ... already exists"). It is
        # dead either way, so its lock files are stale: remove them.
        (self.data_dir / "postmaster.pid").unlink(missing_ok=True)
        for lock in self.socket_dir.glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)

    def restart(self) -> None:
        """Restart the server (fast shutdown), or start it if it is down/crashed."""
        if self.running:
            self._run_server_tool(
                [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"]
            )
        self._start_server()

    def stop(self, remove: bool = True) -> None:
        """Stop the server; remove its directory if the rig created it."""
        if self.running:
            try:
                self._run_server_tool(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "-D", str(self.data_dir),
                        "-m", "fast", "-w", "-t", "30",
                        "stop",
                    ]  # fmt: skip
                )
            except (RigError, subprocess.TimeoutExpired):
                self.kill()
        forget_at_exit(self)
        if remove and self._remove_base:
            shutil.rmtree(self.base, ignore_errors=True)

    # ---------------------------------------------------------------- clients --

    def env(self, user: str | None = None, password: str | None = None, dbname: str | None = None) -> dict[str, str]:
        """libpq environment (PGHOST, PGPORT, PGUSER, PGPASSWORD[, PGDATABASE])."""
        user = user or self.admin_user
        if password is None and user == self.admin_user:
            password = self.admin_password
        env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGUSER": user}
        if password is not None:
            env["PGPASSWORD"] = password
        if dbname:
            env["PGDATABASE"] = dbname
        return env

    def conninfo(self, dbname: str, user: str | None = None) -> str:
        """A libpq conninfo string WITHOUT the password."""
        return f"host={self.host} port={self.port} dbname={dbname} user={user or self.admin_user}"

    def passfile(self, path: Path, user: str, password: str, dbname: str = "*") -> Path:
        """Write a 0600 libpq passfile for ``user`` on this cluster (use via PGPASSFILE)."""
        return write_passfile(path, self.host, self.port, user, password, dbname)

    def connect(self, dbname: str = "postgres", user: str | None = None, password: str | None = None):
        """psycopg 3 connection in autocommit mode (admin by default)."""
        import psycopg

        user = user or self.admin_user
        if password is None and user == self.admin_user:
            password = self.admin_password
        return psycopg.connect(
            host=self.host,
            port=self.port,
            dbname=dbname,
            user=user,
            password=password,
            autocommit=True,
            connect_timeout=10,
        )

    def _tool(self, name: str) -> str:
        own = self.bin_dir / name
        return str(own) if own.exists() else name

    def _client(self, argv: list[str], env_extra: dict[str, str], input: str | None = None,
                check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(env_extra)
        proc = subprocess.run(argv, input=input, env=env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RigError(f"{Path(argv[0]).name} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def psql(self, dbname: str, sql: str, user: str | None = None, password: str | None = None,
             check: bool = True) -> str:
        """Run ``sql`` with psql (ON_ERROR_STOP, unaligned, tuples only); return stdout.

        The SQL goes through stdin, the password through PGPASSWORD.
        """
        argv = [self._tool("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", dbname, "-f", "-"]
        return self._client(argv, self.env(user, password), input=sql, check=check).stdout

    def execute(self, dbname: str, sql: str, params=None) -> list[tuple]:
        """Run one statement as admin over psycopg; return its rows (or [])."""
        with self.connect(dbname) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    # ---------------------------------------------------------- roles & dbs --

    def create_role(self, name: str, password: str | None, login: bool = True, createdb: bool = False) -> None:
        """Create (or reset) a role; e.g. the app's OWNER role, distinct from the admin."""
        opts = ["LOGIN" if login else "NOLOGIN", "CREATEDB" if createdb else "NOCREATEDB"]
        opts.append(f"PASSWORD {_literal(password)}" if password is not None else "PASSWORD NULL")
        with self.connect() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(f"{verb} ROLE {_ident(name)} WITH {' '.join(opts)}")

    def drop_role(self, name: str) -> None:
        with self.connect() as conn:
            conn.execute(f"DROP ROLE IF EXISTS {_ident(name)}")

    def create_database(self, name: str, owner: str | None = None, template: str | None = None) -> None:
        sql = f"CREATE DATABASE {_ident(name)}"
        if owner:
            sql += f" OWNER {_ident(owner)}"
        if template:
            sql += f" TEMPLATE {_ident(template)}"
        with self.connect() as conn:
            conn.execute(sql)

    def drop_database(self, name: str) -> None:
        """Drop ``name`` if it exists, terminating its sessions first."""
        with self.connect() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")

    def database_exists(self, name: str) -> bool:
        with self.connect() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None

    def databases(self) -> list[str]:
        with self.connect() as conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def database_owner(self, name: str) -> str:
        with self.connect() as conn:
            row = conn.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (name,)
            ).fetchone()
        if row is None:
            raise KeyError(f"no database {name!r}")
        return row[0]

    # -------------------------------------------------------- comparisons --

    def owners(self, dbname: str) -> dict[str, str]:
        """Owners of the database and of the tables, sequences and views of ``public``.

        Keys: ``"database"`` and ``"<kind>:<name>"`` with kind one of table,
        sequence, view, matview, foreign_table, e.g. ``{"database": "app_owner",
        "table:items": "app_owner", "sequence:items_id_seq": "app_owner"}``.
        """
        kinds = {"r": "table", "p": "table", "S": "sequence", "v": "view", "m": "matview", "f": "foreign_table"}
        out = {"database": self.database_owner(dbname)}
        with self.connect(dbname) as conn:
            rows = conn.execute(
                """SELECT c.relkind::text, c.relname, pg_get_userbyid(c.relowner)
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = 'public' AND c.relkind IN ('r','p','S','v','m','f')
                    ORDER BY 2"""
            ).fetchall()
        for kind, name, owner in rows:
            out[f"{kinds[kind]}:{name}"] = owner
        return out

    def tables(self, dbname: str, schema: str = "public") -> list[str]:
        with self.connect(dbname) as conn:
            return _tables(conn, schema)

    def row_checksums(self, dbname: str, schema: str = "public") -> dict[str, str]:
        """``{table: "<rowcount>:<md5>"}`` for every table of ``schema``.

        The md5 is taken over the md5 of each row's text form, sorted, so it
        depends on the set of rows only, not on their physical order. Output
        settings (time zone, date/float/interval formats) are pinned so the
        value is stable across sessions and clusters.
        """
        out: dict[str, str] = {}
        with self.connect(dbname) as conn:
            conn.execute(
                "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres';"
                " SET extra_float_digits = 1; SET bytea_output = 'hex'"
            )
            for table in _tables(conn, schema):
                q = f"{_ident(schema)}.{_ident(table)}"
                count, digest = conn.execute(
                    f"""SELECT count(*),
                               md5(coalesce(string_agg(h, '' ORDER BY h COLLATE "C"), ''))
                          FROM (SELECT md5(t::text) AS h FROM {q} AS t) AS s"""
                ).fetchone()
                out[table] = f"{count}:{digest}"
        return out

    def sequence_values(self, dbname: str, schema: str = "public") -> dict[str, tuple[int, bool]]:
        """``{sequence: (last_value, is_called)}`` for every sequence of ``schema``."""
        out = {}
        with self.connect(dbname) as conn:
            rows = conn.execute(
                """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE n.nspname = %s AND c.relkind = 'S' ORDER BY 1""",
                (schema,),
            ).fetchall()
            for (name,) in rows:
                last, called = conn.execute(
                    f"SELECT last_value, is_called FROM {_ident(schema)}.{_ident(name)}"
                ).fetchone()
                out[name] = (last, called)
        return out

    def schema(self, dbname: str) -> str:
        """``pg_dump --schema-only`` text (owners kept), minus per-dump noise.

        The random ``\\restrict`` key lines and the version comments are
        removed, so two dumps of identical schemas compare equal.
        """
        argv = [self._tool("pg_dump"), "--schema-only", "--no-password", "-d", dbname]
        out = self._client(argv, self.env()).stdout
        return "\n".join(line for line in out.splitlines() if not _DUMP_NOISE.match(line)) + "\n"


def _tables(conn, schema: str) -> list[str]:
    rows = conn.execute(
        """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 1""",
        (schema,),
    ).fetchall()
    return [r[0] for r in rows]


def _reachable_by(path: Path, user: str) -> bool:
    """True if every ancestor of ``path`` can be traversed by ``user``."""
    pw = pwd.getpwnam(user)
    groups = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if user in g.gr_mem}
    for p in [path, *path.parents]:
        try:
            st = p.stat()
        except OSError:
            return False
        if st.st_uid == pw.pw_uid:
            ok = st.st_mode & 0o100
        elif st.st_gid in groups:
            ok = st.st_mode & 0o010
        else:
            ok = st.st_mode & 0o001
        if not ok:
            return False
    return True
