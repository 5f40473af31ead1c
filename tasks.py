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


@task(auto_shortflags=False, help={"size_mb": "approximate dataset size in MB (default 1500)",
                                   "json": "write the results to this JSON file"})
def bench(c, size_mb=1500, json=None):
    """Benchmark the PostgreSQL data path (dumps, restores, snapshots, revert, django-dbbackup)."""
    args = [sys.executable, str(ROOT / "bench" / "pg_data_path.py"), "--size-mb", str(size_mb)]
    if json:
        args += ["--json", json]
    sys.exit(subprocess.call(args))


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
