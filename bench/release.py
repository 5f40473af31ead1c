"""Release and rollback of the sample project: deploykit against Capistrano 3, and 1 host against 8.

    invoke bench --only release [--rounds 5] [--json bench/results/release.json]

One PostgreSQL cluster (initdb), sshd test hosts on loopback, the sample
Django project under supervisord + gunicorn. In each round, interleaved on the
same machine: deploykit releases v1.1 to one host, Capistrano 3 (Debian's
package) deploys v1.1 to the same host doing the same Django work (migrate,
collectstatic, check, supervisorctl restart, an HTTP health check with
retries), deploykit releases v1.1 to eight hosts; then each rolls back to
v1.0 (deploykit `rollback --to-tag v1.0` unapplies v1.1's migrations;
`cap deploy:rollback` only switches the link and restarts).

deploykit runs in-process through `deploykit.api` so that every command it
sends to a host can be timed: its own overhead is the wall time minus the time
spent inside the work itself (migrate, collectstatic, check, the process
restart and the HTTP health check, as a union of intervals across hosts). The
`deploykit` program's own start-up (importing it and every module a run
loads) is measured separately and added to deploykit's wall time in the
ratios, since `cap` is timed as a whole command. Prints one JSON line per run, then medians and ratios.
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploykit import api, djangoapp  # noqa: E402
from deploykit.config import load_config  # noqa: E402
from deploykit.transport.host import Host  # noqa: E402

from bench.testbed import rig_modules  # noqa: E402

WORK_MARKS = {  # the text of a command, or "django ACTION" for a request to the run's Django session
    "migrate": ("manage.py migrate", "django apply"),
    "collectstatic": ("manage.py collectstatic", "django collectstatic"),
    "check": ("manage.py check", "django check"),
    "restart": ("supervisorctl", "supervisor start", "supervisor stop", "supervisor restart", "supervisor status"),
    "health": ("http_check", "http_probe"),  # http_probe: one attempt (the controller drives them)
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- timing deploykit's commands ---------------------------------------------------------------------------
class CommandClock:
    """Wraps Host.run and Host.helper: the intervals spent in the work every deployment tool must do."""

    def __init__(self):
        self.intervals: list[tuple[str, float, float]] = []
        self.calls = 0
        self._local = threading.local()
        self._lock = threading.Lock()

    @staticmethod
    def kind_of(text: str) -> str | None:
        for kind, marks in WORK_MARKS.items():
            if any(m in text for m in marks):
                return kind
        return None

    def _wrap(self, original, describe):
        clock = self

        def timed(host, *args, **kwargs):
            depth = getattr(clock._local, "depth", 0)
            clock._local.depth = depth + 1
            start = time.monotonic()
            try:
                return original(host, *args, **kwargs)
            finally:
                clock._local.depth = depth
                if depth == 0:
                    end = time.monotonic()
                    kind = clock.kind_of(describe(args, kwargs))
                    with clock._lock:
                        clock.calls += 1
                        if kind:
                            clock.intervals.append((kind, start, end))
        return timed

    def install(self):
        self._saved = (Host.run, Host.helper, djangoapp.ask)
        Host.run = self._wrap(Host.run, lambda a, k: str(a[0] if a else k.get("command", "")))
        Host.helper = self._wrap(Host.helper, lambda a, k: " ".join(str(x) for x in a[:2]))
        djangoapp.ask = self._wrap(djangoapp.ask, lambda a, k: f"django {a[2]}")  # (ctx, host, dir, action, ...)

    def uninstall(self):
        Host.run, Host.helper, djangoapp.ask = self._saved

    def reset(self):
        with self._lock:
            self.intervals, self.calls = [], 0

    def work_seconds(self) -> tuple[float, dict]:
        """Union of the work intervals (hosts work in parallel), and the per-kind union."""
        def union(spans):
            total, end = 0.0, None
            for s, e in sorted(spans):
                if end is None or s > end:
                    total += e - s
                    end = e
                elif e > end:
                    total += e - end
                    end = e
            return total
        by_kind = {k: union([(s, e) for kk, s, e in self.intervals if kk == k]) for k in WORK_MARKS}
        return union([(s, e) for _, s, e in self.intervals]), by_kind


# -- Capistrano ----------------------------------------------------------------------------------------------
CAPFILE = """require "capistrano/setup"
require "capistrano/deploy"
require "capistrano/scm/git"
install_plugin Capistrano::SCM::Git
"""

DEPLOY_RB = """lock "~> 3.17"
set :application, "library"
set :repo_url, {repo!r}
set :branch, ENV.fetch("TAG", "v1.1")
set :deploy_to, {deploy_to!r}
set :keep_releases, 5
set :linked_files, [".env"]
set :linked_dirs, [".venv"]
set :format_options, log_file: {log!r}
set :ssh_options, {{keys: [{key!r}], keys_only: true, port: {port}, user: {user!r},
                   user_known_hosts_file: {known!r}, verify_host_key: :always}}
