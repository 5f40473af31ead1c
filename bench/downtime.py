"""Downtime of a release and of a recovery, with a database of about N MB, per snapshot budget.

    invoke bench --only downtime [--size-mb 1500] [--json bench/results]

One sshd test host with the sample project under supervisord + gunicorn, its
PostgreSQL database grown to about N MB (fsync on) with the data path bench's
users/orders tables. A thread asks the app's /health/ every 20 ms throughout.
For each `snapshot_budget` given (default: 2 s, the default, and 60 s, which
takes the snapshot), in one run:

- release v1.0 -> v1.1: release downtime = the longest time between two
  answers 200 while the release runs (no process serving, or one not
  answering yet);
- rollback --to-tag v1.0 (to start the next case from the same place);
- release v1.3-broken-health: recovery downtime = from the moment the failed
  health check is recorded (failure detected) to the first answer 200 from
  the previous release (version 1.0).

Prints one JSON line per case, then a table; whether the snapshot was taken
comes from the release's own `choose_snapshots` line.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit import api  # noqa: E402
from deploykit.config import load_config  # noqa: E402
from deploykit.engine import runner as engine_runner  # noqa: E402

from bench.pg_data_path import DATASET_SQL  # noqa: E402
from bench.testbed import rig_modules  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Poller:
    """Asks URL every `every` seconds from a thread; keeps (asked, answered, status, version)."""

    def __init__(self, url: str, every: float = 0.02):
        self.url, self.every = url, every
        self.answers: list[tuple[float, float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self._stop.is_set():
            asked = time.monotonic()
            status, version = 0, ""
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    status = resp.status
                    version = json.loads(resp.read() or b"{}").get("version", "")
            except urllib.error.HTTPError as e:
                status = e.code
            except Exception:  # refused, reset, timed out: nobody serving
                status = 0
            self.answers.append((asked, time.monotonic(), status, version))
            self._stop.wait(max(0.0, self.every - (time.monotonic() - asked)))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def longest_gap(self, start: float, end: float) -> float:
        """Longest time between two answers 200 within [start, end] (the edges count as served)."""
        served = [start] + [a for a, _, s, _ in self.answers if start <= a <= end and s == 200] + [end]
        return max(b - a for a, b in zip(served, served[1:]))

    def first_served_after(self, t: float, version: str) -> float | None:
        for asked, answered, status, v in self.answers:
            if asked >= t and status == 200 and v == version:
                return answered
        return None


class StepClock(engine_runner.StepRecord):
    """A StepRecord that notes when it was made (= when its step ended)."""

    ended: list = []

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        StepClock.ended.append((time.monotonic(), self.playbook, self.step, self.status))


def with_budget(stage, budget: float) -> object:
    raw = yaml.safe_load(stage.config_path.read_text())
    raw["snapshot_budget"] = budget
    path = stage.config_path.with_name(f"deploykit-budget-{budget:g}.yaml")
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_config(path)


def snapshot_said(result) -> str:
    for rec in result.records:
        if rec.step == "choose_snapshots":
            return rec.message
    return ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mb", type=int, default=1500)
    ap.add_argument("--budgets", default="2,60", help="snapshot_budget values, comma-separated (seconds)")
    ap.add_argument("--json", help="write the results here (JSON)")
    args = ap.parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",")]
    m = rig_modules()
    work = Path(tempfile.mkdtemp(prefix="dkbench-downtime-"))
    pg = rig = stage = None
    rows: list[dict] = []
    engine_runner.StepRecord = StepClock
    try:
        log("starting PostgreSQL (fsync on), one sshd host, the sample project ...")
        pg = m.PgCluster.start(work / "cluster")
        pg.psql("postgres", "ALTER SYSTEM SET fsync = on; ALTER SYSTEM SET shared_buffers = '256MB'; "
                            "ALTER SYSTEM SET max_wal_size = '4GB';")
        pg.restart()
        repo = work / "sample" / "library"
        m.build_sample_repo(repo)
        rig = m.start_ssh_hosts(work / "ssh", 1)
        stage = m.make_stage(rig, pg, repo, name="one", wheelhouse=m.build_wheelhouse(work / "wheelhouse"),
                             keep_releases=2)
        first = api.release(load_config(stage.config_path), "one", "v1.0")
        if not first.ok:
            raise RuntimeError(f"first release failed: {first.error}")
        users = max(1000, args.size_mb * 1570)
        log(f"growing the database: {users} users, {users * 3} orders ...")
        pg.psql(stage.db, f"SET ROLE {m.OWNER};" + DATASET_SQL.format(users=users, orders=users * 3))
        size_mb = int(pg.psql("postgres", f"SELECT pg_database_size('{stage.db}') / 1048576;").strip())
        log(f"database: {size_mb} MB")
        url = stage.url(stage.primary, "/health/")
        for budget in budgets:
            cfg = with_budget(stage, budget)
            with Poller(url) as poll:
                time.sleep(0.5)
                t0 = time.monotonic()
                res = api.release(cfg, "one", "v1.1")
                t1 = time.monotonic()
                if not res.ok:
                    raise RuntimeError(f"release v1.1 failed: {res.error}")
                row = {"case": "release", "budget": budget, "size_mb": size_mb, "wall": t1 - t0,
                       "downtime": poll.longest_gap(t0, t1), "snapshot": snapshot_said(res)}
                rows.append(row)
                print(json.dumps(row), flush=True)
                back = api.rollback(cfg, "one", to_tag="v1.0")
                if not back.ok:
                    raise RuntimeError(f"rollback to v1.0 failed: {back.error}")
                time.sleep(0.5)
                StepClock.ended = []
                t0 = time.monotonic()
                res = api.release(cfg, "one", "v1.3-broken-health")
                t1 = time.monotonic()
                time.sleep(0.5)
            failed = [t for t, book, step, status in StepClock.ended
                      if book == "release" and step == "health_check" and status == "failed"]
            if res.ok or not failed:
                raise RuntimeError(f"the broken release was not recovered as expected: {res.error}")
            served = poll.first_served_after(failed[0], "1.0")
            row = {"case": "recovery", "budget": budget, "size_mb": size_mb, "wall": t1 - t0,
                   "downtime": (served - failed[0]) if served else None,
                   "outage": poll.longest_gap(t0, t1), "snapshot": snapshot_said(res)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        engine_runner.StepRecord = StepClock.__mro__[1]
        if stage:
            stage.stop()
        if rig:
            rig.stop()
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"\n{'case':9} {'budget':>7} {'size':>8} {'wall':>8} {'downtime':>9} {'goal':>6}  snapshot")
    for r in rows:
        goal = "2 s" if r["case"] == "release" else "5 s"
        down = f"{r['downtime']:8.2f}s" if r["downtime"] is not None else "    never"
        print(f"{r['case']:9} {r['budget']:6g}s {r['size_mb']:6d}MB {r['wall']:7.1f}s {down} {goal:>6}  "
              f"{r['snapshot'][:110]}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
