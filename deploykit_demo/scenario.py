"""`invoke demo`: the main job on the embedded default (local host, SQLite).

Releases v1.0 then v1.1 of the sample library project into a sandbox, writes
books and cover files, releases a tag whose health check fails, and shows
deploykit detect and undo it. Succeeds only if the final state is v1.1 with
every row and media file it had before the broken release.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

from rich.table import Table

from deploykit import api
from deploykit.config import load_config
from deploykit.report import console, releases_table, step_line, timings_table
from deploykit_testing.ports import free_port
from deploykit_testing.supervisor import Supervisor
from deploykit_testing.wheelhouse import build_wheelhouse
from deploykit_testing.samplerepo import build_sample_repo

STAGE = "demo"


def write_config(project: Path, deploy_to: Path, supervisor_conf: str, port: int, wheels: Path) -> Path:
    cfg = {
        "app": "library",
        "deploy_to": str(deploy_to),
        "python": sys.executable,
        "settings_module": "libsite.settings",
        "stages": {STAGE: {"hosts": ["local"], "vars": {"port": port}}},
        "shared": [".env", "media"],
        "processes": [{"name": "web", "supervisor": {
            "program": "web", "conf": supervisor_conf,
            "supervisorctl": str(Path(sys.executable).with_name("supervisorctl"))}}],
        "databases": {"default": {"engine": "sqlite", "path": "shared/db.sqlite3"}},
        "media": [{"name": "media", "path": "shared/media"}],
        "health": [{"http": "http://127.0.0.1:{port}/health/", "headers": {"Host": "localhost"},
                    "json": {"status": "ok"}, "expect_status": 200, "timeout": 15},
                   {"manage": "check"}],
        "keep_releases": 3,
        # each release gets its own environment over this Python's packages; the sample's
        # extra requirements come from a local wheelhouse (offline)
        "venv": {"system_site_packages": True, "pip_args": ["--no-index", "--find-links", str(wheels)]},
    }
    path = project / "deploykit.yaml"
    path.write_text(json.dumps(cfg, indent=2))  # JSON is YAML
    return path


def sqlite_checksums(python: str, db: Path) -> dict:
    from deploykit.transport.host import REMOTE_DIR

    out = subprocess.run([python, str(REMOTE_DIR / "sqlite.py"), "checksums"], input=json.dumps({"path": str(db)}),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["tables"]


def media_checksums(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def post_book(url: str, title: str, author: str, cover: bytes) -> dict:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (("title", title), ("author", author)):
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="cover"; filename="cover.txt"\r\n'
                 f"Content-Type: text/plain\r\n\r\n".encode() + cover + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    req = urllib.request.Request(url, data=b"".join(parts), method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def run_demo(sandbox: str | os.PathLike = ".demo", keep: bool = False) -> bool:
    root = Path(sandbox).resolve()
    old_conf = root / "supervisor" / "supervisord.conf"
    if old_conf.exists():  # a previous demo left its processes running
        subprocess.run([str(Path(sys.executable).with_name("supervisorctl")), "-c", str(old_conf), "shutdown"],
                       capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    project, deploy_to = root / "project", root / "srv"
    shared = deploy_to / "shared"
    shared.mkdir(parents=True)
    console.rule("deploykit demo")
    console.print(f"sandbox: {root}")
    build_sample_repo(project)
    wheels = build_wheelhouse(root / "wheels")
    (shared / ".env").write_text(f"DB_ENGINE=sqlite\nDB_NAME={shared / 'db.sqlite3'}\nMEDIA_ROOT={shared / 'media'}\n"
                                 f"SECRET_KEY=demo-{uuid.uuid4().hex}\n")
    port = free_port()
    python = deploy_to / "current" / ".venv" / "bin" / "python"  # the live release's own environment
    sup = Supervisor.start(root / "supervisor", {"web": {
        "command": f"{python} -m gunicorn --chdir {deploy_to / 'current'} --bind 127.0.0.1:{port} --workers 2 libsite.wsgi",
        "directory": str(deploy_to),
    }})
    try:
        cfg = load_config(write_config(project, deploy_to, str(sup.conf), port, wheels))
        base = f"http://127.0.0.1:{port}"
        for tag in ("v1.0", "v1.1"):
            console.rule(f"release {tag}")
            result = api.release(cfg, STAGE, tag, reporter=step_line)
            if not result.ok:
                console.print(f"[red]release {tag} failed: {result.error.one_line()}[/red]")
                return False
            console.print(f"{base}/ answers {http_json(base + '/')}; its environment: "
                          f"{http_json(base + '/env/')['packages']}")

        console.rule("write data on v1.1")
        subprocess.run([str(python), "manage.py", "seed_library", "--books", "5", "--with-covers"],
                       cwd=deploy_to / "current", check=True, capture_output=True)
        book = post_book(base + "/api/books/", "Written over HTTP", "Demo Author", b"a cover uploaded over HTTP\n")
        console.print(f"5 books seeded with covers, 1 posted over HTTP: {book}")
        before_rows = sqlite_checksums(sys.executable, shared / "db.sqlite3")
        before_media = media_checksums(shared / "media")

        console.rule("release v1.3-broken-health (its health check fails)")
        broken = api.release(cfg, STAGE, "v1.3-broken-health", reporter=step_line)
        detected = not broken.ok and broken.failed_phase == "verify"
        console.print(f"failure detected: {detected} ({broken.error.one_line() if broken.error else 'no error!'})")
        console.print(f"recovered: {broken.recovered}")

        console.rule("final state")
        after_rows = sqlite_checksums(sys.executable, shared / "db.sqlite3")
        after_media = media_checksums(shared / "media")
        served = http_json(base + "/")
        env = http_json(base + "/env/")["packages"]
        revision = (deploy_to / "current" / "REVISION").read_text().split()
        checks = {
            "broken release detected": detected,
            "recovery succeeded": broken.recovered,
            "current is v1.1": revision[1:] == ["v1.1"],
            "app serves v1.1": served.get("version") == "1.1",
            "with v1.1's environment (dk-sample-extra 1.1)": env.get("dk-sample-extra") == "1.1",
            "every table's rows as before": after_rows == before_rows,
            f"all {len(before_media)} media files as before": after_media == before_media,
            "failed release kept in failed/": any((deploy_to / "failed").iterdir()),
        }
        console.print(releases_table(api.list_releases(cfg, STAGE)))
        console.print(timings_table(broken, "step timings of the broken release and its recovery"))
        table = Table(title="demo verdict")
        table.add_column("check")
        table.add_column("result")
        for name, ok in checks.items():
            table.add_row(name, "[green]yes[/green]" if ok else "[red]NO[/red]")
        console.print(table)
        ok = all(checks.values())
        console.print("[green]demo passed[/green]" if ok else "[red]demo FAILED[/red]")
        if keep:
            console.print(f"left running: {base}/ (stop with: supervisorctl -c {sup.conf} shutdown)")
        return ok
    finally:
        if not keep:
            sup.shutdown()
