"""Benchmark of deploykit's PostgreSQL data path against the tools it replaces.

    invoke bench [--size-mb 1500] [--json bench/results/pg.json]

Builds a dataset of about N MB (users and orders, with indexes and a foreign
key) in a fresh cluster (fsync on), then times, in one run, each case by
name: plain pg_dump/pg_restore (custom format, and directory format with -j),
a raw copy of the database's files plus sync (the physical limit of any copy),
deploykit's backup, restore, snapshot, clone-restore and rename revert, and
django-dbbackup's dbbackup/dbrestore. Prints one JSON line per case, then a
table of the ratios the targets are about, and writes the JSON file.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit.config import parse_config  # noqa: E402
from deploykit.engine.context import Context  # noqa: E402
from deploykit.drivers.postgres import PostgresDriver  # noqa: E402
from deploykit.sqltext import ident  # noqa: E402
from deploykit_testing.postgres import PgCluster  # noqa: E402

OWNER, OWNER_PW, DB = "bench_owner", "bench-owner-pw", "benchdb"

DATASET_SQL = """
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, name text NOT NULL,
                    created timestamptz NOT NULL, bio text NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users(id),
                     amount numeric(12,2) NOT NULL, status text NOT NULL, created timestamptz NOT NULL,
                     note text NOT NULL);
INSERT INTO users (email, name, created, bio)
  SELECT 'user' || g || '@example.org', 'User ' || g, now() - (g || ' minutes')::interval,
         md5(g::text) || md5((g * 7)::text)
  FROM generate_series(1, {users}) g;
INSERT INTO orders (user_id, amount, status, created, note)
  SELECT 1 + (g % {users}), (g % 10000) / 100.0, (ARRAY['new','paid','shipped','done'])[1 + g % 4],
         now() - (g || ' seconds')::interval, md5(g::text)
  FROM generate_series(1, {orders}) g;
