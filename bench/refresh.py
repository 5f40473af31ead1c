"""Anonymized refresh: its wall time against pg_dump -Fd -j + pg_restore -j of the same database, in one run.

    invoke bench --only refresh [--size-mb N] [--rounds R]   (python bench/refresh.py --sizes 300,1500 --rounds 3)

Two stages on sshd hosts, each with its own PostgreSQL cluster (the colours
rig of deploykit_testing with database="postgresql", fsync on), the sample
project at v1.1 released on both. For each database size (--sizes, MB) the
source's (blue's) database is grown to it with the data path bench's users
(email, name, bio) and orders (a foreign key to users) tables, owned by the
app's owner role, beside the sample project's own tables. The rules mask
users.email (email), users.name (format; --name-rule faker only when the
app's Python on blue can import Faker) and users.bio (format), plus the
sample project's own personal columns (tests/test_refresh.py's RULES). Then,
interleaved (the order alternates by round), --rounds times, each after a
CHECKPOINT and a sync:

- refresh: `api.refresh(cfg, "blue", "green")`, its wall time end to end
  (every phase: plan, digests, masked copy, proof, swap, migrate, restart,
  health), with its phase breakdown (data.timings: schema_dump, pre_data,
  copy, post_data; the proof's seconds; every step's seconds);
- baseline: `pg_dump -Fd -j N` of blue's database, run on green's host
  (the directory written there), then `pg_restore -j N` into a fresh
  database on green's cluster, timed end to end. It compresses as
  deploykit's driver does (--baseline-compress same).

Masking throughput, MB/s per core: the bytes of the masked tables' COPY text
as it left the mask helpers (data.copied, the tables with masked columns)
over the sum of those tables' copy seconds. Each masked table is masked by
one mask helper, a single-threaded Python process on the source host, for
the whole of its copy: the sum of their seconds is the core-seconds the
masks had (an upper bound of the CPU they used), so the figure is a lower
bound of what one core masks. One JSON line per sample on stdout, then the
tables on stderr, and --json FILE with every sample and the summary.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit import api  # noqa: E402
from deploykit.drivers.postgres import PostgresDriver  # noqa: E402
from deploykit.sqltext import ident, literal  # noqa: E402

from bench.pg_data_path import DATASET_SQL  # noqa: E402
from bench.testbed import colour_modules  # noqa: E402
from bench.transfer import Remote, _Facts, _positive, parse_sizes, step_seconds  # noqa: E402

TARGETS = {"ratio": 1.5}
BENCH_TABLES = ("orders", "users")  # dropped in this order before the dataset of the next size
KEY_ENV = "DK_BENCH_REFRESH_KEY"
PHASES = ("schema_dump", "pre_data", "copy", "post_data")
# the sample project's own personal columns (tests/test_refresh.py's RULES, its crm_contact table aside)
SAMPLE_RULES = {
    "auth.User.email": "email",
    "auth.User.username": {"hash": {"length": 16}},
    "auth.User.first_name": "format",
    "auth.User.last_name": "format",
    "auth.User.password": {"fixed": "!"},
    "admin.LogEntry.object_repr": "format",
    "sessions.Session.session_key": {"hash": {}},
    "sessions.Session.session_data": {"fixed": ""},
    "library.Author.name": "keep",
    "library.Genre.name": "keep",
}
MB = 1024 * 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rules(name_rule: str = "format") -> dict:
    """The refresh's rules: the bench tables' personal columns and the sample project's."""
    name = {"faker": "name"} if name_rule == "faker" else "format"
    return {**SAMPLE_RULES, "users.email": "email", "users.name": name, "users.bio": "format"}


# -- pure parts (tests/test_bench_refresh.py) ------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/refresh.py", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=parse_sizes, default=[300, 1500], help="database sizes in MB (default 300,1500)")
    ap.add_argument("--size-mb", type=_positive, help="one database size instead of --sizes (invoke bench --size-mb)")
    ap.add_argument("--rounds", type=_positive, default=3, help="interleaved rounds per size (default 3)")
    ap.add_argument("--jobs", type=_positive, default=os.cpu_count() or 2,
                    help="pg_dump/pg_restore -j of the baseline and deploykit's databases.default.jobs (default: "
                         "the cores)")
    ap.add_argument("--baseline-compress", default="same",
                    help="pg_dump --compress of the baseline: 'same' (what deploykit's driver picks), "
                         "'default' (pg_dump's own), or a pg_dump --compress value")
    ap.add_argument("--name-rule", choices=("format", "faker"), default="format",
                    help="users.name's rule: format (default), or faker when the app's Python on the source can "
                         "import Faker (else format, said so)")
    ap.add_argument("--proof-sample", type=int, default=None,
                    help="refresh.proof.sample (values per masked column; default: all of them)")
    ap.add_argument("--json", help="write every sample and the summary here (JSON)")
    args = ap.parse_args(argv)
    if args.size_mb is not None:
        args.sizes = [args.size_mb]
    if args.proof_sample is not None and args.proof_sample < 10000:
        ap.error("--proof-sample must be at least 10000 (deploykit's own minimum)")
    return args


