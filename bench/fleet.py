"""A release to a fleet of N sshd hosts against a release to one host, all at once (issue 12: ≤ 1.3×).

    invoke bench --only fleet [--rounds R] [--json FILE]   (python bench/fleet.py --hosts 8 --rounds 5)

Two stages of the sample project (deploykit_testing.plain_fleet.make_fleet): "one"
(1 sshd host) and "fleet" (--hosts sshd hosts, default 8), every host an app
host with supervisord + gunicorn, the first the primary that runs the
migrations; both stages' databases on one PostgreSQL cluster made by initdb
(each stage its own database). Both stages are released v1.0 then v1.1
first (both release environments built on every host: those two are
reported apart, `warmup: true`, not in the medians; a round reuses them, as
a release whose requirements did not change does). Then, --rounds times, interleaved
(the order alternates by round), each stage gets `api.release` of the other
tag (v1.1 -> v1.0 -> v1.1 ...: every round really releases: upload, env,
migrate, collectstatic, switch, restart, health on every host).

Measured per release: the wall time; per step the slowest host (max) and
the sum over hosts, so the cost of each extra host is visible; and CPU
seconds: the controller (this process and its children, e.g. git archive),
each host's (its sshd and every session, agent and helper under it, plus its
supervisord and gunicorn: /proc, the live processes and those reaped), the
PostgreSQL server's, and the whole machine's busy time (/proc/stat);
"other" is the machine's less ours: whoever else shares the machine (every
process of a run is counted under its host: a closing host waits for its
agent, which reaps its zygote, so none is left to init). A
machine of C cores cannot do the release's own CPU work (controller, hosts,
PostgreSQL) in less than its sum over C: the "CPU floor" says how much of
the fleet's wall time that explains, before any waiting. The "app's own
floor" is the part of it no deploy tool can leave out, the same Django work
on every host: the app's start under supervisord (gunicorn, measured) and
one Django set-up per host (its checks and collectstatic; measured after the
rounds, `manage.py shell -c pass` in a host's live release, median of 3).
One JSON line per release on stdout; the tables on stderr; --json FILE holds
every row and the summary.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
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

TARGET = 1.3  # the fleet's release time over one host's
TAGS = ("v1.0", "v1.1")


def log(msg: str = "") -> None:
    print(msg, file=sys.stderr, flush=True)


# -- CPU from /proc ----------------------------------------------------------------------------------------
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(ppid, utime + stime + cutime + cstime in seconds) of a live process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), sum(int(x) for x in fields[11:15]) / TICK


def tree_cpu(roots: list[int]) -> float:
    """CPU seconds of each root and everything under it: the live processes' own and what they reaped."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st:
                stats[int(entry)] = st
    kids: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        kids.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, [r for r in roots if r in stats], set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo += kids.get(pid, [])
    return total


def busy_cpu_seconds() -> float:
    """CPU seconds every core of this machine ran anything but idle, iowait and steal (/proc/stat)."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / TICK


def own_cpu_seconds() -> float:
    """This controller process (all its threads) and the children it waited for (git archive)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuMeter:
    """CPU seconds of the controller, each host of a fleet, the PostgreSQL server and the whole machine."""

    def __init__(self, fleet, pg):
        self.hosts = [(h.name, h.process.pid, sup.pid) for h, sup in zip(fleet.hosts, fleet.stage.supervisors)]
        self.pg_pid = pg.postmaster_pid

    def read(self) -> dict:
        # per host apart: its sshd (deploykit's sessions: the agent, its helpers, the Django sessions they
        # start) and its supervisord (the app: supervisord and gunicorn's start-up)
        sessions = {name: tree_cpu([sshd]) for name, sshd, _ in self.hosts}
        app = {name: tree_cpu([sup]) for name, _, sup in self.hosts}
        return {"controller": own_cpu_seconds(), "machine": busy_cpu_seconds(),
                "postgres": tree_cpu([self.pg_pid]) if self.pg_pid else 0.0,
                "hosts": {name: sessions[name] + app[name] for name in sessions}, "sessions": sessions, "app": app}

    @staticmethod
    def delta(before: dict, after: dict) -> dict:
        hosts = {k: round(after["hosts"][k] - before["hosts"][k], 3) for k in before["hosts"]}
        out = {k: round(after[k] - before[k], 3) for k in ("controller", "machine", "postgres")}
        out["hosts"] = hosts
        out["hosts_sum"] = round(sum(hosts.values()), 3)
        for part in ("sessions", "app"):
            if part in before and part in after:
                out[f"{part}_sum"] = round(sum(after[part][k] - before[part][k] for k in before[part]), 3)
        out["other"] = round(out["machine"] - out["controller"] - out["postgres"] - out["hosts_sum"], 3)
        return out


