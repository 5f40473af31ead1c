"""This repository's tasks: deploykit's own, plus `bench` (benchmarks are not tests)."""
import subprocess
import sys
from pathlib import Path

from invoke import Collection, task

from deploykit.tasks import ns as deploykit_ns


@task(auto_shortflags=False, help={"size_mb": "approximate dataset size in MB (default 1500)",
                                   "json": "write the results to this JSON file"})
def bench(c, size_mb=1500, json=None):
    """Benchmark the PostgreSQL data path (dumps, restores, snapshots, revert, django-dbbackup)."""
    bench_dir = Path(__file__).parent / "bench"
    args = [sys.executable, str(bench_dir / "pg_data_path.py"), "--size-mb", str(size_mb)]
    if json:
        args += ["--json", json]
    sys.exit(subprocess.call(args))





@task(auto_shortflags=False, help={"only": "run only the cases whose id contains this text (e.g. release@ or /sigkill)",
                                   "json": "write the results to this JSON-lines file"})
def faults(c, only=None, json=None):
    """Run the whole interruption matrix (every procedure x point x fault) and print its table."""
    args = [sys.executable, str(Path(__file__).parent / "bench" / "faults.py")]
    if only:
        args += ["--only", only]
    if json:
        args += ["--json", json]
    sys.exit(subprocess.call(args))
ns = Collection(*deploykit_ns.tasks.values(), bench, faults)
