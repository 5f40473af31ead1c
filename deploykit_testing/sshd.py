"""Real OpenSSH servers on loopback addresses, one per test "host".

Each host gets its own address (127.0.0.2, 127.0.0.3, ...), a free port, its
own ed25519 host key and its own directory. The test client logs in as the
current user (root when the tests run as root) with a generated ed25519 key,
and verifies host keys against a known_hosts file that the rig writes: no
auto-adding of unknown keys anywhere.

    rig = start_ssh_hosts(tmp_path / "ssh", 2)
    try:
        with rig.connection(rig.hosts[0]) as c:
            c.run("echo hi")
    finally:
        rig.stop()
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple

from ._proc import RigError, at_exit, descendants, forget_at_exit, is_root, wait_gone
from .ports import free_port, port_open

__all__ = [
    "SSHD",
    "SSHTestHost",
    "SSHRig",
    "Endpoint",
    "start_ssh_hosts",
    "generate_key",
    "write_known_hosts",
    "unused_address",
    "strict_connection",
    "check_login_allowed",
]

#: sshd re-executes itself and therefore must be started by absolute path.
SSHD = os.environ.get("DEPLOYKIT_SSHD", "/usr/sbin/sshd")
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
#: Directory sshd needs for privilege separation when started as root.
PRIVSEP_DIR = Path("/run/sshd")


class Endpoint(NamedTuple):
    address: str
    port: int


# ----------------------------------------------------------------- helpers ---


def generate_key(path: Path, comment: str = "deploykit-test") -> Path:
    """Create an ed25519 key pair at ``path`` (+ ``.pub``), no passphrase."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for p in (path, Path(f"{path}.pub")):
        if p.exists():
            p.unlink()
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return path


