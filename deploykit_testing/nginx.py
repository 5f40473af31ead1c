"""A real nginx (Debian's package) run unprivileged on a loopback port, in front of the colours.

Everything it writes is inside its own prefix directory: nginx.conf, the pid
file, the error and access logs, every temp path; no `user` directive (as
root, nginx's own default applies to the workers). Its http block includes
`conf.d/*.conf`, where the upstream file deploykit owns lives, and proxies
every request to that upstream. It runs in the foreground (`daemon off`) as a
child of the tests, which stop it at the end; `command` is what the router's
config runs to test and reload it (`-t`, `-s reload` are appended).
"""
from __future__ import annotations

import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ._proc import RigError
from .ports import free_port, port_open

NGINX_CANDIDATES = ("/usr/sbin/nginx", "nginx")

CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log notice;
events {{ worker_connections 64; }}
http {{
    access_log {prefix}/access.log;
{http_extra}    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    include {prefix}/conf.d/*.conf;
    server {{
        listen {address}:{port};
{server_extra}        location / {{
            proxy_pass http://{upstream};
            proxy_set_header Host $host;
{location_extra}        }}
    }}
}}
"""


def _lines(directives, indent: int) -> str:
    return "".join(" " * indent + d + "\n" for d in directives)


def find_nginx() -> str:
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise RigError("nginx not found: install it (apt-get install nginx); the tests run it unprivileged")


@dataclass
class Nginx:
    prefix: Path
    upstream: str
    address: str = "127.0.0.1"
    port: int = 0
    binary: str = field(default_factory=find_nginx)
    process: subprocess.Popen | None = None

    @property
    def upstream_file(self) -> Path:
        return self.prefix / "conf.d" / f"{self.upstream}.conf"

    @property
    def pid_file(self) -> Path:
        return self.prefix / "nginx.pid"

    @property
    def conf(self) -> Path:
        return self.prefix / "nginx.conf"

    @property
    def command(self) -> str:
        """How the router's config runs this nginx: its prefix, its nginx.conf and its error log."""
        return shlex.join([self.binary, "-p", str(self.prefix), "-c", str(self.conf), "-e",
                           str(self.prefix / "error.log")])

    def url(self, path: str = "/") -> str:
        return f"http://{self.address}:{self.port}{path}"

    @classmethod
    def start(cls, prefix: Path, upstream: str, servers: list[str], timeout: float = 15.0, *,
              http_extra: list[str] = (), server_extra: list[str] = (), location_extra: list[str] = ()) -> "Nginx":
        """nginx serving `upstream` at `servers` (an upstream file without a colour: none is live yet).

        The *_extra are directives (each ending with ';') added to the http block, the server and its
        location: a balancer's log_format and access_log, proxy_next_upstream, ..."""
        ngx = cls(Path(prefix).absolute(), upstream)
        for sub in ("conf.d", "tmp", "logs"):
            (ngx.prefix / sub).mkdir(parents=True, exist_ok=True)
        ngx.upstream_file.write_text(f"upstream {upstream} {{\n" + "".join(f"    server {s};\n" for s in servers)
                                     + "}\n")
        ngx.port = free_port(ngx.address)
        ngx.conf.write_text(CONF.format(prefix=ngx.prefix, address=ngx.address, port=ngx.port, upstream=upstream,
                                        http_extra=_lines(http_extra, 4), server_extra=_lines(server_extra, 8),
                                        location_extra=_lines(location_extra, 12)))
        argv = shlex.split(ngx.command)
        check = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RigError(f"nginx -t refuses the rig's configuration: {check.stderr.strip()[-500:]}")
        log = open(ngx.prefix / "stderr.log", "ab")
        ngx.process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while not port_open(ngx.address, ngx.port):
            if ngx.process.poll() is not None or time.monotonic() > deadline:
                ngx.stop()
                raise RigError(f"nginx did not start: {(ngx.prefix / 'error.log').read_text()[-500:]}")
            time.sleep(0.05)
        return ngx

    def get(self, path: str = "/", timeout: float = 10) -> tuple[int, str]:
        """(status, body) of a GET through nginx."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()  # nginx: fast shutdown
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        self.process = None