CREATE INDEX orders_user_id ON orders (user_id);
CREATE INDEX users_email ON users (email);
ANALYZE;
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, size_mb: int, workdir: Path):
        self.size_mb = size_mb
        self.work = workdir
        self.results: list[dict] = []
        self.pg: PgCluster | None = None

    # -- setup ---------------------------------------------------------------
    def start(self) -> None:
        self.pg = PgCluster.start(self.work / "cluster")
        # a benchmark of copies must pay for durability: fsync on, as in production
        self.pg.psql("postgres", "ALTER SYSTEM SET fsync = on; ALTER SYSTEM SET shared_buffers = '256MB'; "
                                 "ALTER SYSTEM SET max_wal_size = '4GB';")
        self.pg.restart()
        self.pg.create_role(OWNER, OWNER_PW)
        self.pg.create_database(DB, OWNER)
        users = max(1000, self.size_mb * 1570)
        log(f"building the dataset: {users} users, {users * 3} orders ...")
        t = time.monotonic()
        self.pg.psql(DB, f"SET ROLE {OWNER};" + DATASET_SQL.format(users=users, orders=users * 3))
        size = self.db_mb(DB)
        log(f"dataset: {size} MB in {time.monotonic() - t:.0f} s")
        self.dataset_mb = size
        self.jobs = os.cpu_count() or 2
        cfg = parse_config({
            "deploy_to": str(self.work / "srv"), "python": sys.executable,
            "stages": {"bench": {"hosts": ["local"]}},
            "databases": {"default": {"engine": "postgresql", "name": DB, "owner": OWNER, "host": self.pg.host,
                                      "port": self.pg.port, "admin_user": self.pg.admin_user,
                                      "password_env": "BENCH_PG_PASSWORD", "jobs": self.jobs}},
            "journal_dir": str(self.work / "journal"),
        }, self.work / "deploykit.yaml")
        os.environ["BENCH_PG_PASSWORD"] = self.pg.admin_password
        (self.work / "srv" / ".deploykit").mkdir(parents=True, exist_ok=True)
        self.ctx = Context(cfg, "bench", command="bench")
        self.host = self.ctx.primary
        self.driver = PostgresDriver(cfg.databases[0])
        self.env = {**os.environ, "PGPASSWORD": self.pg.admin_password}
        self.conn = ["-h", self.pg.host, "-p", str(self.pg.port), "-U", self.pg.admin_user]

    def db_mb(self, name: str) -> int:
        out = self.pg.psql("postgres", f"SELECT pg_database_size('{name}') / 1048576;")
        return int(str(out).strip().split()[-1])

    def sh(self, *argv) -> None:
        subprocess.run([str(a) for a in argv], check=True, env=self.env, capture_output=True)

    def measure(self, fn, setup=None) -> float:
        if setup:
            setup()
        self.pg.psql("postgres", "CHECKPOINT;")
        subprocess.run(["sync"])
        t = time.monotonic()
        fn()
        return time.monotonic() - t

    def record(self, case: str, seconds: float, samples: list[float] | None = None) -> None:
        row = {"case": case, "seconds": round(seconds, 3)}
        if samples:
            row["samples"] = [round(x, 3) for x in samples]
        self.results.append(row)
        print(json.dumps(row), flush=True)

    def time(self, case: str, fn, setup=None) -> float:
        seconds = self.measure(fn, setup)
        self.record(case, seconds)
        return seconds

    def fresh_target(self, name="target") -> None:
        self.pg.drop_database(name)
        self.pg.create_database(name, OWNER)

    # -- cases ---------------------------------------------------------------
    def run(self) -> None:
        w, j = self.work, str(self.jobs)
        pg_bin = Path(self.pg.bin_dir)
        dump, restore = "pg_dump", "pg_restore"
        if (pg_bin / "pg_dump").exists():
            dump, restore = str(pg_bin / "pg_dump"), str(pg_bin / "pg_restore")

        self.time("pg_dump_fc", lambda: self.sh(dump, *self.conn, "-Fc", "-f", w / "db.dump", DB))
        self.time("pg_restore_fc", lambda: self.sh(restore, *self.conn, "-d", "target", w / "db.dump"),
                  setup=self.fresh_target)
        shutil.rmtree(w / "db.dir", ignore_errors=True)
        self.time("pg_dump_fd_j", lambda: self.sh(dump, *self.conn, "-Fd", "-j", j, "-f", w / "db.dir", DB))
        self.time("pg_restore_fd_j", lambda: self.sh(restore, *self.conn, "-j", j, "-d", "target", w / "db.dir"),
                  setup=self.fresh_target)
        self.pg.drop_database("target")
        (w / "db.dump").unlink()
        shutil.rmtree(w / "db.dir")

        backup_dir = str(w / "srv" / "backups" / "b1")
        Path(backup_dir).mkdir(parents=True)
        item = {}

        def dk_backup():
            item.update(self.driver.backup(self.ctx, self.host, backup_dir))
            files = item["files"]
            self.host.write_json(f"{backup_dir}/manifest.json", {"id": "b1", "complete": True, "items": [item]})
            assert files
        self.time("dk_backup", dk_backup)
        verify = self.host.helper("archives", "verify_backup", {"dir": backup_dir})
        assert verify["verified"], verify
        def dk_restore():  # built beside, checked (owners, row counts), swapped in by rename
            built = self.driver.build(self.ctx, self.host, backup_dir, item, "bench-restore")
            self.driver.swap(self.ctx, self.host, built, "bench-restore")
        self.time("dk_restore", dk_restore)
        self.driver.drop(self.ctx, self.host, self.driver.derived(self.ctx, "aside", "bench-restore"))
        # a live database has been vacuumed (hint bits, visibility map); a fresh restore has not
        self.pg.psql(DB, "VACUUM ANALYZE;")
        snap = {}
        self.time("dk_snapshot", lambda: snap.setdefault("name", self.driver.snapshot(self.ctx, self.host, "bench")))

        # the physical limit, measured on the same files in the same state as the clone: a copy's
        # speed here depends on the writeback left by the previous case, so both are taken three
        # times, interleaved, and each reports its median (every sample is in the JSON)
        def files_of_live_db() -> Path:  # a clone is a new database: new oid, new directory
            oid = str(self.pg.psql("postgres", f"SELECT oid FROM pg_database WHERE datname = '{DB}';")).split()[-1]
            return Path(self.pg.data_dir) / "base" / oid

        def raw_copy():
            subprocess.run(["cp", "-r", str(src["dir"]), str(w / "rawcopy")], check=True)
            subprocess.run(["sync"], check=True)

        def clone():  # a new live copy of a snapshot that is kept: template clone beside, then the rename swap
            d, ctx, host = self.driver, self.ctx, self.host
            label = f"clone-{len(samples['dk_clone_restore'])}"
            new = d.claim(ctx, host, "restore", label)
            s = ident(snap["name"])
            d.psql(ctx, host, f"ALTER DATABASE {s} WITH ALLOW_CONNECTIONS true;")
            d.psql(ctx, host, f"CREATE DATABASE {ident(new)} TEMPLATE {s} OWNER {ident(OWNER)} STRATEGY FILE_COPY;")
            d.psql(ctx, host, f"ALTER DATABASE {s} WITH ALLOW_CONNECTIONS false;")
            d.swap(ctx, host, {"name": new, "label": label}, label)
        samples = {"raw_copy": [], "dk_clone_restore": []}
        src = {}
        for _ in range(3):
            src["dir"] = files_of_live_db()
            samples["raw_copy"].append(self.measure(raw_copy))
            shutil.rmtree(w / "rawcopy")
            samples["dk_clone_restore"].append(self.measure(clone))
            label = f"clone-{len(samples['dk_clone_restore']) - 1}"
            self.driver.drop(self.ctx, self.host, self.driver.derived(self.ctx, "aside", label))
        for case, values in samples.items():
            self.record(case, sorted(values)[1], values)
        self.time("dk_revert", lambda: self.driver.swap(
            self.ctx, self.host, self.driver.build_from_snapshot(self.ctx, self.host, snap["name"], "revert"), "revert"))
        self.driver.drop(self.ctx, self.host, self.driver.derived(self.ctx, "aside", "revert"))
        shutil.rmtree(w / "srv" / "backups")
        self.dbbackup()

    def dbbackup(self) -> None:
        """django-dbbackup on the same database, as its users run it."""
        try:
            import dbbackup  # noqa: F401
        except ImportError:
            log("django-dbbackup is not installed (pip install django-dbbackup): dbbackup/dbrestore skipped")
            return
        proj = self.work / "dbb"
        (proj / "store").mkdir(parents=True, exist_ok=True)
        (proj / "dbb_settings.py").write_text(
            "SECRET_KEY = 'bench'\nINSTALLED_APPS = ['dbbackup']\nUSE_TZ = True\n"
            f"DATABASES = {{'default': {{'ENGINE': 'django.db.backends.postgresql', 'NAME': '{DB}', "
            f"'USER': '{self.pg.admin_user}', 'PASSWORD': '{self.pg.admin_password}', 'HOST': '{self.pg.host}', "
            f"'PORT': '{self.pg.port}'}}}}\n"
            "STORAGES = {'dbbackup': {'BACKEND': 'django.core.files.storage.FileSystemStorage', "
            f"'OPTIONS': {{'location': '{proj / 'store'}'}}}}, "
            "'default': {'BACKEND': 'django.core.files.storage.FileSystemStorage'}}\n")
        env = {**self.env, "PYTHONPATH": str(proj), "DJANGO_SETTINGS_MODULE": "dbb_settings"}

        def manage(*args):
            proc = subprocess.run([sys.executable, "-m", "django", *args], env=env, capture_output=True, text=True)
            if proc.returncode:
                raise RuntimeError(f"django-dbbackup {args[0]} failed: {proc.stderr.strip()[-500:]}")
        self.time("dbbackup", lambda: manage("dbbackup", "--noinput"))
        self.time("dbrestore", lambda: manage("dbrestore", "--noinput"))

    # -- report --------------------------------------------------------------
    def report(self, json_path: Path | None) -> dict:
        doc = {"dataset_mb": self.dataset_mb, "postgres": self.pg.version, "jobs": self.jobs,
               "results": self.results}
        if json_path:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(doc, indent=2))
        t = {r["case"]: r["seconds"] for r in self.results}
        rows = [
            ("dk_revert vs pg_restore_fd_j", "dk_revert", "pg_restore_fd_j", "< 0.5 s and >= 30x faster"),
            ("dk_clone_restore vs raw_copy", "dk_clone_restore", "raw_copy", "<= 1.2x"),
            ("dk_restore vs pg_restore_fd_j", "dk_restore", "pg_restore_fd_j", "<= 1.0x"),
            ("dk_backup vs pg_dump_fd_j", "dk_backup", "pg_dump_fd_j", "<= 1.2x"),
            ("dk_restore vs dbrestore", "dk_restore", "dbrestore", "(django-dbbackup)"),
            ("dk_backup vs dbbackup", "dk_backup", "dbbackup", "(django-dbbackup)"),
            ("dk_revert vs dbrestore", "dk_revert", "dbrestore", "(django-dbbackup)"),
        ]
        try:
            from rich.console import Console
            from rich.table import Table

            table = Table(title=f"PostgreSQL data path, {self.dataset_mb} MB, PostgreSQL {self.pg.version}, -j {self.jobs}")
            for col in ("comparison", "deploykit s", "baseline s", "ratio", "target"):
                table.add_column(col)
            for name, a, b, target in rows:
                if a in t and b in t:
                    table.add_row(name, f"{t[a]:.3f}", f"{t[b]:.3f}", f"{t[a] / t[b]:.3f}x", target)
            all_cases = Table(title="all cases")
            all_cases.add_column("case")
            all_cases.add_column("seconds")
            for r in self.results:
                all_cases.add_row(r["case"], f"{r['seconds']:.3f}")
            Console(stderr=True).print(all_cases)
            Console(stderr=True).print(table)
        except ImportError:
            pass
        return doc

    def stop(self) -> None:
        try:
            self.ctx.close()
        except Exception:
            pass
        if self.pg:
            self.pg.stop()


def main(size_mb: int = 1500, json_path: str | None = None, workdir: str | None = None) -> dict:
    work = Path(workdir or tempfile.mkdtemp(prefix="dk-bench-", dir=os.environ.get("DEPLOYKIT_BENCH_DIR", "/tmp")))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    bench = Bench(size_mb, work)
    try:
        bench.start()
        bench.run()
        return bench.report(Path(json_path) if json_path else None)
    finally:
        bench.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1500)
    ap.add_argument("--json")
    args = ap.parse_args()
    main(args.size_mb, args.json)
