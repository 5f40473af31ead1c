"""Blue/green transfer: freeze seconds of `copy` (and `replicate`) against pg_dump -Fd -j + copy + pg_restore -j.

    invoke bench --only transfer [--size-mb N]      (python bench/transfer.py --sizes 300,1500 --rounds 3)

The blue/green rig with PostgreSQL colours (deploykit_testing.colours: three
sshd hosts, blue and green each with its own cluster, nginx in front), the
freeze middleware on, blue at v1.0 and live, green at v1.1, some media on blue
(--media-files files, --media-mb in all). For each database size (--sizes, MB)
blue's database is grown to it with the data path bench's users/orders tables
(not Django's: migrate leaves them alone), then, interleaved, --rounds times:

- copy: `api.transfer(cfg, "blue", "green", mode="copy")`, its freeze_seconds;
- baseline: the same work by hand, timed end to end: pg_dump -Fd -j N of
  blue's database on blue's host, the dump directory streamed to green's host
  (ssh blue tar | ssh green tar, through this machine as deploykit's copy goes),
  pg_restore -j N into a new database on green's cluster;
- replicate: `api.transfer(..., mode="replicate")`'s freeze_seconds, when this
  checkout's api.transfer has that mode (else said so, never made up).

After a transfer that left green live, `api.switch(cfg, "blue")` so the next
one is allowed. Media resend: bytes_sent of the second transfer's media over
the first's (the media do not change). One JSON line per case on stdout, then
the tables (freeze seconds against database size; the ratios and their
targets) on stderr, and --json FILE with every sample.
"""
from __future__ import annotations

import argparse
import inspect
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
from deploykit.errors import DeployError  # noqa: E402
from deploykit.sqltext import ident, literal  # noqa: E402

from bench.pg_data_path import DATASET_SQL  # noqa: E402
from bench.testbed import colour_modules  # noqa: E402

MIDDLEWARE = "deploykit.django.middleware.WriteFreezeMiddleware"
TARGETS = {"copy_ratio": 1.2, "replicate_freeze": 2.0, "media_resend": 0.01}
BENCH_TABLES = ("orders", "users")  # dropped in this order before the dataset of the next size


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- pure parts (tests/test_bench_transfer.py) -----------------------------------------------------------
def parse_sizes(text: str) -> list[int]:
    """'300,1500' -> [300, 1500]: database sizes in MB, each a positive whole number, none twice."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of sizes in MB") from None
    if not sizes or any(s <= 0 for s in sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: every size must be a positive number of MB")
    if len(set(sizes)) != len(sizes):
        raise argparse.ArgumentTypeError(f"{text!r}: a size is given twice")
    return sizes


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="bench/transfer.py", description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=parse_sizes, default=[300, 1500], help="database sizes in MB (default 300,1500)")
    ap.add_argument("--size-mb", type=_positive, help="one database size instead of --sizes (invoke bench --size-mb)")
    ap.add_argument("--rounds", type=_positive, default=3, help="interleaved rounds per size (default 3)")
    ap.add_argument("--media-files", type=_positive, default=200, help="media files on blue (default 200)")
    ap.add_argument("--media-mb", type=_positive, default=50, help="their total size in MB (default 50)")
    ap.add_argument("--jobs", type=_positive, default=os.cpu_count() or 2,
                    help="pg_dump/pg_restore -j, for deploykit (databases.default.jobs) and the baseline")
    ap.add_argument("--baseline-compress", default="same",
                    help="pg_dump --compress of the baseline: 'same' (what deploykit's driver picks), "
                         "'default' (pg_dump's own), or a pg_dump --compress value")
    ap.add_argument("--max-freeze", type=float, default=10.0, help="--max-freeze of the replicate transfers")
    ap.add_argument("--json", help="write every sample and the summary here (JSON)")
    args = ap.parse_args(argv)
    if args.size_mb is not None:
        args.sizes = [args.size_mb]
    return args


def median(values) -> float | None:
    """The median of the numbers given (None when there is none)."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def media_resend(rows: list[dict]) -> dict | None:
    """bytes_sent of the media of the run's second transfer over its first's (the media never change)."""
    sent = [sum(m.get("bytes_sent") or 0 for m in r.get("media") or []) for r in rows
            if r["case"] in ("copy", "replicate") and r.get("ok")]
    if len(sent) < 2:
        return None
    return {"first_bytes": sent[0], "second_bytes": sent[1],
            "ratio": (sent[1] / sent[0]) if sent[0] else None}


