"""A real supervisord per test host.

    sv = Supervisor.start(tmp_path / "sv", {
        "web": {"command": "python -m http.server 8000", "directory": "/srv/app",
                "environment": {"DJANGO_SETTINGS_MODULE": "app.settings"}},
    })
    sv.ctl("start", "web"); assert sv.status("web") == "RUNNING"
    sv.shutdown()

supervisord daemonizes (it keeps running whatever the test process does) and
is controlled over a Unix socket with the supervisorctl of the same Python
environment. Programs default to ``autostart=false autorestart=false
startsecs=1 stopasgroup=true killasgroup=true``; any other supervisor program
option may be given in a program's dict and overrides the defaults.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ._proc import RigError, alive, at_exit, descendants, forget_at_exit, wait_gone

__all__ = ["Supervisor", "supervisor_command"]

#: sun_path is 108 bytes on Linux (104 on BSD/macOS); keep a margin.
_MAX_SOCKET_PATH = 96

_PROGRAM_DEFAULTS = {
    "autostart": "false",
    "autorestart": "false",
    "startsecs": "1",
    "startretries": "0",
    "stopasgroup": "true",
    "killasgroup": "true",
    "stopwaitsecs": "10",
    "redirect_stderr": "true",
}


def supervisor_command(tool: str) -> list[str]:
    """argv prefix running ``supervisord``/``supervisorctl`` of sys.executable's env."""
    script = Path(sys.executable).parent / tool
    if script.exists() and _shebang_ok(script):
        return [str(script)]
    module = {"supervisord": "supervisor.supervisord", "supervisorctl": "supervisor.supervisorctl"}[tool]
    return [sys.executable, "-c", f"import sys; from {module} import main; sys.exit(main())"]


def _shebang_ok(script: Path) -> bool:
    try:
        with open(script, "rb") as f:
            first = f.readline(512)
    except OSError:
        return False
    if not first.startswith(b"#!"):
        return False
    interpreter = first[2:].split()[0].decode(errors="replace") if first[2:].split() else ""
    return os.access(interpreter, os.X_OK)


