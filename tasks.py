"""This repository's tasks: deploykit's operator tasks, plus the developer's own.

`demo`, `test`, `bench` and `faults` live here, not in deploykit.tasks: they
need the checkout (the test rig, the sample project, bench/), and `test` may
run apt-get as root, which no user's `invoke --list` should offer.
"""
import subprocess
import sys
from pathlib import Path

from invoke import Collection, Exit, task

from deploykit.tasks import ns as deploykit_ns
from deploykit.tasks import user_errors

ROOT = Path(__file__).resolve().parent


@task(auto_shortflags=False, help={"sandbox": "directory for the demo (default: ./.demo, recreated)",
                                   "keep": "leave the demo's processes running"})
@user_errors
def demo(c, sandbox=".demo", keep=False):
    """Release v1.0 and v1.1 of the sample project locally, break v1.3, watch it recovered."""
    from deploykit_demo.scenario import run_demo

    if not run_demo(sandbox, keep=keep):
        raise Exit("deploykit: demo: the final state is NOT what it was before the broken release", code=1)


@task(auto_shortflags=False, help={"k": "only tests matching this expression", "x": "stop at the first failure"})
def test(c, k=None, x=False):
    """Run the test suite (real sshd hosts, PostgreSQL, the sample project)."""
    from deploykit_testing.runner import run_tests

    sys.exit(run_tests(ROOT, k=k, exitfirst=x))


BENCHES = {
    "transport": ["transport.py"],  # a no-op remote call: deploykit's agent against Fabric's Connection.run
    "release": ["release.py"],      # release/rollback against Capistrano 3, one host against eight, overhead per step
    "data": ["pg_data_path.py"],    # dumps, restores, snapshots, revert against pg_dump/pg_restore, django-dbbackup
    "downtime": ["downtime.py"],    # release and recovery downtime at --size-mb, per snapshot_budget
    "transfer": ["transfer.py"],    # blue/green transfer freeze (copy, replicate) against pg_dump/copy/pg_restore
    "refresh": ["refresh.py"],      # anonymized refresh (masked copy, proof, swap) against pg_dump -j + pg_restore -j
    "fleet": ["fleet.py"],          # a release to 8 sshd hosts against one host, per-step max/sum, CPU per host
    "rolling": ["rolling.py"],      # a rolling release behind nginx: its own time against its pauses + health checks
}
SIZED = ("data", "downtime", "transfer", "refresh")  # the benches that take --size-mb
ROUNDED = ("release", "transfer", "refresh", "fleet", "rolling")  # and --rounds


@task(auto_shortflags=False, help={"only": "transport, release, data, downtime, transfer, refresh, fleet or rolling (default: all, in that "
                                           "order)",
                                   "size_mb": "dataset size in MB for the data path and downtime benches (default "
                                              "1500) and the transfer and refresh benches (default: 300 and 1500)",
                                   "rounds": "interleaved rounds of the release and fleet benches (default 5) and of "
                                             "the transfer and refresh benches (default 3)",
                                   "json": "directory for the JSON results (one file per bench)"})
def bench(c, only=None, size_mb=None, rounds=None, json=None):
    """Benchmarks, each against its baseline measured in the same run: transport, release, data path."""
    names = [only] if only else list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise Exit(f"deploykit: error: no bench named {unknown[0]!r} (hint: one of {', '.join(BENCHES)})", code=2)
    worst = 0
    for name in names:
        args = [sys.executable, str(ROOT / "bench" / BENCHES[name][0])]
        if name in SIZED and size_mb is not None:
            args += ["--size-mb", str(size_mb)]
        if name in ROUNDED and rounds is not None:
            args += ["--rounds", str(rounds)]
        if json:
            Path(json).mkdir(parents=True, exist_ok=True)
            args += ["--json", str(Path(json) / f"{name}.json")]
        print(f"== bench {name}", flush=True)
        worst = max(worst, subprocess.call(args))
    sys.exit(worst)


@task(auto_shortflags=False, help={"only": "run only the cases whose id contains this text (e.g. release@ or /sigkill)",
                                   "json": "write the results to this JSON-lines file"})
def faults(c, only=None, json=None):
    """Run the whole interruption matrix (every procedure x point x fault) and print its table."""
    args = [sys.executable, str(ROOT / "bench" / "faults.py")]
    if only:
        args += ["--only", only]
    if json:
        args += ["--json", json]
    sys.exit(subprocess.call(args))


ns = Collection(*deploykit_ns.tasks.values(), demo, test, bench, faults)