def step_seconds(records, playbook: str = "transfer") -> dict[str, float]:
    """'phase/step' -> seconds (the slowest host) of the run's own playbook, in order: where a freeze goes."""
    out: dict[str, float] = {}
    for rec in records:
        if rec.playbook == playbook:
            key = f"{rec.phase}/{rec.step}"
            out[key] = round(max(out.get(key, 0.0), rec.seconds), 3)
    return out


def summarize(rows: list[dict], sizes: list[int], replicate_note: str | None = None) -> dict:
    """Per size: the medians of each case and the ratio copy/baseline; the media resend; what is missing."""
    per_size = []
    for size in sizes:
        mine = [r for r in rows if r["size_mb"] == size]
        samples = {case: [r["seconds"] for r in mine if r["case"] == case and r.get("ok")]
                   for case in ("copy", "baseline", "replicate")}
        med = {case: median(v) for case, v in samples.items()}
        db_mb = [r["db_mb"] for r in mine if r.get("db_mb") is not None]
        per_size.append({
            "size_mb": size, "db_mb": db_mb[0] if db_mb else None,
            "copy": med["copy"], "baseline": med["baseline"], "replicate": med["replicate"],
            "samples": {case: len(v) for case, v in samples.items()},
            "failed": sorted({r["case"] for r in mine if not r.get("ok")}),
            "copy_ratio": (med["copy"] / med["baseline"]) if med["copy"] is not None and med["baseline"] else None,
        })
    return {"sizes": per_size, "media": media_resend(rows), "replicate": replicate_note}


def _met(value, target, below=False) -> str:
    if value is None:
        return "-"
    return "met" if (value < target if below else value <= target) else "NOT met"


def _s(value) -> str:
    return f"{value:.2f}" if value is not None else "-"


def freeze_table(summary: dict):
    """rich Table: freeze seconds against database size, both modes, and the baseline."""
    from rich.table import Table

    table = Table(title="freeze seconds against database size (medians)")
    for col in ("database", "copy freeze s", "baseline s", "copy / baseline", "replicate freeze s", "samples c/b/r",
                "failed"):
        table.add_column(col, justify="right")
    for s in summary["sizes"]:
        db = f"{s['size_mb']} MB" + (f" ({s['db_mb']} MB)" if s["db_mb"] is not None else "")
        ratio = f"{s['copy_ratio']:.2f}x" if s["copy_ratio"] is not None else "-"
        rep = _s(s["replicate"]) if s["replicate"] is not None else ("not available" if summary["replicate"] else "-")
        n = s["samples"]
        table.add_row(db, _s(s["copy"]), _s(s["baseline"]), ratio, rep, f"{n['copy']}/{n['baseline']}/{n['replicate']}",
                      ", ".join(s["failed"]) or "-")
    return table