def _conf_value(value) -> str:
    """Escape a value for supervisor's ConfigParser (``%`` interpolation)."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return str(value).replace("%", "%%").replace("\n", " ")


def _environment(env: dict[str, str]) -> str:
    parts = []
    for key, value in env.items():
        if not key.replace("_", "").isalnum():
            raise ValueError(f"bad environment variable name {key!r}")
        # supervisor splits this with a non-POSIX shlex: no escapes, and the
        # quotes are stripped from both ends of the value afterwards.
        v = str(value)
        quote = '"' if '"' not in v else "'"
        if quote in v or (v and (v[0] in "'\"" or v[-1] in "'\"")):
            raise ValueError(f"supervisor cannot represent the value of {key}: {v!r}")
        parts.append(f"{key}={quote}{v}{quote}")
    return _conf_value(",".join(parts))


@dataclass
class Supervisor:
    """One running supervisord and its configuration."""

    dir: Path
    conf: Path
    socket: Path
    pidfile: Path
    logfile: Path
    programs: dict[str, dict] = field(default_factory=dict)
    includes: list[str] = field(default_factory=list)  # [include] files= globs, e.g. a conf.d/*.conf
    _socket_tmp: Path | None = field(default=None, repr=False)

    @classmethod
    def start(cls, dir: Path, programs: dict[str, dict] | None = None, timeout: float = 15.0,
              includes: list[str | Path] = ()) -> "Supervisor":
        """Write ``<dir>/supervisord.conf`` and start supervisord (daemonized).

        ``includes``: program files supervisord reads as well (its ``[include] files =``), as an
        operator installs a project's own program file into /etc/supervisor/conf.d/.
        """
        dir = Path(dir).absolute()
        dir.mkdir(parents=True, exist_ok=True)
        socket = dir / "supervisor.sock"
        socket_tmp = None
        if len(str(socket)) > _MAX_SOCKET_PATH:
            socket_tmp = Path(tempfile.mkdtemp(prefix="dksv-"))
            socket = socket_tmp / "s.sock"
        sv = cls(
            dir=dir,
            conf=dir / "supervisord.conf",
            socket=socket,
            pidfile=dir / "supervisord.pid",
            logfile=dir / "supervisord.log",
            programs=dict(programs or {}),
            includes=[str(p) for p in includes],
            _socket_tmp=socket_tmp,
        )
        try:
            sv.write_config()
            proc = subprocess.run(
                [*supervisor_command("supervisord"), "-c", str(sv.conf)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                start_new_session=True,
            )
            if proc.returncode != 0:
                raise RigError(
                    f"supervisord failed to start ({proc.returncode}): {proc.stderr or proc.stdout}"
                )
            at_exit(sv, sv._atexit)
            sv.wait_ready(timeout)
        except BaseException:
            sv.shutdown(timeout=5)
            raise
        return sv

    def write_config(self) -> Path:
        lines = [
            "; written by deploykit_testing.supervisor",
            "[unix_http_server]",
            f"file={_conf_value(self.socket)}",
            "chmod=0700",
            "",
            "[supervisord]",
            f"logfile={_conf_value(self.logfile)}",
            f"pidfile={_conf_value(self.pidfile)}",
            f"childlogdir={_conf_value(self.dir)}",
            f"directory={_conf_value(self.dir)}",
            "nodaemon=false",
            "loglevel=info",
            "logfile_backups=0",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{_conf_value(self.socket)}",
            "",
        ]
        if self.includes:
            if any(" " in p for p in self.includes):
                raise ValueError(f"supervisor cannot include a path with a space: {self.includes}")
            lines += ["[include]", f"files = {_conf_value(' '.join(self.includes))}", ""]
        for name, spec in self.programs.items():
            if not name or any(c in name for c in ":[] \t\n"):
                raise ValueError(f"bad program name {name!r}")
            spec = dict(spec)
            if "command" not in spec:
                raise ValueError(f"program {name!r} needs a command")
            opts = dict(_PROGRAM_DEFAULTS)
            opts["stdout_logfile"] = str(self.dir / f"{name}.log")
            env = spec.pop("environment", None)
            for key, value in spec.items():
                opts[key] = value
            lines.append(f"[program:{name}]")
            for key, value in opts.items():
                lines.append(f"{key}={_conf_value(value)}")
            if env:
                lines.append(f"environment={_environment(env)}")
            lines.append("")
        self.conf.write_text("\n".join(lines))
        return self.conf

    # ------------------------------------------------------------- control --

    def ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run ``supervisorctl -c <conf> *args``; returns the CompletedProcess (not checked:
        supervisorctl exits non-zero e.g. for ``status`` of a stopped program)."""
        return subprocess.run(
            [*supervisor_command("supervisorctl"), "-c", str(self.conf), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def ctl_argv(self, *args: str) -> list[str]:
        """The argv ``ctl`` would run (e.g. to run it over SSH on the test host)."""
        return [*supervisor_command("supervisorctl"), "-c", str(self.conf), *args]

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            out = self.ctl("pid", timeout=10)
            if out.returncode == 0 and out.stdout.strip().isdigit():
                return
            if time.monotonic() > deadline:
                log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
                raise RigError(f"supervisord did not answer within {timeout}s: {out.stdout}{out.stderr}\n{log}")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        pid = self.pid
        return pid is not None and alive(pid)

    def status(self, name: str) -> str:
        """State of program ``name``: RUNNING, STOPPED, STARTING, FATAL, EXITED, ...

        Raises KeyError for an unknown program, RigError if supervisord is down.
        """
        out = self.ctl("status", name)
        text = out.stdout.strip()
        if "no such process" in text.lower():
            raise KeyError(name)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in (name, f"{name}:{name}"):
                return parts[1]
        raise RigError(f"supervisorctl status {name}: {out.returncode} {text} {out.stderr.strip()}")

    def program_pid(self, name: str) -> int | None:
        out = self.ctl("pid", name).stdout.strip()
        return int(out) if out.isdigit() and out != "0" else None

    def start_program(self, name: str) -> subprocess.CompletedProcess:
        return self.ctl("start", name)

    def stop_program(self, name: str) -> subprocess.CompletedProcess:
        return self.ctl("stop", name)

    def restart_program(self, name: str) -> subprocess.CompletedProcess:
        return self.ctl("restart", name)

    def update(self, programs: dict[str, dict]) -> subprocess.CompletedProcess:
        """Replace the program set: rewrite the config, then ``supervisorctl update``."""
        self.programs = dict(programs)
        self.write_config()
        return self.ctl("update")

    def stop_all(self) -> subprocess.CompletedProcess:
        return self.ctl("stop", "all")

    def shutdown(self, timeout: float = 20.0) -> None:
        """Stop every program and supervisord itself; SIGKILL what lingers."""
        pid = self.pid
        if pid is not None and alive(pid):
            kids = descendants(pid)
            self.ctl("shutdown", timeout=timeout)
            if not wait_gone([pid], timeout=timeout):
                kids = descendants(pid)
                for p in [pid, *kids]:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            for p in kids:  # stopasgroup normally took care of these
                if alive(p):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
            wait_gone(kids, timeout=5)
        forget_at_exit(self)
        if self._socket_tmp is not None:
            for p in self._socket_tmp.iterdir():
                p.unlink(missing_ok=True)
            self._socket_tmp.rmdir()
            self._socket_tmp = None

    stop = shutdown

    def _atexit(self) -> None:
        self.shutdown(timeout=5)