server {address!r}, roles: %w{{app db web}}

namespace :django do
  task :migrate do
    on roles(:db) do
      within release_path do
        execute "./.venv/bin/python", "manage.py", "migrate", "--noinput"
      end
    end
  end
  task :collectstatic do
    on roles(:web) do
      within release_path do
        execute "./.venv/bin/python", "manage.py", "collectstatic", "--noinput"
      end
    end
  end
  task :check do
    on roles(:web) do
      within release_path do
        execute "./.venv/bin/python", "manage.py", "check"
      end
    end
  end
  task :restart do
    on roles(:web) do
      execute {restart!r}
    end
  end
  task :health do
    on roles(:web) do
      execute {health!r}
    end
  end
end

after "deploy:updated", "django:migrate"
after "django:migrate", "django:collectstatic"
after "django:collectstatic", "django:check"
after "deploy:published", "django:restart"
after "django:restart", "django:health"
after "deploy:finishing_rollback", "django:restart"
"""


class Capistrano:
    """A Capistrano 3 project deploying the sample to its own deploy root and database on the same host."""

    def __init__(self, work: Path, host, rig, pg, repo: Path, wheelhouse: Path, modules):
        self.dir = work / "cap-project"
        self.dir.mkdir(parents=True)
        self.deploy_to = host.root / "cap"
        (self.deploy_to / "shared").mkdir(parents=True)
        db = "library_cap"
        pg.create_role(modules.OWNER, modules.OWNER_PASSWORD)
        pg.create_database(db, modules.OWNER)
        shared = self.deploy_to / "shared"
        (shared / "media").mkdir()
        (shared / ".env").write_text(
            f"DB_ENGINE=postgresql\nDB_NAME={db}\nDB_USER={modules.OWNER}\nDB_PASSWORD={modules.OWNER_PASSWORD}\n"
            f"DB_HOST={pg.host}\nDB_PORT={pg.port}\nMEDIA_ROOT={shared / 'media'}\nSECRET_KEY=bench-cap\n")
        # the same environment deploykit builds (and reuses while requirements are unchanged), made once
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(shared / ".venv")], check=True)
        # a venv made from a venv does not see its parent's packages: point it at them, as deploykit's
        # `venv: {system_site_packages: true}` does for the release environments
        import site
        venv_site = next((shared / ".venv" / "lib").glob("python3*/site-packages"))
        (venv_site / "bench-parent.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        subprocess.run([str(shared / ".venv" / "bin" / "pip"), "install", "-q", "--no-index", "--find-links",
                        str(wheelhouse), "dk-sample-extra==1.0"], check=True)
        self.http = f"{host.address}:{modules.free_port(host.address)}"
        self.sup = modules.Supervisor.start(host.root / "cap-sv", {"capweb": {
            "command": f"{self.deploy_to / 'current' / '.venv' / 'bin' / 'python'} -m gunicorn --chdir "
                       f"{self.deploy_to / 'current'} --bind {self.http} --workers 1 libsite.wsgi",
            "directory": str(self.deploy_to), "autostart": "false"}})
        ctl = shlex.join(modules.supervisor_command("supervisorctl") + ["-c", str(self.sup.conf)])
        health = (f"for i in $(seq 300); do curl -fsS -o /dev/null http://{self.http}/health/ && exit 0; "
                  f"sleep 0.1; done; exit 1")
        (self.dir / "Capfile").write_text(CAPFILE)
        (self.dir / "config" / "deploy").mkdir(parents=True)
        (self.dir / "config" / "deploy.rb").write_text(DEPLOY_RB.format(
            repo=f"file://{repo}", deploy_to=str(self.deploy_to), log=str(work / "cap.log"),
            key=str(rig.client_key), port=host.port, user=rig.user, known=str(rig.known_hosts),
            address=host.address, restart=f"{ctl} restart capweb", health=health))
        (self.dir / "config" / "deploy" / "production.rb").write_text("")

    def cap(self, *args: str, tag: str = "v1.1") -> float:
        start = time.monotonic()
        cp = subprocess.run(["cap", "production", *args], cwd=self.dir, capture_output=True, text=True,
                            env={**os.environ, "TAG": tag}, timeout=600)
        seconds = time.monotonic() - start
        if cp.returncode != 0:
            raise RuntimeError(f"cap {' '.join(args)} failed: {cp.stdout[-2000:]} {cp.stderr[-2000:]}")
        return seconds

    def stop(self):
        self.sup.shutdown()


# -- deploykit -----------------------------------------------------------------------------------------------
def busy_cpu_seconds() -> float:
    """CPU seconds this machine's cores have run work (all cores), from /proc/stat.

    user + nice + system + irq + softirq: not idle, not iowait, and not steal
    (time the hypervisor gave to another guest, which this shared machine has).
    """
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds of this controller process (all its threads)."""
    t = os.times()
    return t.user + t.system


