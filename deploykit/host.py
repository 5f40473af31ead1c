"""One way to reach a host: the same methods over SSH or on the local machine.

Commands are shell strings; every value put into one goes through `q()`.
Remote helpers (deploykit/remote/*.py) are sent on stdin and run by the app's
Python, so nothing of deploykit is installed on a host.
"""
from __future__ import annotations

import json
import os
import posixpath
import shlex
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .config import Config, HostSpec
from .errors import HostCommandFailed, HostKeyUnknown, HostUnreachable

REMOTE_DIR = Path(__file__).parent / "remote"


def q(value) -> str:
    """Quote one value for a POSIX shell."""
    return shlex.quote(str(value))


@dataclass
class CommandResult:
    command: str
    exited: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def tail(self, lines: int = 3) -> str:
        text = (self.stderr.strip() or self.stdout.strip()).splitlines()
        return " | ".join(text[-lines:])


# A helper's source and its JSON arguments travel on stdin: a length line, the
# source, then the arguments. Nothing is written on the host.
_BOOTSTRAP = ("import sys;n=int(sys.stdin.readline());src=sys.stdin.read(n);"
              "sys.argv=[{name!r}]+sys.argv[1:];"
              "exec(compile(src,{name!r},'exec'),{{'__name__':'__main__'}})")


class Host:
    """Base: what every step may do to a host. Subclasses provide `_exec`."""

    def __init__(self, spec: HostSpec, config: Config):
        self.spec = spec
        self.config = config
        self.name = spec.name
        self.roles = spec.roles
        self.deploy_to = spec.deploy_to
        self.python = spec.python

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @property
    def is_primary(self) -> bool:
        return "primary" in self.roles

    def render(self, text: str) -> str:
        return self.spec.render(text)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.deploy_to, *parts)

    def connect(self) -> None:
        """Open the connection now, so errors surface before any change."""

    def close(self) -> None:
        pass

    def run(self, command: str, *, cwd: str | None = None, env: dict | None = None,
            check: bool = True, timeout: float | None = None, stdin: str | None = None) -> CommandResult:
        script = command
        if env:
            exports = " ".join(f"{k}={q(v)}" for k, v in env.items())
            script = f"export {exports}; {script}"
        if cwd:
            script = f"cd {q(cwd)} && {script}"
        result = self._exec(script, stdin=stdin, timeout=timeout or self.config.command_timeout)
        result.command = command
        if check and not result.ok:
            raise HostCommandFailed(
                f"{self.name}: command failed (exit {result.exited}): {command[:120]}: {result.tail()}",
                hint="see the journal for the full output")
        return result

    def _exec(self, script: str, stdin: str | None, timeout: float) -> CommandResult:
        raise NotImplementedError

    def helper(self, module: str, action: str, args: dict | None = None, *,
               env: dict | None = None, check: bool = True, timeout: float | None = None) -> dict:
        """Run remote/<module>.py ACTION with JSON args on the host's Python."""
        source = (REMOTE_DIR / f"{module}.py").read_text()
        name = f"deploykit-{module}.py"
        payload = f"{len(source)}\n{source}{json.dumps(args or {})}"
        cmd = f"{q(self.python)} -c {q(_BOOTSTRAP.format(name=name))} {q(action)}"
        result = self.run(cmd, env=env, check=False, stdin=payload, timeout=timeout)
        try:
            doc = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else None
        except json.JSONDecodeError:
            doc = None
        if doc is None:
            raise HostCommandFailed(
                f"{self.name}: helper {module} {action} gave no answer (exit {result.exited}): {result.tail()}",
                hint=f"check that {self.python} runs on {self.name}")
        if check and not doc.get("ok"):
            raise HostCommandFailed(f"{self.name}: {module} {action}: {doc.get('error')}")
        return doc

    def exists(self, path: str) -> bool:
        return self.run(f"test -e {q(path)} -o -L {q(path)}", check=False).ok

    def realpath(self, path: str) -> str | None:
        res = self.run(f"readlink -f {q(path)}", check=False)
        return res.stdout.strip() if res.ok and res.stdout.strip() else None

    def read_json(self, path: str):
        doc = self.helper("files", "read_json", {"path": path})
        return doc["data"] if doc.get("exists") else None

    def write_json(self, path: str, data) -> None:
        self.helper("files", "write_json", {"path": path, "data": data})

    def put(self, local: str | Path, remote: str, mode: int = 0o600) -> None:
        raise NotImplementedError