def median(values) -> float | None:
    """The median of the numbers given (None when there is none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def masking(copied: list[dict] | None, copy_seconds: float | None = None, jobs: int | None = None) -> dict | None:
    """Masking throughput from data.copied ([{table, bytes, seconds, masked}]): the masked tables' bytes over
    the sum of their copy seconds (one single-threaded mask helper per masked table: core-seconds), in MB/s
    per core; and, for comparison, over the copy phase's seconds times the cores the masks could use at once
    (min(masked tables, jobs))."""
    tables = [c for c in copied or [] if c.get("masked")]
    if not tables:
        return None
    size = sum(c.get("bytes") or 0 for c in tables)
    seconds = sum(c.get("seconds") or 0.0 for c in tables)
    out = {"tables": len(tables), "bytes": size, "helper_seconds": round(seconds, 3),
           "mb_per_s_per_core": (size / MB / seconds) if seconds else None,
           "largest": max(tables, key=lambda c: c.get("bytes") or 0)["table"]}
    if copy_seconds:
        cores = min(len(tables), jobs or len(tables))
        out["phase_cores"] = cores
        out["mb_per_s_per_core_of_phase"] = size / MB / copy_seconds / cores
    return out


def refresh_row(data: dict, wall: float, jobs: int) -> dict:
    """What a refresh sample records of api.refresh's result data: wall, phases, proof, masking."""
    timings = dict(data.get("timings") or {})
    proof = data.get("proof") or {}
    found = proof.get("found")
    return {"seconds": round(wall, 3), "timings": timings,
            "proof": {"checked": proof.get("checked"), "originals": proof.get("originals"),
                      "found": len(found) if isinstance(found, list) else found, "seconds": proof.get("seconds")},
            "digests": {k: (data.get("digests") or {}).get(k) for k in ("columns", "digested", "originals", "sample")},
            "rows": sum((data.get("rows") or {}).values()) or None,
            "copied": [{k: c.get(k) for k in ("table", "bytes", "seconds", "masked")} for c in data.get("copied") or []],
            "masking": masking(data.get("copied"), timings.get("copy"), jobs)}


def summarize(rows: list[dict], sizes: list[int]) -> dict:
    """Per size: medians of refresh and baseline wall seconds, their ratio, the refresh's phases (medians),
    the proof (seconds, values checked), the masking throughput; the failed cases."""
    per_size = []
    for size in sizes:
        mine = [r for r in rows if r["size_mb"] == size]
        ref = [r for r in mine if r["case"] == "refresh" and r.get("ok")]
        base = [r for r in mine if r["case"] == "baseline" and r.get("ok")]
        med_r, med_b = median(r["seconds"] for r in ref), median(r["seconds"] for r in base)
        db_mb = [r["db_mb"] for r in mine if r.get("db_mb") is not None]
        phases = {p: median((r.get("timings") or {}).get(p) for r in ref) for p in PHASES}
        phases["proof"] = median((r.get("proof") or {}).get("seconds") for r in ref)
        steps: dict[str, float | None] = {}
        for r in ref:
            for k in r.get("steps") or {}:
                steps.setdefault(k, None)
        steps = {k: median((r.get("steps") or {}).get(k) for r in ref) for k in steps}
        mask = [r["masking"] for r in ref if r.get("masking")]
        per_size.append({
            "size_mb": size, "db_mb": db_mb[0] if db_mb else None,
            "refresh": med_r, "baseline": med_b,
            "ratio": (med_r / med_b) if med_r is not None and med_b else None,
            "baseline_dump": median(r.get("dump") for r in base), "baseline_restore": median(r.get("restore") for r in base),
            "phases": phases, "steps": steps,
            "proof_checked": median((r.get("proof") or {}).get("checked") for r in ref),
            "proof_found": max(((r.get("proof") or {}).get("found") or 0 for r in ref), default=None),
            "mask_mb_per_s_per_core": median(m.get("mb_per_s_per_core") for m in mask),
            "mask_mb_per_s_per_core_of_phase": median(m.get("mb_per_s_per_core_of_phase") for m in mask),
            "masked_mb": median(m["bytes"] / MB for m in mask),
            "samples": {"refresh": len(ref), "baseline": len(base)},
            "failed": sorted({r["case"] for r in mine if not r.get("ok")}),
        })
    return {"sizes": per_size}