def dk_run(clock: CommandClock, config, stage: str, what: str) -> dict:
    clock.reset()
    start = time.monotonic()
    busy0, own0 = busy_cpu_seconds(), own_cpu_seconds()
    if what == "release":
        result = api.release(config, stage, "v1.1")
    else:
        result = api.rollback(config, stage, to_tag="v1.0")
    wall = time.monotonic() - start
    busy, own = busy_cpu_seconds() - busy0, own_cpu_seconds() - own0
    if not result.ok:
        raise RuntimeError(f"deploykit {what} on {stage} failed: {result.error}")
    work, by_kind = clock.work_seconds()
    steps: dict[str, float] = {}
    for rec in result.records:  # steps on several hosts run in parallel: the slowest host counts
        key = f"{rec.playbook}/{rec.step}"
        steps[key] = max(steps.get(key, 0.0), rec.seconds)
    # the hosts' CPU: everything the machine did meanwhile but this controller (an upper bound on a shared box)
    return {"wall": wall, "work": work, "overhead": wall - work, "work_by_kind": by_kind,
            "host_calls": clock.calls, "steps": steps, "cpu_controller": own, "cpu_hosts": max(0.0, busy - own)}


def startup_seconds(n: int = 5) -> float:
    """Median time to start the `deploykit` program and import what its run imports, paid once per command.

    The runs here happen in this process, where every module is loaded once
    for all of them; a `deploykit release` of its own imports them all again:
    the program (its tasks), and every deploykit module a run loaded here,
    with what they import (Fabric, paramiko, pydantic, GitPython, psycopg).
    """
    used = sorted(m for m in sys.modules if m == "deploykit" or m.startswith("deploykit."))
    script = "import deploykit.cli, fabric\n" + "".join(f"import {m}\n" for m in used)
    times = []
    for _ in range(n):
        start = time.monotonic()
        subprocess.run([sys.executable, "-c", script], check=True)
        times.append(time.monotonic() - start)
    return statistics.median(times)


def s_wall(summary, what) -> float:
    """deploykit's 1-host wall time without the program's start-up (what the n-host floor compares with)."""
    return summary[what]["deploykit_1"] - summary["startup"]