class LocalHost(Host):
    """`host: local`: the demo and single-box installs."""

    def _exec(self, script, stdin, timeout):
        start = time.monotonic()
        try:
            proc = subprocess.run(["bash", "-c", script], input=stdin, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            return CommandResult(script, 124, exc.stdout or "", f"timed out after {timeout}s",
                                 time.monotonic() - start)
        return CommandResult(script, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start)

    def put(self, local, remote, mode=0o600):
        self.run(f"mkdir -p {q(posixpath.dirname(remote))}")
        tmp = f"{remote}.part"
        with open(local, "rb") as src, open(tmp, "wb") as dst:
            os.chmod(tmp, mode)
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.replace(tmp, remote)


class SSHHost(Host):
    """A host reached with Fabric; its key must already be in known_hosts."""

    def __init__(self, spec, config):
        super().__init__(spec, config)
        self._conn = None

    @property
    def conn(self):
        if self._conn is None:
            self.connect()
        return self._conn

    def connect(self):
        if self._conn is not None:
            return
        import paramiko
        from fabric import Connection

        kwargs = {"look_for_keys": False, "allow_agent": False}
        if self.config.identity:
            kwargs["key_filename"] = self.config.identity
        else:
            kwargs["look_for_keys"] = True
            kwargs["allow_agent"] = True
        conn = Connection(host=self.spec.hostname, user=self.spec.user, port=self.spec.port,
                          connect_timeout=self.config.connect_timeout, connect_kwargs=kwargs)
        # Fabric auto-adds unknown keys; deploykit refuses them.
        conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        known = self.config.known_hosts
        if os.path.exists(known):
            conn.client.get_host_keys().load(known)
        where = f"{self.spec.hostname}:{self.spec.port}"
        try:
            conn.open()
        except paramiko.SSHException as exc:
            if "not found in known_hosts" in str(exc):
                host = (self.spec.hostname if self.spec.port == 22
                        else f"[{self.spec.hostname}]:{self.spec.port}")
                raise HostKeyUnknown(
                    f"host {self.name} ({where}): its host key is not in {known}",
                    hint=f"check the fingerprint with the host's admin, then run "
                         f"'ssh-keyscan -p {self.spec.port} {self.spec.hostname} >> {known}' "
                         f"(entry name {host})") from None
            if isinstance(exc, paramiko.BadHostKeyException):
                raise HostKeyUnknown(f"host {self.name} ({where}): host key CHANGED from the one in {known}",
                                     hint="find out why before removing the old entry") from None
            if isinstance(exc, paramiko.AuthenticationException):
                raise HostUnreachable(f"host {self.name} ({where}): authentication refused for user {self.spec.user}",
                                      hint="check ssh.identity and the host's authorized_keys") from None
            raise HostUnreachable(f"host {self.name} ({where}): {exc}") from None
        except (OSError, socket.timeout, EOFError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise HostUnreachable(f"host {self.name} ({where}) is unreachable: {reason}") from None
        self._conn = conn

    def close(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _exec(self, script, stdin, timeout):
        start = time.monotonic()
        try:
            transport = self.conn.client.get_transport()
            if transport is None or not transport.is_active():
                self._conn = None
                transport = self.conn.client.get_transport()
            chan = transport.open_session(timeout=self.config.connect_timeout)
            chan.settimeout(timeout)
            chan.exec_command(script)
            if stdin:
                chan.sendall(stdin.encode())
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                got = False
                if chan.recv_ready():
                    out += chan.recv(1 << 16)
                    got = True
                if chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                    got = True
                if not got:
                    if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                        break
                    if time.monotonic() - start > timeout:
                        chan.close()
                        return CommandResult(script, 124, out.decode(errors="replace"),
                                             f"timed out after {timeout}s", time.monotonic() - start)
                    time.sleep(0.002)
            status = chan.recv_exit_status()
            chan.close()
        except (OSError, EOFError, socket.timeout) as exc:
            self._conn = None
            raise HostUnreachable(f"host {self.name}: connection lost: {exc or type(exc).__name__}",
                                  hint="check the host, then run the same command again: it resumes from the journal") from None
        except Exception as exc:  # paramiko.SSHException and friends
            if type(exc).__module__.startswith("paramiko"):
                self._conn = None
                raise HostUnreachable(f"host {self.name}: connection lost: {exc}",
                                      hint="check the host, then run the same command again") from None
            raise
        return CommandResult(script, status, out.decode(errors="replace"), err.decode(errors="replace"),
                             time.monotonic() - start)

    def put(self, local, remote, mode=0o600):
        self.run(f"mkdir -p {q(posixpath.dirname(remote))}")
        tmp = f"{remote}.part"
        try:
            sftp = self.conn.sftp()
            sftp.put(str(local), tmp)
            sftp.chmod(tmp, mode)
        except (OSError, EOFError) as exc:
            self._conn = None
            raise HostUnreachable(f"host {self.name}: upload failed: {exc}") from None
        self.run(f"mv -f {q(tmp)} {q(remote)}")


def make_host(spec: HostSpec, config: Config) -> Host:
    return LocalHost(spec, config) if spec.is_local else SSHHost(spec, config)