def settled(fleet, timeout: float = 5.0) -> None:
    """Wait until every host's sshd has reaped the run's sessions (their CPU is then in the sshd's counters)."""
    deadline = time.monotonic() + timeout
    for h in fleet.hosts:
        while time.monotonic() < deadline:
            kids = [e for e in os.listdir("/proc") if e.isdigit() and (_stat(int(e)) or (0,))[0] == h.process.pid]
            if not kids:
                break
            time.sleep(0.05)


def django_setup_cpu(host, runs: int = 3) -> float | None:
    """CPU seconds of one Django set-up of the live release on host (median of `runs`): what every host pays
    once to ask the app anything (deploykit's check_database + collectstatic session; Capistrano pays it twice)."""
    current = Path(os.path.realpath(host.deploy_to / "current"))
    python = current / ".venv" / "bin" / "python"
    if not python.exists():
        return None
    times = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([str(python), "manage.py", "shell", "-v", "0", "-c", "pass"], cwd=current, check=True,
                       capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times)


# -- one release ---------------------------------------------------------------------------------------------
def step_breakdown(records) -> dict[str, dict]:
    """'playbook/step' -> {max, sum, hosts} over the hosts the step ran on, in the order the steps ended."""
    out: dict[str, dict] = {}
    for rec in records:
        key = f"{rec.playbook}/{rec.step}"
        d = out.setdefault(key, {"max": 0.0, "sum": 0.0, "hosts": 0})
        d["max"] = round(max(d["max"], rec.seconds), 3)
        d["sum"] = round(d["sum"] + rec.seconds, 3)
        d["hosts"] += 1
    return out


def release_once(fleet, meter: CpuMeter, tag: str) -> dict:
    settled(fleet)
    before = meter.read()
    start = time.monotonic()
    result = api.release(fleet.config, fleet.name, tag)
    wall = time.monotonic() - start
    settled(fleet)
    cpu = CpuMeter.delta(before, meter.read())
    if not result.ok:
        raise RuntimeError(f"the release of {tag} to {fleet.name} failed: {result.error}")
    return {"stage": fleet.name, "hosts": len(fleet.hosts), "tag": tag, "wall": round(wall, 3), "cpu": cpu,
            "load": [round(x, 2) for x in os.getloadavg()], "steps": step_breakdown(result.records)}


# -- the summary (pure) ----------------------------------------------------------------------------------------
def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(rows: list[dict], n: int, cores: int, django_setup: float | None = None) -> dict:
    """Medians per stage; the ratio fleet/one against TARGET; CPU; per step max/sum and the cost per extra host."""
    one = [r for r in rows if r["hosts"] == 1]
    many = [r for r in rows if r["hosts"] == n]
    s = {"hosts": n, "cores": cores, "rounds": min(len(one), len(many)),
         "wall_1": median(r["wall"] for r in one), f"wall_{n}": median(r["wall"] for r in many)}
    s["ratio"] = s[f"wall_{n}"] / s["wall_1"] if s["wall_1"] and s[f"wall_{n}"] else None
    s["target"] = TARGET
    s["met"] = s["ratio"] is not None and s["ratio"] <= TARGET
    for label, group in (("1", one), (str(n), many)):
        s[f"cpu_{label}"] = {k: median(r["cpu"].get(k) for r in group)
                             for k in ("controller", "hosts_sum", "sessions_sum", "app_sum", "postgres", "machine",
                                       "other")}
        s[f"cpu_{label}"]["per_host"] = median(r["cpu"]["hosts_sum"] / r["hosts"] for r in group)
    c1, cn = s["cpu_1"], s[f"cpu_{n}"]
    if c1["hosts_sum"] is not None and cn["hosts_sum"] is not None:
        # what one more host adds to the work every core must share, and the wall time that work alone needs
        s["cpu_per_extra_host"] = (cn["hosts_sum"] - c1["hosts_sum"]) / (n - 1) if n > 1 else None
        s["cpu_floor"] = ((cn["controller"] or 0.0) + cn["hosts_sum"] + (cn["postgres"] or 0.0)) / cores
        s["cpu_floor_ratio"] = s["cpu_floor"] / s["wall_1"] if s["wall_1"] else None
        if django_setup is not None and cn.get("app_sum") is not None:
            s["django_setup_cpu"] = django_setup
            s["app_floor"] = (cn["app_sum"] + n * django_setup) / cores
            s["app_floor_ratio"] = s["app_floor"] / s["wall_1"] if s["wall_1"] else None
    steps: dict[str, dict] = {}
    for r in many + one:
        for k in r["steps"]:
            steps.setdefault(k, {})
    for k in steps:
        def m(group, field):
            return median(r["steps"][k][field] for r in group if k in r["steps"])
        d = {"max_1": m(one, "max"), f"max_{n}": m(many, "max"), f"sum_{n}": m(many, "sum")}
        if d["max_1"] is not None and d[f"sum_{n}"] is not None and n > 1:
            d["per_extra_host"] = (d[f"sum_{n}"] - d["max_1"]) / (n - 1)
        steps[k] = d
    s["steps"] = steps
    return s