def _s(value, fmt="{:.2f}") -> str:
    return fmt.format(value) if value is not None else "-"


def _met(value, target) -> str:
    return "-" if value is None else ("met" if value <= target else "NOT met")


def result_table(summary: dict):
    """rich Table: per size, refresh and baseline medians, the ratio against its target, proof, masking."""
    from rich.table import Table

    table = Table(title="anonymized refresh against pg_dump -Fd -j + pg_restore -j (medians)")
    for col in ("database", "refresh s", "baseline s (dump+restore)", "refresh / baseline", "target", "proof s",
                "values checked", "found", "masking MB/s/core", "samples r/b", "failed"):
        table.add_column(col, justify="right")
    for s in summary["sizes"]:
        db = f"{s['size_mb']} MB" + (f" ({s['db_mb']} MB)" if s["db_mb"] is not None else "")
        base = _s(s["baseline"])
        if s["baseline_dump"] is not None:
            base += f" ({s['baseline_dump']:.1f}+{s['baseline_restore']:.1f})"
        n = s["samples"]
        table.add_row(db, _s(s["refresh"]), base, _s(s["ratio"], "{:.2f}x"),
                      f"<= {TARGETS['ratio']}x: {_met(s['ratio'], TARGETS['ratio'])}", _s(s["phases"]["proof"]),
                      _s(s["proof_checked"], "{:,.0f}"), _s(s["proof_found"], "{}"),
                      _s(s["mask_mb_per_s_per_core"], "{:.1f}"), f"{n['refresh']}/{n['baseline']}",
                      ", ".join(s["failed"]) or "-")
    return table


def phase_table(summary: dict):
    """rich Table: where a refresh's seconds go, per size (medians): the build's phases, the proof, and the
    slowest steps of the playbook."""
    from rich.table import Table

    table = Table(title="refresh: where the time goes (median seconds)")
    table.add_column("phase / step")
    for s in summary["sizes"]:
        table.add_column(f"{s['size_mb']} MB", justify="right")
    names = [f"build: {p}" for p in PHASES] + ["proof scan"]
    keys = [("phases", p) for p in PHASES] + [("phases", "proof")]
    steps: list[str] = []
    for s in summary["sizes"]:
        steps += [k for k in s["steps"] if k not in steps]
    # the steps that take a second or more somewhere, in playbook order
    steps = [k for k in steps if any((s["steps"].get(k) or 0) >= 1.0 for s in summary["sizes"])]
    for name, (group, key) in zip(names, keys):
        table.add_row(name, *[_s(s[group].get(key)) for s in summary["sizes"]])
    for k in steps:
        table.add_row(f"step {k}", *[_s(s["steps"].get(k)) for s in summary["sizes"]])
    table.add_row("refresh, wall", *[_s(s["refresh"]) for s in summary["sizes"]])
    table.add_row("masked tables, MB of COPY text", *[_s(s["masked_mb"], "{:.0f}") for s in summary["sizes"]])
    table.add_row("masking MB/s per core (copy phase x cores)",
                  *[_s(s["mask_mb_per_s_per_core_of_phase"], "{:.1f}") for s in summary["sizes"]])
    return table