def ratio_rows(summary: dict) -> list[tuple[str, str, str, str]]:
    """(comparison, measured, target, verdict) for each ratio the issue sets a target for."""
    rows = []
    for s in summary["sizes"]:
        db = f"{s['size_mb']} MB"
        r = s["copy_ratio"]
        rows.append((f"copy freeze / baseline, {db}", f"{r:.2f}x" if r is not None else "-",
                     f"<= {TARGETS['copy_ratio']}x", _met(r, TARGETS["copy_ratio"])))
        if s["replicate"] is not None:
            rows.append((f"replicate freeze, {db}", f"{s['replicate']:.2f} s", f"<= {TARGETS['replicate_freeze']:g} s",
                         _met(s["replicate"], TARGETS["replicate_freeze"])))
        else:
            rows.append((f"replicate freeze, {db}", "not available" if summary["replicate"] else "-",
                         f"<= {TARGETS['replicate_freeze']:g} s", summary["replicate"] or "-"))
    m = summary["media"]
    if m and m["ratio"] is not None:
        rows.append(("media: second transfer / first, bytes sent", f"{100 * m['ratio']:.3f}% "
                     f"({m['second_bytes']} of {m['first_bytes']})", f"< {100 * TARGETS['media_resend']:g}%",
                     _met(m["ratio"], TARGETS["media_resend"], below=True)))
    else:
        rows.append(("media: second transfer / first, bytes sent", "-", f"< {100 * TARGETS['media_resend']:g}%",
                     "fewer than two transfers" if not m else "the first sent nothing"))
    return rows


def ratio_table(summary: dict):
    from rich.table import Table

    table = Table(title="transfer ratios against their targets")
    for col in ("comparison", "measured", "target", "verdict"):
        table.add_column(col)
    for row in ratio_rows(summary):
        table.add_row(*row)
    return table


# -- the rig ---------------------------------------------------------------------------------------------
class Remote:
    """Commands on a rig host through the OpenSSH client, the database password on stdin (never argv)."""

    def __init__(self, host, spec):
        self.host, self.spec = host, spec

    def argv(self, script: str) -> list[str]:
        return [*self.host.ssh_argv(), script]

    def pg(self, script: str) -> str:
        """`script` with the admin password deploykit gives the tools (databases.default.password_env) read
        from stdin into PGPASSWORD; PGHOST/PGPORT are the host session's own, as for deploykit."""
        return f"IFS= read -r PGPASSWORD; export PGPASSWORD; {script}" if self.spec.password() else script

    def run(self, script: str, timeout: float = 7200) -> str:
        pw = self.spec.password()
        cp = subprocess.run(self.argv(self.pg(script)), input=(pw + "\n") if pw else "", capture_output=True,
                            text=True, timeout=timeout)
        if cp.returncode:
            raise RuntimeError(f"{self.host.name}: {script[:200]!r} exited {cp.returncode}: {cp.stderr.strip()[-800:]}")
        return cp.stdout

    @property
    def conn(self) -> str:
        return PostgresDriver(self.spec).conn_args()


class _Facts:
    """Just enough of a deploykit Host for PostgresDriver.compression (pg_dump --version on the host)."""

    def __init__(self, remote: Remote):
        self.remote = remote

    def fact(self, key, read):
        return read()

    def run(self, command, **kw):
        return type("Result", (), {"stdout": self.remote.run(command)})()


