"""A real systemd for the tests: PID 1 of its own PID, mount and cgroup namespaces.

The container's PID 1 is not systemd, but systemd (the Debian package) can
boot as PID 1 of a new PID namespace when we are root. Its isolation, so
that it touches nothing the other tests (or engineers) use:

- its own cgroup: a fresh directory of the cgroup2 hierarchy, made the root
  of a new cgroup namespace and mounted on its /sys/fs/cgroup (so it runs in
  unified mode and never sees, or writes into, anyone else's cgroups);
- its own /run (tmpfs): /run/systemd/private is reachable only from inside;
- units only from its own directory (SYSTEMD_UNIT_PATH): no tmpfiles, no
  getty, no journald, nothing of the distribution's boot; it starts dk.target.

The filesystem and the network are shared, so a unit runs the release under
a test host's deploy root and listens on loopback. An sshd test host is moved
inside (`adopt`) so that plain `systemctl` in its sessions talks to this
systemd, as on a real machine. `stop()` SIGKILLs the namespace's PID 1 (the
kernel then kills every process in it) and removes its cgroup: nothing stays.
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ._proc import RigError, alive, at_exit, children_of, forget_at_exit, is_root, wait_gone
from .sshd import SSHD

SYSTEMD = Path("/lib/systemd/systemd")
CGROUP2 = Path("/sys/fs/cgroup/unified")  # the hybrid layout's cgroup2 mount (Debian containers)

# the targets a default-dependencies service needs, and the one it boots to
_TARGETS = ("sysinit.target", "basic.target", "shutdown.target", "sockets.target", "multi-user.target")
_BOOT = """\
set -e
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/sshd
mount --bind "$DK_CONSOLE" /dev/console
exec {systemd} --system --unit=dk.target --log-target=console --log-level=notice
"""


def _cgroup2_root() -> Path:
    for path in (CGROUP2, Path("/sys/fs/cgroup")):
        if (path / "cgroup.procs").exists() and (path / "cgroup.controllers").exists():
            return path
    raise RigError("no cgroup2 hierarchy at /sys/fs/cgroup/unified or /sys/fs/cgroup: systemd needs one")


def _remove_cgroup(path: Path, timeout: float = 10.0) -> None:
    """rmdir a cgroup tree bottom-up once its processes are gone (the kernel empties it after the kill)."""
    deadline = time.monotonic() + timeout
    while path.exists():
        dirs = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        try:
            for d in [*dirs, path]:
                d.rmdir()
        except OSError:
            if time.monotonic() > deadline:
                raise RigError(f"cgroup {path} is still busy after {timeout}s") from None
            time.sleep(0.05)


@dataclass
class SystemdMachine:
    """One running systemd; `systemctl(...)` and `popen(...)` act inside it."""

    root: Path
    cgroup: Path
    launcher: subprocess.Popen
    pid: int  # the namespace's PID 1, as this process sees it
    units: Path = field(init=False)

    def __post_init__(self):
        self.units = self.root / "units"

    @classmethod
    def start(cls, root: Path, timeout: float = 20.0) -> SystemdMachine:
        if not is_root():
            raise RigError("systemd as PID 1 of a namespace needs root (unshare --pid --mount --cgroup)")
        for tool in ("unshare", "nsenter"):
            if not shutil.which(tool):
                raise RigError(f"{tool} not found (util-linux)")
        if not SYSTEMD.exists():
            raise RigError(f"{SYSTEMD} not found: apt-get install systemd")
        root = Path(root).absolute()
        units = root / "units"
        units.mkdir(parents=True, exist_ok=True)
        for target in _TARGETS:
            (units / target).write_text(f"[Unit]\nDescription={target} (deploykit test machine)\n")
        (units / "dk.target").write_text("[Unit]\nDescription=deploykit test machine\n"
                                          "Requires=basic.target\nAfter=basic.target\n")
        console = root / "console.log"
        console.touch()
        cgroup = _cgroup2_root() / f"dk-systemd-{secrets.token_hex(4)}"
        cgroup.mkdir()

        def enter_cgroup():  # before unshare: the new cgroup namespace is rooted here
            (cgroup / "cgroup.procs").write_text(str(os.getpid()))

        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "container": "deploykit-test",
               "SYSTEMD_UNIT_PATH": str(units), "DK_CONSOLE": str(console)}
        try:
            launcher = subprocess.Popen(
                ["unshare", "--pid", "--fork", "--mount", "--cgroup", "--mount-proc", "--propagation", "private",
                 "--", "sh", "-c", _BOOT.format(systemd=SYSTEMD)],
                env=env, preexec_fn=enter_cgroup, start_new_session=True,
                stdin=subprocess.DEVNULL, stdout=console.open("ab"), stderr=subprocess.STDOUT)
        except BaseException:
            _remove_cgroup(cgroup)
            raise
        machine = cls(root, cgroup, launcher, 0)
        at_exit(machine, machine.stop)
        try:
            machine.pid = machine._wait_pid1(timeout)
            machine._wait_running(timeout)
        except BaseException:
            machine.stop()
            raise
        return machine

    def _wait_pid1(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            kids = children_of(self.launcher.pid)
            if kids:
                return kids[0]
            if self.launcher.poll() is not None:
                break
            time.sleep(0.02)
        raise RigError(f"systemd did not start as PID 1 of a new namespace:\n{self.console_tail()}")

    def _wait_running(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            state = self.systemctl("is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            if not alive(self.pid):
                break
            time.sleep(0.05)
        raise RigError(f"systemd is {state or 'not answering'} after {timeout}s:\n{self.console_tail()}")

    def console_tail(self, n: int = 20) -> str:
        lines = (self.root / "console.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])

    # -- inside ---------------------------------------------------------------------
    def inside(self, *argv: str) -> list[str]:
        """argv run in the machine's PID and mount namespaces (its /proc, /run, systemd)."""
        return ["nsenter", "-t", str(self.pid), "-m", "-p", "--", *argv]

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        cp = subprocess.run(self.inside("systemctl", *args), capture_output=True, text=True, timeout=60)
        if check and cp.returncode != 0:
            raise RigError(f"systemctl {' '.join(args)} exited {cp.returncode}: {cp.stderr.strip() or cp.stdout.strip()}")
        return cp

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def main_pid(self, unit: str) -> int:
        return int(self.show(unit, "MainPID") or 0)

    def add_unit(self, name: str, text: str) -> None:
        (self.units / name).write_text(text)
        self.systemctl("daemon-reload")

    def adopt(self, host, timeout: float = 20.0) -> None:
        """Restart an sshd test host inside the machine: its sessions' `systemctl` is this systemd's."""
        host.stop()
        host.log_path = host.log_path or host.root / "sshd.log"
        host.process = subprocess.Popen(
            self.inside(SSHD, "-D", "-f", str(host.config_path), "-E", str(host.log_path)),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)
        host.wait_ready(timeout)

    # -- teardown -------------------------------------------------------------------
    def stop(self) -> None:
        """SIGKILL PID 1 (the kernel kills every process of the namespace), then remove the cgroup."""
        if self.pid and alive(self.pid):
            os.kill(self.pid, 9)
            wait_gone([self.pid], timeout=10)
        if self.launcher.poll() is None:
            try:
                self.launcher.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait(timeout=10)
        _remove_cgroup(self.cgroup)
        forget_at_exit(self)


@pytest.fixture
def systemd_factory(tmp_path):
    """``make(dir=None) -> SystemdMachine``: a real systemd each; all stopped at teardown."""
    made: list[SystemdMachine] = []

    def make(dir: Path | None = None) -> SystemdMachine:
        try:
            machine = SystemdMachine.start(dir or tmp_path / f"systemd{len(made)}")
        except RigError as exc:
            pytest.fail(f"cannot start a test systemd: {exc}", pytrace=False)
        made.append(machine)
        return machine

    yield make
    for machine in reversed(made):
        machine.stop()