def med(rows, tool, what, field="wall"):
    vals = [r[field] for r in rows if r["tool"] == tool and r["what"] == what]
    return statistics.median(vals) if vals else float("nan")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--hosts", type=int, default=8, help="size of the fleet compared with one host")
    ap.add_argument("--json", help="write the results here (JSON)")
    args = ap.parse_args(argv)
    if not shutil.which("cap"):
        log("bench: 'cap' not found: apt-get install capistrano (Debian's Capistrano 3)")
        return 2
    m = rig_modules()
    work = Path(tempfile.mkdtemp(prefix="dkbench-release-"))
    pg = rig1 = rig8 = capi = None
    stages = []
    clock = CommandClock()
    rows: list[dict] = []
    try:
        log("starting PostgreSQL, sshd hosts, the sample repository ...")
        pg = m.PgCluster.start(work / "cluster")
        repo = work / "sample" / "library"
        m.build_sample_repo(repo)
        wheelhouse = m.build_wheelhouse(work / "wheelhouse")
        rig1 = m.start_ssh_hosts(work / "ssh1", 1)
        rig8 = m.start_ssh_hosts(work / "ssh8", args.hosts)
        one = m.make_stage(rig1, pg, repo, name="one", wheelhouse=wheelhouse, keep_releases=5)
        fleet = m.make_stage(rig8, pg, repo, name="fleet", wheelhouse=wheelhouse, keep_releases=5)
        stages = [one, fleet]
        capi = Capistrano(work, rig1.hosts[0], rig1, pg, repo, wheelhouse, m)
        cfg1, cfg8 = load_config(one.config_path), load_config(fleet.config_path)
        log("first releases (v1.0) ...")
        for cfg, name in ((cfg1, "one"), (cfg8, "fleet")):
            res = api.release(cfg, name, "v1.0")
            if not res.ok:
                raise RuntimeError(f"first release on {name} failed: {res.error}")
        capi.cap("deploy", tag="v1.0")
        startup = startup_seconds()
        clock.install()
        for r in range(1, args.rounds + 1):
            for what in ("release", "rollback"):
                for tool in ("deploykit-1", "capistrano", f"deploykit-{args.hosts}"):
                    if tool == "capistrano":
                        wall = capi.cap("deploy") if what == "release" else capi.cap("deploy:rollback")
                        row = {"wall": wall}
                    else:
                        cfg, name = (cfg1, "one") if tool == "deploykit-1" else (cfg8, "fleet")
                        row = dk_run(clock, cfg, name, what)
                        row["wall_cli"] = row["wall"] + startup
                    row.update({"round": r, "tool": tool, "what": what})
                    rows.append(row)
                    print(json.dumps(row), flush=True)
        clock.uninstall()
    finally:
        if capi:
            capi.stop()
        for st in stages:
            st.stop()
        for rig in (rig1, rig8):
            if rig:
                rig.stop()
        if pg:
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    n = args.hosts
    summary = {"startup": startup}
    for what in ("release", "rollback"):
        dk1 = med(rows, "deploykit-1", what, "wall_cli")
        cap = med(rows, "capistrano", what)
        dkn = med(rows, f"deploykit-{n}", what, "wall_cli")
        summary[what] = {"deploykit_1": dk1, "capistrano": cap, f"deploykit_{n}": dkn,
                         "ratio_vs_cap": dk1 / cap, f"ratio_{n}_vs_1": dkn / dk1,
                         "overhead_1": med(rows, "deploykit-1", what, "overhead"),
                         f"overhead_{n}": med(rows, f"deploykit-{n}", what, "overhead"),
                         "work_1": med(rows, "deploykit-1", what, "work")}
    goals = {"release": ("release ≤ 0.5× cap deploy", 0.5), "rollback": ("rollback --to-tag ≤ 1.0× cap rollback", 1.0)}
    print(f"\nmedians of {args.rounds} interleaved rounds; deploykit start-up {startup:.2f} s added to its wall times")
    print(f"{'':10} {'deploykit 1':>12} {'capistrano':>11} {'ratio':>7} {'goal':>6} "
          f"{'dk ' + str(n) + ' hosts':>12} {str(n) + '/1':>6} {'overhead 1':>11} {'overhead ' + str(n):>11}")
    for what in ("release", "rollback"):
        s = summary[what]
        print(f"{what:10} {s['deploykit_1']:11.2f}s {s['capistrano']:10.2f}s {s['ratio_vs_cap']:6.2f}× "
              f"{goals[what][1]:5.1f}× {s[f'deploykit_{n}']:11.2f}s {s[f'ratio_{n}_vs_1']:5.2f}× "
              f"{s['overhead_1']:10.2f}s {s[f'overhead_{n}']:10.2f}s")
    cores = os.cpu_count() or 1
    print("\nCPU (all cores, busy time from /proc/stat; the hosts = everything but this controller):")
    for what in ("release", "rollback"):
        host1 = med(rows, "deploykit-1", what, "cpu_hosts")
        hostn = med(rows, f"deploykit-{n}", what, "cpu_hosts")
        ctl1 = med(rows, "deploykit-1", what, "cpu_controller")
        ctln = med(rows, f"deploykit-{n}", what, "cpu_controller")
        floor = (hostn + ctln) / cores
        summary[what].update({"cpu_hosts_1": host1, f"cpu_hosts_{n}": hostn, "cpu_controller_1": ctl1,
                              f"cpu_controller_{n}": ctln, f"cpu_floor_{n}": floor})
        print(f"  {what:9} 1 host: hosts {host1:.2f} s + controller {ctl1:.2f} s; {n} hosts: hosts {hostn:.2f} s + "
              f"controller {ctln:.2f} s -> on {cores} cores at least {floor:.2f} s = "
              f"{floor / s_wall(summary, what):.2f}x the 1-host wall, before any waiting")
    print("\nrelease, one host: median seconds per step (the slowest host), and the work inside")
    steps: dict[str, list[float]] = {}
    for row in rows:
        if row["tool"] == "deploykit-1" and row["what"] == "release":
            for k, v in row["steps"].items():
                steps.setdefault(k, []).append(v)
    for k, vals in sorted(steps.items(), key=lambda kv: -statistics.median(kv[1])):
        print(f"  {k:40} {statistics.median(vals):7.3f}")
    kinds = {k: statistics.median([r["work_by_kind"][k] for r in rows
                                   if r["tool"] == "deploykit-1" and r["what"] == "release"]) for k in WORK_MARKS}
    print("  work: " + ", ".join(f"{k} {v:.2f}s" for k, v in kinds.items()))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"rows": rows, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
