"""`invoke test`: make sure the machine has what the real-parts tests need, run pytest.

The tests start sshd and PostgreSQL themselves; on a fresh Debian machine run
as root, missing system packages (openssh-server, PostgreSQL server) are
installed with apt-get first.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.environ.get("DEPLOYKIT_PG_BIN") or (os.path.dirname(found[-1]) if found else None)


def missing_packages() -> list[str]:
    missing = []
    if not os.path.exists(SSHD):
        missing.append("openssh-server")
    if not _pg_bin():
        missing.append("postgresql")
    if not shutil.which("pg_dump"):
        missing.append("postgresql-client")
    if not shutil.which("chromium"):  # the HTML run report is rendered headless (tests/test_status_log.py)
        missing.append("chromium")
    if not glob.glob("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        missing.append("fonts-dejavu-core")
    return missing


def ensure_system_packages() -> None:
    missing = missing_packages()
    if not missing:
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        sys.exit(f"deploykit: error: the tests need {', '.join(missing)} "
                 f"(hint: install them, e.g. sudo apt-get install -y {' '.join(missing)})")
    print(f"installing test prerequisites: {' '.join(missing)}", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], check=True, env=env)


def run_tests(root: str | Path, k: str | None = None, exitfirst: bool = False,
              extra: list[str] | None = None) -> int:
    """Run the tests of the checkout at `root` (its tests/ directory), from that directory."""
    ensure_system_packages()
    root = Path(root).resolve()
    args = [sys.executable, "-m", "pytest", str(root / "tests")]
    try:  # the tests mostly wait on real services: two workers halve the wall time (a file stays on one worker)
        import xdist  # noqa: F401

        args += ["-n", str(min(4, max(2, os.cpu_count() or 2))), "--dist", "loadfile"]
    except ImportError:
        pass
    if k:
        args += ["-k", k]
    if exitfirst:
        args.append("-x")
    args += extra or []
    return subprocess.call(args, cwd=root)