def _public_key(private: Path) -> str:
    pub = Path(f"{private}.pub")
    if pub.exists():
        return pub.read_text().strip()
    out = subprocess.run(
        [SSH_KEYGEN, "-y", "-f", str(private)], check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def _host_pattern(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


def write_known_hosts(path: Path, hosts: Iterable["SSHTestHost"]) -> Path:
    """Write a known_hosts file listing exactly ``hosts``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(h.known_hosts_line + "\n" for h in hosts))
    os.chmod(path, 0o600)
    return path


def unused_address() -> Endpoint:
    """An address/port on which nothing listens: connecting is refused at once."""
    address = "127.0.0.1"
    return Endpoint(address, free_port(address))


def check_login_allowed(user: str) -> None:
    """Raise RigError if sshd (UsePAM no) would refuse ``user`` whatever the key.

    With ``UsePAM no`` OpenSSH applies its own account checks: a password
    field starting with ``!`` (``passwd -l``, the default for many system and
    container accounts) means "locked" and even public-key log-ins are
    refused; so is an account whose shell is not executable. Only root can
    read /etc/shadow, and only an sshd started by root looks at it.
    """
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise RigError(f"user {user!r} does not exist on this machine") from None
    shell = pw.pw_shell or "/bin/sh"
    if not os.access(shell, os.X_OK) or os.path.basename(shell) in ("nologin", "false"):
        raise RigError(
            f"user {user!r} has the shell {shell!r}, so sshd cannot run commands for it; "
            f"give it a real shell: usermod -s /bin/sh {user}"
        )
    if not is_root():
        return
    try:
        lines = Path("/etc/shadow").read_text().splitlines()
    except OSError:
        return
    for line in lines:
        parts = line.split(":")
        if parts[0] != user or len(parts) < 2:
            continue
        if parts[1].startswith("!"):
            raise RigError(
                f"the account {user!r} is locked (its password field in /etc/shadow starts "
                f"with '!'); the test sshd runs with 'UsePAM no' and then refuses locked "
                f"accounts even for key log-ins. Unlock it without setting a password: "
                f"usermod -p '*' {user}"
            )
        if len(parts) > 7 and parts[7].strip():
            try:
                expire_day = int(parts[7])
            except ValueError:
                expire_day = -1
            if expire_day >= 0 and expire_day * 86400 < time.time():
                raise RigError(
                    f"the account {user!r} has expired (/etc/shadow); sshd refuses it. "
                    f"Fix: chage -E -1 {user}"
                )
        return


def _ensure_privsep_dir() -> None:
    if is_root() and not PRIVSEP_DIR.is_dir():
        PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        os.chmod(PRIVSEP_DIR, 0o755)


def _check_sshd() -> None:
    if not os.access(SSHD, os.X_OK):
        raise RigError(
            f"OpenSSH server not found at {SSHD}: install it (Debian/Ubuntu: "
            f"apt-get install openssh-server) or set DEPLOYKIT_SSHD to its absolute path"
        )


def strict_connection(
    address: str,
    port: int,
    user: str,
    client_key: Path,
    known_hosts: Path,
    connect_timeout: int = 10,
    **kwargs,
):
    """A Fabric Connection that trusts ONLY ``known_hosts`` and rejects unknown keys.

    Fabric's own default is ``AutoAddPolicy``; this replaces it with
    ``paramiko.RejectPolicy`` and ignores ~/.ssh/config, ~/.ssh keys and any agent.
    """
    import paramiko
    from fabric import Config, Connection

    config = Config(overrides={"load_ssh_configs": False})
    connect_kwargs = {
        "key_filename": [str(client_key)],
        "look_for_keys": False,
        "allow_agent": False,
        "banner_timeout": connect_timeout,
        "auth_timeout": connect_timeout,
    }
    connect_kwargs.update(kwargs.pop("connect_kwargs", {}))
    conn = Connection(
        address,
        port=port,
        user=user,
        config=config,
        connect_timeout=connect_timeout,
        connect_kwargs=connect_kwargs,
        **kwargs,
    )
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    conn.client.load_host_keys(str(known_hosts))
    return conn


def _set_env(env: dict[str, str]) -> str:
    """SetEnv's arguments: NAME=VALUE words (the rig's values are paths, ports, names: no blanks, no quotes)."""
    for key, value in env.items():
        if not value or any(c.isspace() or c in "\"'\\" for c in value):
            raise RigError(f"the test sshd's SetEnv cannot carry {key}={value!r} (empty, blanks or quotes)")
    return " ".join(f"{key}={value}" for key, value in env.items())


# ------------------------------------------------------------------- hosts ---


@dataclass
class SSHTestHost:
    """One sshd on its own loopback address, with its own directory."""

    name: str
    address: str
    port: int
    user: str
    root: Path
    deploy_to: Path
    host_key_pub: str
    known_hosts_line: str
    process: subprocess.Popen | None = None
    client_key: Path | None = field(default=None, repr=False)
    known_hosts: Path | None = field(default=None, repr=False)
    config_path: Path | None = field(default=None, repr=False)
    log_path: Path | None = field(default=None, repr=False)
    file_size_limit: int | None = field(default=None, repr=False)  # bytes, for disk-full tests (restart to apply)
    env: dict[str, str] = field(default_factory=dict)  # more SetEnv of every session (set_env to change it)

    # -- lifecycle ------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint(self.address, self.port)

    def write_config(self) -> Path:
        r = self.root
        conf = f"""\
# deploykit test host {self.name}: written by deploykit_testing.sshd
ListenAddress {self.address}:{self.port}
HostKey {r / "ssh_host_ed25519_key"}
PidFile {r / "sshd.pid"}
AuthorizedKeysFile {r / "authorized_keys"}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowUsers {self.user}
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
MaxStartups 64:30:128
MaxSessions 64
LoginGraceTime 30
LogLevel ERROR
Subsystem sftp internal-sftp
# each test host has its own home: the deploy user's, not the account's (and its shell rc files);
# env: what this host's sessions see as their machine's own (e.g. PGHOST/PGPORT of "its local" PostgreSQL)
SetEnv {_set_env({"HOME": str(r), **self.env})}
"""
        self.config_path = r / "sshd_config"
        self.config_path.write_text(conf)
        return self.config_path

    def set_env(self, env: dict[str, str], timeout: float = 15.0) -> None:
        """Replace the extra environment of this host's sessions: the config rewritten, then SIGHUP (sshd
        re-executes itself on the same port); returns once a new session sees it. Sessions open already keep
        the environment they started with."""
        self.env = {str(k): str(v) for k, v in env.items()}
        self.write_config()
        if not self.running:
            return
        os.kill(self.process.pid, signal.SIGHUP)
        self.wait_ready(timeout, env=self.env)

    def start(self) -> None:
        """Launch sshd (does not wait; see ``wait_ready``)."""
        if self.running:
            return
        _ensure_privsep_dir()
        if self.config_path is None:
            self.write_config()
        self.log_path = self.root / "sshd.log"
        limit = self.file_size_limit

        def limits():  # a file-size limit fills "the disk" for every session, without root
            if limit is not None:
                import resource
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        self.process = subprocess.Popen(
            [SSHD, "-D", "-f", str(self.config_path), "-E", str(self.log_path)],
            preexec_fn=limits,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a ^C on the test run does not hit it; atexit does
            close_fds=True,
        )
        at_exit(self, self._atexit)

    def _atexit(self) -> None:
        if self.running:
            self.kill()

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except (OSError, AttributeError):
            return ""
        return "\n".join(lines[-n:])

    def wait_ready(self, timeout: float = 15.0, env: dict[str, str] | None = None) -> None:
        """Wait until the port accepts and a strict key log-in runs ``true`` (with ``env``: until a session's
        environment holds those values; a reloading sshd may answer a moment with its old config)."""
        import paramiko

        deadline = time.monotonic() + timeout
        while not port_open(self.address, self.port, timeout=0.2):
            if self.process is not None and self.process.poll() is not None:
                raise RigError(
                    f"sshd for {self.name} ({self.address}:{self.port}) exited with "
                    f"code {self.process.returncode}:\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RigError(
                    f"sshd for {self.name} does not listen on {self.address}:{self.port} "
                    f"after {timeout}s:\n{self.log_tail()}"
                )
            time.sleep(0.02)
        last: Exception | None = None
        while time.monotonic() < deadline:
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.load_host_keys(str(self.known_hosts))
            try:
                client.connect(
                    self.address,
                    port=self.port,
                    username=self.user,
                    key_filename=str(self.client_key),
                    look_for_keys=False,
                    allow_agent=False,
                    timeout=5,
                    banner_timeout=5,
                    auth_timeout=5,
                )
                probe = "env -0" if env else "true"
                _, stdout, _ = client.exec_command(probe, timeout=10)
                seen = stdout.read()
                status = stdout.channel.recv_exit_status()
                if status == 0 and env:
                    have = dict(item.split("=", 1) for item in seen.decode(errors="replace").split("\0")
                                if "=" in item)
                    if any(have.get(k) != v for k, v in env.items()):
                        last = RigError(f"{self.name}: a session does not see {env} yet")
                        time.sleep(0.05)
                        continue
                if status != 0:
                    raise RigError(
                        f"sshd for {self.name} accepted the log-in of {self.user!r} but "
                        f"running 'true' exited {status}; is the user's shell usable?"
                    )
                return
            except paramiko.AuthenticationException as exc:
                raise RigError(
                    f"sshd for {self.name} refused the key log-in of {self.user!r} ({exc}). "
                    f"Check the account is not locked (usermod -p '*' {self.user}) and "
                    f"has a real shell. sshd log:\n{self.log_tail()}"
                ) from exc
            except (paramiko.SSHException, OSError, EOFError) as exc:
                last = exc
                time.sleep(0.05)
            finally:
                client.close()
        raise RigError(
            f"could not log in to {self.name} ({self.address}:{self.port}) within "
            f"{timeout}s: {last!r}\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL the listener and every session it forked: the host is 'down'.

        Open connections break, new ones are refused (nothing listens).
        """
        if self.process is None:
            return
        pid = self.process.pid
        if self.process.poll() is None:
            kids = descendants(pid)
            for p in [pid, *kids]:
                try:
                    os.kill(p, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            self.process.wait(timeout=10)
            wait_gone(kids, timeout=10)
        forget_at_exit(self)

    def stop(self) -> None:
        """Stop sshd and its sessions (SIGTERM, then SIGKILL)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            kids = descendants(self.process.pid)
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            for p in kids:
                try:
                    os.kill(p, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(timeout=10)
            wait_gone(kids, timeout=5)
        forget_at_exit(self)

    def restart(self, timeout: float = 15.0) -> None:
        """(Re)start sshd on the same address, port and host key; wait until usable."""
        if self.running:
            self.stop()
        self.start()
        self.wait_ready(timeout)

    # -- clients ----------------------------------------------------------------

    def connection(self, known_hosts: Path | None = None, **kwargs):
        """Fabric Connection to this host, verifying its key strictly."""
        return strict_connection(
            self.address,
            self.port,
            self.user,
            self.client_key,
            known_hosts or self.known_hosts,
            **kwargs,
        )

    def ssh_argv(self, known_hosts: Path | None = None) -> list[str]:
        """OpenSSH client argv (strict host key checking) for this host."""
        return [
            "ssh",
            "-F", "/dev/null",
            "-p", str(self.port),
            "-i", str(self.client_key),
            "-o", "IdentitiesOnly=yes",
            "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            f"{self.user}@{self.address}",
        ]  # fmt: skip


@dataclass
class SSHRig:
    """A set of sshd test hosts sharing one client key and one known_hosts."""

    hosts: list[SSHTestHost]
    client_key: Path
    known_hosts: Path
    user: str
    base: Path

    def __getitem__(self, i: int) -> SSHTestHost:
        return self.hosts[i]

    def __iter__(self):
        return iter(self.hosts)

    def __len__(self) -> int:
        return len(self.hosts)

    def __enter__(self) -> "SSHRig":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def host(self, name: str) -> SSHTestHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(name)

    def connection(self, host: SSHTestHost | str, known_hosts: Path | None = None, **kw):
        """Strict Fabric Connection (RejectPolicy + only this rig's known_hosts)."""
        if isinstance(host, str):
            host = self.host(host)
        return host.connection(known_hosts or self.known_hosts, **kw)

    def known_hosts_without(self, *excluded: SSHTestHost | str, path: Path | None = None) -> Path:
        """Write a known_hosts file listing every host except ``excluded``."""
        names = {h if isinstance(h, str) else h.name for h in excluded}
        if path is None:
            path = self.base / f"known_hosts_without_{'_'.join(sorted(names)) or 'none'}"
        return write_known_hosts(path, [h for h in self.hosts if h.name not in names])

    def stop(self) -> None:
        for h in self.hosts:
            h.stop()


def start_ssh_hosts(
    base: Path,
    n: int,
    client_key: Path | None = None,
    user: str | None = None,
    timeout: float = 20.0,
    env: list[dict[str, str]] | None = None,
) -> SSHRig:
    """Start ``n`` sshd hosts under ``base``; return once each accepts a key log-in.

    Hosts are ``host1``..``hostN`` on 127.0.0.2..127.0.0.(N+1), each with a
    ``deploy_to`` directory (``<root>/deploy``) owned by the log-in user.
    The log-in user is the current user; ``user`` may only name it (sshd not
    run as root can only log in its own user). ``env[i]``, if given, is more
    environment of every session on host i+1 (sshd_config SetEnv).
    """
    _check_sshd()
    me = pwd.getpwuid(os.geteuid()).pw_name
    user = user or me
    if user != me:
        raise RigError(f"the rig logs in as the current user {me!r}, not {user!r}")
    check_login_allowed(user)
    if n < 1 or n > 250:
        raise ValueError("n must be between 1 and 250")

    base = Path(base).absolute()
    base.mkdir(parents=True, exist_ok=True)
    if client_key is None:
        client_key = generate_key(base / "id_ed25519", comment=f"deploykit-test@{user}")
    client_key = Path(client_key).absolute()
    client_pub = _public_key(client_key)
    known_hosts = base / "known_hosts"

    hosts: list[SSHTestHost] = []
    for i in range(n):
        name = f"host{i + 1}"
        address = f"127.0.0.{2 + i}"
        root = base / name
        root.mkdir(parents=True, exist_ok=True)
        deploy_to = root / "deploy"
        deploy_to.mkdir(exist_ok=True)
        key = generate_key(root / "ssh_host_ed25519_key", comment=name)
        host_pub = " ".join(Path(f"{key}.pub").read_text().split()[:2])
        (root / "authorized_keys").write_text(client_pub + "\n")
        os.chmod(root / "authorized_keys", 0o600)
        hosts.append(
            SSHTestHost(
                name=name,
                address=address,
                port=0,
                user=user,
                root=root,
                deploy_to=deploy_to,
                host_key_pub=host_pub,
                known_hosts_line="",
                client_key=client_key,
                known_hosts=known_hosts,
                env=dict((env or [])[i]) if i < len(env or []) else {},
            )
        )

    rig = SSHRig(hosts=hosts, client_key=client_key, known_hosts=known_hosts, user=user, base=base)

    def assign_port(h: SSHTestHost) -> None:
        h.port = free_port(h.address)
        h.known_hosts_line = f"{_host_pattern(h.address, h.port)} {h.host_key_pub}"
        h.write_config()

    def ready(h: SSHTestHost) -> None:
        for attempt in range(3):
            try:
                h.wait_ready(timeout)
                return
            except RigError:
                # lost the race for the port to another process: pick another
                log = h.log_tail()
                lost_port = "already in use" in log or "Cannot bind" in log
                if attempt == 2 or h.running or not lost_port:
                    raise
                with lock:
                    assign_port(h)
                    write_known_hosts(known_hosts, hosts)
                h.start()

    lock = threading.Lock()
    try:
        for h in hosts:
            assign_port(h)
        write_known_hosts(known_hosts, hosts)
        for h in hosts:
            h.start()
        with ThreadPoolExecutor(max_workers=min(8, n)) as pool:
            for future in [pool.submit(ready, h) for h in hosts]:
                future.result()
    except BaseException:
        rig.stop()
        raise
    return rig