# -- the rig ---------------------------------------------------------------------------------------------
class RefreshBench:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.rows: list[dict] = []
        self.nginxes: list = []
        self.colours = self.rig = None
        self.clusters: dict = {}
        self.stop_clusters = None
        self.name_rule = args.name_rule

    def start(self) -> None:
        m = colour_modules()
        log("starting two PostgreSQL clusters, three sshd hosts, nginx, the sample project ...")
        self.clusters = m.start_colour_clusters(self.work / "pg")
        self.stop_clusters = m.stop_clusters
        for pg in self.clusters.values():  # a benchmark of copies pays for durability, as in production
            pg.psql("postgres", "ALTER SYSTEM SET fsync = on; ALTER SYSTEM SET full_page_writes = on; "
                                "ALTER SYSTEM SET shared_buffers = '256MB'; ALTER SYSTEM SET max_wal_size = '4GB';")
            pg.restart()
        repo = self.work / "sample" / "library"
        m.build_sample_repo(repo)
        wheelhouse = m.build_wheelhouse(self.work / "wheelhouse")
        self.rig = m.start_ssh_hosts(self.work / "ssh", 3,
                                     env=[m.session_env(self.clusters[c]) for c in ("blue", "green")])

        def nginx_factory(prefix, upstream, servers):
            ngx = m.Nginx.start(prefix, upstream, servers)
            self.nginxes.append(ngx)
            return ngx
        self.colours = c = m.make_colours(self.rig, repo, wheelhouse, nginx_factory, clusters=self.clusters)
        os.environ.setdefault(KEY_ENV, "bench-refresh-key-" + os.urandom(12).hex())
        self.write_config(self.name_rule)
        self.spec = self.cfg.databases[0]
        self.remote = {colour: Remote(c.host(colour), self.spec) for colour in ("blue", "green")}
        for colour in ("blue", "green"):
            res = api.release(self.cfg, colour, "v1.1")
            if not res.ok:
                raise RuntimeError(f"release v1.1 on {colour} failed: {res.error}")
        if self.name_rule == "faker" and not self.faker_importable():
            log("users.name: the app's Python on blue cannot import Faker: the format rule instead")
            self.name_rule = "format"
            self.write_config(self.name_rule)
        self.compress = self.baseline_compression()
        self.postgres = self.clusters["blue"].version
        self.green_databases = set(self.clusters["green"].databases())

    def write_config(self, name_rule: str) -> None:
        def change(doc):
            doc["databases"]["default"]["jobs"] = self.args.jobs
            refresh = {"key_env": KEY_ENV, "rules": rules(name_rule)}
            if self.args.proof_sample:
                refresh["proof"] = {"sample": self.args.proof_sample}
            doc["refresh"] = refresh
        self.colours.config_path = self.colours.edit(change, self.work / "deploykit-refresh-bench.yaml")
        self.cfg = self.colours.config()

    def faker_importable(self) -> bool:
        python = self.colours.host("blue").deploy_to / "current" / ".venv" / "bin" / "python"
        cp = subprocess.run(self.remote["blue"].argv(f"{shlex.quote(str(python))} -c 'import faker'"),
                            capture_output=True, stdin=subprocess.DEVNULL)
        return cp.returncode == 0

    def baseline_compression(self) -> str:
        choice = self.args.baseline_compress
        if choice == "default":
            return ""
        if choice == "same":
            return PostgresDriver(self.spec).compression(_Facts(self.remote["blue"]))
        return f"--compress={shlex.quote(choice)}"

    def grow(self, size_mb: int) -> int:
        """Blue's database with the bench dataset of about size_mb MB (the previous size's dropped first)."""
        blue, owner = self.clusters["blue"], self.spec.owner
        users = max(1000, size_mb * 1570)
        log(f"growing blue's database to about {size_mb} MB: {users} users, {users * 3} orders ...")
        t = time.monotonic()
        drop = "".join(f"DROP TABLE IF EXISTS {ident(name)};" for name in BENCH_TABLES)
        with blue.connect(self.spec.name) as conn:
            conn.execute(f"SET ROLE {ident(owner)};{drop}" + DATASET_SQL.format(users=users, orders=users * 3))
            conn.execute("RESET ROLE")
            conn.execute("VACUUM ANALYZE")  # a live database has been vacuumed (hint bits, visibility map)
        db_mb = int(blue.psql("postgres", f"SELECT pg_database_size({literal(self.spec.name)}) / 1048576;").strip())
        log(f"blue's database: {db_mb} MB in {time.monotonic() - t:.0f} s")
        return db_mb

    def settle(self) -> None:
        """Start each case from the same place: no dirty buffers, nothing left to write back (untimed)."""
        for pg in self.clusters.values():
            with pg.connect() as conn:
                conn.execute("CHECKPOINT")
        subprocess.run(["sync"], check=False)

    def tidy_green(self) -> None:
        """Green's cluster as it started plus its live database: the refresh's previous copy (kept aside until
        pruned) and anything a failed case left are dropped (untimed)."""
        green = self.clusters["green"]
        for name in sorted(set(green.databases()) - self.green_databases - {self.spec.name}):
            green.drop_database(name)

    def record(self, row: dict) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    # -- cases -------------------------------------------------------------------------------------------
    def refresh(self, size_mb: int, db_mb: int, rnd: int) -> None:
        self.settle()
        t = time.monotonic()
        res = api.refresh(self.cfg, "blue", "green")
        wall = time.monotonic() - t
        row = {"case": "refresh", "size_mb": size_mb, "db_mb": db_mb, "round": rnd, "ok": bool(res.ok),
               **refresh_row(res.data or {}, wall, self.args.jobs), "steps": step_seconds(res.records, res.playbook)}
        if not res.ok:
            row["error"] = str(res.error)
        self.record(row)
        self.tidy_green()
        if not res.ok:
            raise RuntimeError(f"refresh failed: {res.error}")

    def baseline(self, size_mb: int, db_mb: int, rnd: int) -> None:
        """pg_dump -Fd -j N of blue's database run on green's host, pg_restore -j N into a new database on
        green's cluster."""
        green, j = self.remote["green"], self.args.jobs
        blue_pg = self.clusters["blue"]
        dst = shlex.quote(str(self.colours.host("green").root / "bench-baseline-dump"))
        new = f"bench_baseline_{rnd}"
        green.run(f"rm -rf {dst}")
        self.clusters["green"].psql("postgres", f"DROP DATABASE IF EXISTS {ident(new)};")
        # green's sessions reach green's server by default (PGHOST/PGPORT): the dump names blue's
        source = f"{green.conn} -h {shlex.quote(str(blue_pg.host))} -p {int(blue_pg.port)}"
        self.settle()
        t0 = time.monotonic()
        green.run(f"pg_dump {source} -Fd -j {j} {self.compress} -f {dst} {shlex.quote(self.spec.name)} && sync -f {dst}")
        t1 = time.monotonic()
        green.run(f"createdb {green.conn} -O {shlex.quote(self.spec.owner)} {new} && "
                  f"pg_restore {green.conn} -j {j} -d {new} {dst}")
        t2 = time.monotonic()
        dump_bytes = int(green.run(f"du -sb {dst}").split()[0])
        self.record({"case": "baseline", "size_mb": size_mb, "db_mb": db_mb, "round": rnd, "ok": True,
                     "seconds": round(t2 - t0, 3), "dump": round(t1 - t0, 3), "restore": round(t2 - t1, 3),
                     "dump_bytes": dump_bytes, "jobs": j, "compress": self.compress or "pg_dump's default"})
        self.clusters["green"].psql("postgres", f"DROP DATABASE {ident(new)};")
        green.run(f"rm -rf {dst}")

    def run(self) -> None:
        for size in self.args.sizes:
            db_mb = self.grow(size)
            for rnd in range(self.args.rounds):
                cases = (self.refresh, self.baseline) if rnd % 2 == 0 else (self.baseline, self.refresh)
                for case in cases:
                    case(size, db_mb, rnd)

    # -- report ------------------------------------------------------------------------------------------
    def report(self) -> dict:
        summary = summarize(self.rows, self.args.sizes)
        doc = {"postgres": getattr(self, "postgres", None), "jobs": self.args.jobs, "rounds": self.args.rounds,
               "cores": os.cpu_count(), "name_rule": self.name_rule, "proof_sample": self.args.proof_sample or "all",
               "baseline_compress": getattr(self, "compress", None) or "pg_dump's default",
               "rules": rules(self.name_rule), "rows": self.rows, "summary": summary}
        if self.args.json:
            Path(self.args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(self.args.json).write_text(json.dumps(doc, indent=1))
        from rich.console import Console

        console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
        console.print(result_table(summary))
        console.print(phase_table(summary))
        console.print("masking MB/s/core: the masked tables' COPY text (as it left the mask helpers) over the sum of "
                      "their copy seconds, each table masked by one single-threaded helper (a lower bound per core)")
        return doc

    def stop(self) -> None:
        if self.colours:
            self.colours.stop()
        elif self.stop_clusters:
            self.stop_clusters(self.clusters)
        for ngx in self.nginxes:
            ngx.stop()
        if self.rig:
            self.rig.stop()


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dkbench-refresh-", dir=os.environ.get("DEPLOYKIT_BENCH_DIR", "/tmp")))
    os.chmod(work, 0o755)
    bench = RefreshBench(args, work)
    failed = None
    try:
        bench.start()
        bench.run()
    except BaseException as exc:  # report what was measured before the failure, then fail
        failed = exc
        log(f"the bench stopped: {exc!r}")
    finally:
        try:
            if bench.rows or failed is None:
                bench.report()
        finally:
            bench.stop()
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