def first_releases(warmups: list[dict]) -> list[dict]:
    """The first release of each tag per stage (its environment built on every host): wall, release_env, CPU."""
    return [{"stage": r["stage"], "hosts": r["hosts"], "tag": r["tag"], "wall": r["wall"],
             "release_env": r["steps"].get("release/release_env"), "cpu_hosts": r["cpu"]["hosts_sum"]}
            for r in warmups]


def _f(v, fmt="{:6.2f}") -> str:
    return fmt.format(v) if v is not None else "     -"


def print_tables(s: dict) -> None:
    n = s["hosts"]
    log(f"\nmedians of {s['rounds']} interleaved rounds (api.release, a tag change each time); load average "
        f"now {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    log(f"{'':14}{'1 host':>9}{str(n) + ' hosts':>10}{'ratio':>8}{'target':>8}")
    log(f"{'release wall':14}{_f(s['wall_1'])}s {_f(s[f'wall_{n}'])}s {_f(s['ratio'])}× {s['target']:6.2f}×  "
        f"{'met' if s['met'] else 'NOT met'}")
    log(f"\nCPU seconds per release ({s['cores']} cores; hosts = sshd sessions, agents, helpers, Django, "
        "supervisord, gunicorn)")
    log(f"{'':14}{'controller':>11}{'hosts':>8}{'per host':>9}{'postgres':>9}{'other':>8}{'machine':>9}")
    for label in ("1", str(n)):
        c = s[f"cpu_{label}"]
        log(f"{label + ' host(s)':14}{_f(c['controller'], '{:11.2f}')}{_f(c['hosts_sum'], '{:8.2f}')}"
            f"{_f(c['per_host'], '{:9.2f}')}{_f(c['postgres'], '{:9.2f}')}{_f(c['other'], '{:8.2f}')}"
            f"{_f(c['machine'], '{:9.2f}')}")
    for label in ("1", str(n)):
        c = s[f"cpu_{label}"]
        if c.get("sessions_sum") is not None and c.get("app_sum") is not None:
            log(f"{label + ' host(s)':14} hosts = deploykit's sessions (sshd: agent, helpers, Django sessions) "
                f"{c['sessions_sum']:.2f} + the app (supervisord, gunicorn) {c['app_sum']:.2f}")
    if s.get("cpu_floor") is not None:
        log(f"one more host costs {s['cpu_per_extra_host']:.2f} CPU s; the {n}-host release's own CPU (controller, "
            f"hosts, postgres) over {s['cores']} cores is {s['cpu_floor']:.2f} s = {s['cpu_floor_ratio']:.2f}× the "
            "1-host wall, before any waiting")
    if s.get("app_floor") is not None:
        log(f"the app's own floor: its start under supervisord ({s[f'cpu_{n}']['app_sum']:.2f} s at {n} hosts) + one "
            f"Django set-up per host ({s['django_setup_cpu']:.2f} s each) over {s['cores']} cores is "
            f"{s['app_floor']:.2f} s = {s['app_floor_ratio']:.2f}× the 1-host wall: the same Django work on every "
            "host, with every host on the same cores")
    for r in s.get("first_releases") or []:
        env = r["release_env"] or {}
        log(f"first release of {r['tag']} to {r['hosts']} host(s): {r['wall']:.2f} s, release_env max "
            f"{env.get('max', 0):.2f} s sum {env.get('sum', 0):.2f} s, CPU hosts {r['cpu_hosts']:.2f} s "
            "(each host builds the tag's environment: not in the medians)")
    log(f"\nper step, seconds: 1 host; {n} hosts the slowest host (max) and the sum over hosts; "
        "per extra host = (sum - 1-host) / (n - 1)")
    log(f"{'step':34}{'1 host':>8}{'max ' + str(n):>8}{'sum ' + str(n):>8}{'per +1':>8}")
    for k, d in s["steps"].items():
        log(f"{k:34}{_f(d['max_1'], '{:8.3f}')}{_f(d[f'max_{n}'], '{:8.3f}')}{_f(d[f'sum_{n}'], '{:8.3f}')}"
            f"{_f(d.get('per_extra_host'), '{:8.3f}')}")


# -- main ------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="bench/fleet.py", description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=8, help="hosts of the fleet compared with one (default 8)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    ap.add_argument("--json", help="write every row and the summary here (JSON)")
    args = ap.parse_args(argv)
    if args.hosts < 2 or args.rounds < 1:
        ap.error("--hosts must be at least 2 and --rounds at least 1")
    from deploykit_testing.plain_fleet import make_fleet
    from deploykit_testing.postgres import PgCluster
    from deploykit_testing.samplerepo import build_sample_repo
    from deploykit_testing.wheelhouse import build_wheelhouse

    work = Path(tempfile.mkdtemp(prefix="dkbench-fleet-", dir=os.environ.get("DEPLOYKIT_BENCH_DIR", "/tmp")))
    os.chmod(work, 0o755)  # the cluster's server may run as another user
    pg, fleets, rows, warmups, failed, django_setup = None, [], [], [], None, None
    try:
        log(f"starting PostgreSQL, 1 + {args.hosts} sshd hosts, the sample repository ...")
        pg = PgCluster.start(work / "pg")
        repo = work / "sample" / "library"
        build_sample_repo(repo)
        wheelhouse = build_wheelhouse(work / "wheelhouse")
        for n, name in ((1, "one"), (args.hosts, "fleet")):
            fleets.append(make_fleet(n, work / name, name=name, pg=pg, repo=repo, wheelhouse=wheelhouse,
                                     keep_releases=5))
        meters = [CpuMeter(f, pg) for f in fleets]
        log("first releases (v1.0, then v1.1: both environments built) ...")
        for f, meter in zip(fleets, meters):
            for tag in TAGS:
                row = release_once(f, meter, tag)
                row.update({"round": 0, "warmup": True})  # not in the medians: the first of each tag builds
                warmups.append(row)                        # its environment on every host (pip install)
                print(json.dumps(row), flush=True)
        tags = {f.name: TAGS[-1] for f in fleets}
        for r in range(1, args.rounds + 1):
            order = list(zip(fleets, meters))
            for f, meter in order if r % 2 else order[::-1]:
                tags[f.name] = TAGS[0] if tags[f.name] == TAGS[1] else TAGS[1]
                row = release_once(f, meter, tags[f.name])
                row["round"] = r
                rows.append(row)
                print(json.dumps(row), flush=True)
                log(f"round {r}: {f.name} ({row['hosts']} host(s)) {row['tag']} {row['wall']:.2f} s, "
                    f"CPU hosts {row['cpu']['hosts_sum']:.2f} s, machine {row['cpu']['machine']:.2f} s")
        django_setup = django_setup_cpu(fleets[-1].hosts[-1])
    except BaseException as exc:  # report what was measured, then fail
        failed = exc
        log(f"the bench stopped: {exc!r}")
    finally:
        for f in fleets:
            f.stop()
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)
    summary = summarize(rows, args.hosts, os.cpu_count() or 1, django_setup) if rows else None
    if summary:
        summary["first_releases"] = first_releases(warmups)
        print_tables(summary)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "warmups": warmups, "summary": summary}, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