class TransferBench:
    def __init__(self, args, work: Path):
        self.args, self.work = args, work
        self.rows: list[dict] = []
        self.nginxes: list = []
        self.colours = self.rig = None
        self.clusters: dict = {}
        self.stop_clusters = None
        self.replicate_note: str | None = None

    # -- setup -------------------------------------------------------------------------------------------
    def start(self) -> None:
        m = colour_modules()
        log("starting the colours' PostgreSQL clusters, three sshd hosts, nginx, the sample project ...")
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
        for colour in ("blue", "green"):
            with open(c.host(colour).deploy_to / "shared" / ".env", "a") as env:
                env.write(f"EXTRA_MIDDLEWARE={MIDDLEWARE}\n")

        def change(doc):
            doc["media"] = ["shared/media"]
            doc["freeze"] = {"mode": "maintenance"}  # writes answered 503, reads served: the web keeps running
            doc["databases"]["default"]["jobs"] = self.args.jobs
        c.config_path = c.edit(change, self.work / "deploykit-transfer-bench.yaml")
        self.cfg = c.config()
        self.spec = self.cfg.databases[0]
        self.remote = {colour: Remote(c.host(colour), self.spec) for colour in ("blue", "green")}
        for colour, tag in (("blue", "v1.0"), ("green", "v1.1")):
            res = api.release(self.cfg, colour, tag)
            if not res.ok:
                raise RuntimeError(f"release {tag} on {colour} failed: {res.error}")
        res = api.switch(self.cfg, "blue")
        if not res.ok:
            raise RuntimeError(f"switch to blue failed: {res.error}")
        self.write_media()
        self.compress = self.baseline_compression()
        self.postgres = self.clusters["blue"].version

    def write_media(self) -> None:
        root = self.colours.host("blue").deploy_to / "shared" / "media" / "bench"
        n, each = self.args.media_files, self.args.media_mb * 1024 * 1024 // self.args.media_files
        for i in range(n):
            path = root / f"{i % 10:02d}" / f"file-{i:04d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(each))  # incompressible, as photos are
        # green has a media root of its own, empty: deploykit refuses a target whose media root is missing
        (self.colours.host("green").deploy_to / "shared" / "media").mkdir(parents=True, exist_ok=True)
        log(f"media on blue: {n} files, {n * each // 1048576} MB")

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
        # over psycopg, not the rig's psql (which gives up after 300 s): 1.5 GB takes longer on a busy machine
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

    def record(self, row: dict) -> None:
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    # -- cases -------------------------------------------------------------------------------------------
    def switch_back(self) -> None:
        """Blue live again (no data moves) when the transfer left green live: the next transfer needs it idle."""
        if api.colours(self.cfg)["live"] == "green":
            res = api.switch(self.cfg, "blue")
            if not res.ok:
                raise RuntimeError(f"switch back to blue failed: {res.error}")

    def transfer(self, mode: str, size_mb: int, db_mb: int, rnd: int) -> None:
        kwargs = {"mode": mode}
        if mode == "replicate":
            kwargs["max_freeze"] = self.args.max_freeze
        self.settle()
        t = time.monotonic()
        try:
            res = api.transfer(self.cfg, "blue", "green", **kwargs)
        except DeployError as exc:
            if mode == "replicate" and "not built" in exc.one_line():  # refused before anything ran
                self.replicate_note = f"not available: {exc.one_line()}"
                log(f"replicate: {self.replicate_note}")
                return
            if mode == "replicate":  # refused for another reason: a failed sample, said so in the tables
                self.record({"case": mode, "size_mb": size_mb, "db_mb": db_mb, "round": rnd, "ok": False,
                             "seconds": None, "error": exc.one_line()})
                return
            raise
        wall = time.monotonic() - t
        data = res.data or {}
        row = {"case": mode, "size_mb": size_mb, "db_mb": db_mb, "round": rnd, "ok": bool(res.ok),
               "seconds": data.get("freeze_seconds"), "wall": round(wall, 3), "copied": data.get("copied"),
               "media": [{k: v for k, v in m.items() if k in ("item", "files", "sent_files", "kept_files", "bytes_sent")}
                         for m in data.get("media") or []],
               "steps": step_seconds(res.records, res.playbook)}
        if not res.ok:
            row["error"] = str(res.error)
        self.record(row)
        self.switch_back()
        if not res.ok and mode == "copy":
            raise RuntimeError(f"transfer --mode copy failed: {res.error}")

    def baseline(self, size_mb: int, db_mb: int, rnd: int) -> None:
        """pg_dump -Fd -j on blue's host, tar | ssh | tar to green's host, pg_restore -j into a new database."""
        blue, green, j = self.remote["blue"], self.remote["green"], self.args.jobs
        src = shlex.quote(str(self.colours.host("blue").root / "bench-baseline-dump"))
        dst = shlex.quote(str(self.colours.host("green").root / "bench-baseline-dump"))
        new = f"bench_baseline_{rnd}"
        blue.run(f"rm -rf {src}")
        green.run(f"rm -rf {dst}")
        self.clusters["green"].psql("postgres", f"DROP DATABASE IF EXISTS {ident(new)};")
        self.settle()
        t0 = time.monotonic()
        blue.run(f"pg_dump {blue.conn} -Fd -j {j} {self.compress} -f {src} {shlex.quote(self.spec.name)}")
        t1 = time.monotonic()
        send = subprocess.Popen(blue.argv(f"tar -C {src} -cf - ."), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        recv = subprocess.run(green.argv(f"mkdir -p {dst} && tar -C {dst} -xf - && sync -f {dst}"), stdin=send.stdout,
                              capture_output=True)
        send.stdout.close()
        if send.wait() or recv.returncode:
            raise RuntimeError(f"baseline copy failed: {recv.stderr.decode(errors='replace')[-500:]}")
        t2 = time.monotonic()
        green.run(f"createdb {green.conn} -O {shlex.quote(self.spec.owner)} {new} && "
                  f"pg_restore {green.conn} -j {j} -d {new} {dst}")
        t3 = time.monotonic()
        dump_bytes = int(blue.run(f"du -sb {src}").split()[0])
        self.record({"case": "baseline", "size_mb": size_mb, "db_mb": db_mb, "round": rnd, "ok": True,
                     "seconds": round(t3 - t0, 3), "dump": round(t1 - t0, 3), "copy": round(t2 - t1, 3),
                     "restore": round(t3 - t2, 3), "dump_bytes": dump_bytes, "jobs": j,
                     "compress": self.compress or "pg_dump's default"})
        self.clusters["green"].psql("postgres", f"DROP DATABASE {ident(new)};")
        blue.run(f"rm -rf {src}")
        green.run(f"rm -rf {dst}")

    def replicate_available(self) -> bool:
        if self.replicate_note is None and "max_freeze" not in inspect.signature(api.transfer).parameters:
            self.replicate_note = "not available: this checkout's api.transfer has no replicate mode (no max_freeze)"
            log(f"replicate: {self.replicate_note}")
        return self.replicate_note is None

    def run(self) -> None:
        for size in self.args.sizes:
            db_mb = self.grow(size)
            for rnd in range(self.args.rounds):
                self.transfer("copy", size, db_mb, rnd)
                self.baseline(size, db_mb, rnd)
                if self.replicate_available():
                    self.transfer("replicate", size, db_mb, rnd)

    # -- report ------------------------------------------------------------------------------------------
    def report(self) -> dict:
        summary = summarize(self.rows, self.args.sizes, self.replicate_note)
        doc = {"postgres": getattr(self, "postgres", None), "jobs": self.args.jobs, "rounds": self.args.rounds,
               "media": {"files": self.args.media_files, "mb": self.args.media_mb},
               "baseline_compress": getattr(self, "compress", None) or "pg_dump's default",
               "rows": self.rows, "summary": summary}
        if self.args.json:
            Path(self.args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(self.args.json).write_text(json.dumps(doc, indent=1))
        from rich.console import Console

        console = Console(stderr=True, width=None if sys.stderr.isatty() else 132)
        console.print(freeze_table(summary))
        console.print(ratio_table(summary))
        if self.replicate_note:
            console.print(f"replicate: {self.replicate_note}")
        return doc

    def stop(self) -> None:
        if self.colours:
            self.colours.stop()  # its supervisors and its clusters
        elif self.stop_clusters:  # the colours were never made
            self.stop_clusters(self.clusters)
        for ngx in self.nginxes:
            ngx.stop()
        if self.rig:
            self.rig.stop()


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="dkbench-transfer-", dir=os.environ.get("DEPLOYKIT_BENCH_DIR", "/tmp")))
    os.chmod(work, 0o755)
    bench = TransferBench(args, work)
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
