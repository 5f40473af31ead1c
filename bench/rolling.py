"""A rolling release's own time against the sum of its pauses and health checks, behind a real nginx.

    invoke bench --only rolling [--rounds 3]   (python bench/rolling.py --hosts 4 --pause 5 --rounds 3)

The fleet rig of the tests (deploykit_testing.fleet): --hosts sshd app hosts
of the sample project under supervisord (one PostgreSQL database of an
initdb cluster), an unprivileged nginx on one more host balancing over them,
and a load loop of reads and writes through nginx during every release.
Each round releases the other of two tags with the same migrations (v1.1 and
v1.1-dotenv), so every round really switches and restarts every host, in
batches [1, 50%, 100%] with `pause` seconds after each batch but the last.

The rollout's own time is the wall time of its `rollout` phase (the first
batch's first step's start to the last gate's end, from the start times and
durations of the run's step records: the engine's work between steps counts;
`steps_sum` is the same without those gaps, each batch's slowest host per step). What
it cannot go below is the sum, over its batches, of the pause and of the
batch's health check (the slowest host of the batch: the app starting and
answering). The rest is the rollout's overhead: drains and undrains (nginx
reloads, waiting out the old workers), the switch, the stop of the old
processes, the gate's reading of the access log. Target: overhead ≤ 10% of
that sum. One JSON line per round; a table of medians with the breakdown.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from deploykit import api  # noqa: E402

from bench.testbed import colour_modules  # noqa: E402

TAGS = ("v1.1-dotenv", "v1.1")
TARGET = 0.10
STOPPED = re.compile(r"the old one stopped in ([0-9.]+) s")  # restart_processes, supervisord's respawn
DRAINED = re.compile(r"old workers gone after ([0-9.]+) s")  # drain, nginx's old workers ending their requests


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def rollout_breakdown(result) -> dict:
    """Seconds of a rolling release's rollout phase, from its step records (they are in run order)."""
    recs = [r for r in result.records if r.playbook == "release_rolling" and r.phase == "rollout"]
    batches = result.data["rollout"]["batches"]
    per_step: dict[str, float] = {}
    for r in recs:
        per_step[r.step] = per_step.get(r.step, 0.0) + r.seconds
    # each batch: its steps run on its hosts in parallel; the batch takes the slowest host's per step
    health, pauses, batch_walls = 0.0, 0.0, []
    app_stop = nginx_wait = 0.0  # what the app server's graceful stop and nginx's old workers took themselves
    i = 0
    for batch in batches:
        names = set(batch)
        seen_gate = False
        spans: dict[str, float] = {}
        stops = [0.0]
        while i < len(recs) and not seen_gate:
            r = recs[i]
            if r.host in names or r.host == "controller":
                spans[r.step] = max(spans.get(r.step, 0.0), r.seconds)
                said = STOPPED.search(r.message) if r.step == "restart_processes" else None
                stops.append(float(said.group(1)) if said else 0.0)
                said = DRAINED.search(r.message) if r.step == "drain" else None
                nginx_wait += float(said.group(1)) if said else 0.0
            if r.step == "gate":
                seen_gate = True
            i += 1
        health += spans.get("health_check", 0.0)
        app_stop += max(stops)
        batch_walls.append(sum(spans.values()))
    for r in recs:
        if r.step == "gate" and "paused" in r.message:
            pauses += float(r.message.rsplit("paused ", 1)[1].rstrip("s"))
    # the phase's wall time: the engine's work between steps (heartbeats, records) counts too
    wall = max(r.started + r.seconds for r in recs) - min(r.started for r in recs) if recs else 0.0
    return {"steps": per_step, "health": health, "pauses": pauses, "batch_walls": batch_walls, "wall": wall,
            "app_stop": app_stop, "nginx_wait": nginx_wait}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--hosts", type=int, default=4)
    ap.add_argument("--pause", type=float, default=5.0)
    ap.add_argument("--json", help="write the results here (JSON)")
    args = ap.parse_args(argv)
    from deploykit_testing.fleet import make_balanced_fleet
    from deploykit_testing.load import LoadLoop

    m = colour_modules()
    work = Path(tempfile.mkdtemp(prefix="dkbench-rolling-"))
    pg = rig = fleet = None
    nginxes = []
    rows = []
    try:
        log(f"starting PostgreSQL, {args.hosts + 1} sshd hosts, nginx, the sample repository ...")
        pg = m.PgCluster.start(work / "cluster")
        repo = work / "sample" / "library"
        m.build_sample_repo(repo)
        wheelhouse = m.build_wheelhouse(work / "wheelhouse")
        rig = m.start_ssh_hosts(work / "ssh", args.hosts + 1)

        def nginx_factory(prefix, upstream, servers, **extra):
            ngx = m.Nginx.start(prefix, upstream, servers, **extra)
            nginxes.append(ngx)
            return ngx
        fleet = make_balanced_fleet(rig, pg, repo, wheelhouse, nginx_factory, n=args.hosts)
        doc = yaml.safe_load(fleet.config_path.read_text())
        doc["rollout"].update({"batches": [1, "50%", "100%"], "pause": args.pause, "max_error_rate": "0%"})
        fleet.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        first = api.release(fleet.config(), "prod", TAGS[1], all_at_once=True)
        if not first.ok:
            raise RuntimeError(f"first release failed: {first.error}")
        for r in range(1, args.rounds * 2 + 1):
            tag = TAGS[(r - 1) % 2]
            loop = LoadLoop(fleet.nginx.url(), limit=1_000_000, timeout=10).start()
            try:
                loop.wait_for(10, timeout=120)
                start = time.monotonic()
                result = api.release(fleet.config(), "prod", tag)
                wall = time.monotonic() - start
            finally:
                records = loop.stop()
            if not result.ok:
                raise RuntimeError(f"round {r}: the rolling release of {tag} failed: {result.error}")
            b = rollout_breakdown(result)
            own = b["wall"]
            floor = b["health"] + b["pauses"]
            row = {"round": r, "tag": tag, "hosts": args.hosts, "wall": round(wall, 3), "rollout": round(own, 3),
                   "pauses": round(b["pauses"], 3), "health": round(b["health"], 3), "floor": round(floor, 3),
                   "overhead": round(own - floor, 3), "steps_sum": round(sum(b["batch_walls"]), 3),
                   "app_stop": round(b["app_stop"], 3), "nginx_wait": round(b["nginx_wait"], 3), "overhead_ratio": round((own - floor) / floor, 4),
                   "steps": {k: round(v, 3) for k, v in b["steps"].items()},
                   "requests": len(records), "failed": sum(1 for x in records if not x.ok)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        if fleet:
            fleet.stop()
        for ngx in nginxes:
            ngx.stop()
        if rig:
            rig.stop()
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    def med(key):
        return statistics.median(r[key] for r in rows)
    summary = {k: med(k) for k in ("wall", "rollout", "pauses", "health", "floor", "overhead", "overhead_ratio",
                                    "app_stop", "nginx_wait")}
    summary["failed_requests"] = sum(r["failed"] for r in rows)
    summary["requests"] = sum(r["requests"] for r in rows)
    steps = sorted({k for r in rows for k in r["steps"]})
    summary["steps"] = {k: statistics.median(r["steps"].get(k, 0.0) for r in rows) for k in steps}
    log(f"\nrolling release of {args.hosts} hosts behind nginx, batches [1, 50%, 100%], pause {args.pause:g}s; "
        f"medians of {len(rows)} releases under load ({summary['requests']} requests, "
        f"{summary['failed_requests']} failed)")
    log(f"  release wall {summary['wall']:.2f}s; rollout phase {summary['rollout']:.2f}s = pauses "
        f"{summary['pauses']:.2f}s + health checks {summary['health']:.2f}s + overhead {summary['overhead']:.2f}s "
        f"({summary['overhead_ratio']:.1%} of pauses + health; target ≤ {TARGET:.0%}: "
        f"{'met' if summary['overhead_ratio'] <= TARGET else 'NOT met'})")
    own = summary["overhead"] - summary["app_stop"] - summary["nginx_wait"]
    log(f"  of the overhead: gunicorn's own graceful stop {summary['app_stop']:.2f}s (each batch's slowest), "
        f"nginx's old workers ending their requests {summary['nginx_wait']:.2f}s, deploykit's own work "
        f"{own:.2f}s ({own / summary['floor']:.1%})")
    log("  rollout steps, seconds summed over hosts (median):")
    for k, v in sorted(summary["steps"].items(), key=lambda kv: -kv[1]):
        log(f"    {k:20} {v:7.3f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
