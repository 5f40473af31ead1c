"""Helpers of the edge-case tests: stages on chosen database names, runs of the command without a tty,
the whole cluster's state, marked processes, files holding a secret."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from psycopg import sql

from deploykit_testing.stage import OWNER


def registry(host) -> dict:
    return json.loads((host.deploy_to / ".deploykit" / "releases.json").read_text())


def edit_config(st, edit, path: Path | None = None) -> Path:
    """Write st's deploykit.yaml, changed by `edit(cfg)`, to `path` (default: st's own file)."""
    cfg = yaml.safe_load(st.config_path.read_text())
    edit(cfg)
    path = path or st.config_path
    path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return path


def retarget(st, db: str, **top) -> None:
    """Point the stage at database `db` (created, owned by OWNER): deploykit.yaml and every host's shared/.env.

    `top` replaces top-level settings (e.g. app=..., keep_releases=...).
    """
    st.pg.create_database(db, OWNER)
    for h in st.hosts:
        env = h.deploy_to / "shared" / ".env"
        env.write_text(re.sub(r"^DB_NAME=.*$", lambda m: f"DB_NAME={db}", env.read_text(encoding="utf-8"),
                              flags=re.M), encoding="utf-8")

    def edit(cfg):
        cfg["databases"]["default"]["name"] = db
        cfg.update(top)
    edit_config(st, edit)
    st.db = db


def run(st, *args: str, config: Path | None = None, env: dict | None = None, timeout: float = 600,
        core: tuple = ()) -> subprocess.CompletedProcess:
    """The `deploykit` command as a script runs it: stdin is /dev/null (no tty, nobody to answer)."""
    argv = [sys.executable, "-m", "deploykit.cli", *core, *args, "--config", str(config or st.config_path)]
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env or st.env(),
                          timeout=timeout)


def popen(st, *args: str, config: Path | None = None) -> subprocess.Popen:
    argv = [sys.executable, "-m", "deploykit.cli", *args, "--config", str(config or st.config_path)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True, env=st.env())


def one_line(cp) -> str:
    """The single stderr line of a non-zero ending (no traceback, a hint)."""
    out = cp.stdout + cp.stderr
    assert "Traceback" not in out, out
    lines = [line for line in cp.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, cp.stderr
    assert lines[0].startswith("deploykit: error:") and "hint:" in lines[0], lines[0]
    return lines[0]


def says_where(line: str, backup: bool = True) -> None:
    """A failed run's last line names what is live, the lock, (the backup) and the journal."""
    for word in ("live: ", "lock: free", "journal: ") + (("backup: ",) if backup else ()):
        assert word in line, (word, line)


def db_settings(pg, db: str):
    """pg_db_role_setting of a database (all roles), exactly as stored: a list or None."""
    with pg.connect() as conn:
        row = conn.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                           "WHERE d.datname = %s AND s.setrole = 0", (db,)).fetchone()
    return row[0] if row else None


def cluster_state(pg) -> dict:
    """Every database of the cluster: oid, owner, connectability, settings, grants, and the rows of each
    one that accepts connections (snapshots do not)."""
    with pg.connect() as conn:
        rows = conn.execute(
            "SELECT d.datname, d.oid::int, pg_get_userbyid(d.datdba), d.datallowconn, d.datacl::text, "
            "(SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0) "
            "FROM pg_database d WHERE NOT d.datistemplate ORDER BY 1").fetchall()
    out = {}
    for name, oid, owner, allow, acl, settings in rows:
        entry = {"oid": oid, "owner": owner, "allow": allow, "acl": acl, "settings": settings}
        if allow:
            entry["rows"] = pg.row_checksums(name)
        out[name] = entry
    return out


def rename_database(pg, old: str, new: str) -> None:
    with pg.connect() as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                     "AND pid <> pg_backend_pid()", (old,))
        conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new)))


# -- processes ---------------------------------------------------------------------------------------------------
def marked_processes(marker: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of every process whose environment holds `marker` exactly (e.g. DEPLOYKIT_RUN=<id>)."""
    want = marker.encode()
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            env = (d / "environ").read_bytes().split(b"\0")
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if want in env:
            found.append((int(d.name), cmd))
    return found


def controller_temp_dirs(run_id: str) -> list[str]:
    """What is left of a run's private directory on the controller (context.temp_dir)."""
    base = Path(tempfile.gettempdir())
    return sorted(str(p) for p in base.glob(f"deploykit-{run_id}-*"))


def run_ids(journal_dir: Path) -> set[str]:
    return {p.stem for p in Path(journal_dir).glob("*.jsonl")}


def wait_for_event(journal: Path, proc: subprocess.Popen, timeout: float = 120, **match) -> dict:
    """Wait until the run's local journal has an event with these fields (or the run ends)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if journal.exists():
            for line in journal.read_text().splitlines():
                try:
                    ev = json.loads(line)
                except ValueError:
                    continue
                if all(ev.get(k) == v for k, v in match.items()):
                    return ev
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {match}: {out}\n{err}")
        time.sleep(0.05)
    raise AssertionError(f"no {match} in {journal} after {timeout}s")


# -- secrets on disk -----------------------------------------------------------------------------------------------
class SecretWatch:
    """Look, again and again while a run goes on, for any file holding `secret` under `roots` (and any
    process whose command line holds it).

    Files under `fresh_only` roots count only when written after the watch started (that tree is shared with
    everything else on the machine); files larger than 1 MB and directories in `skip` are not read.
    """

    def __init__(self, secret: str, roots: list[Path], fresh_only: list[Path] = (), skip: list[Path] = ()):
        self.secret = secret.encode()
        self.roots = [Path(r) for r in roots]
        self.fresh_only = [Path(r) for r in fresh_only]
        self.skip = {str(Path(s)) for s in skip}
        self.found: set[str] = set()
        self.in_argv: set[str] = set()  # command lines (/proc/PID/cmdline) holding the secret
        self.scans = 0
        self._seen: dict[str, tuple] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self.started = time.time()

    def _files(self, root: Path, fresh: bool):
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in self.skip]
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                except OSError:
                    continue
                if not os.path.isfile(path) or os.path.islink(path) or st.st_size > (1 << 20):
                    continue
                if fresh and st.st_mtime < self.started - 1:
                    continue
                yield path, (st.st_mtime_ns, st.st_size)

    def scan(self) -> None:
        for roots, fresh in ((self.roots, False), (self.fresh_only, True)):
            for root in roots:
                for path, key in self._files(root, fresh):
                    if self._seen.get(path) == key:
                        continue
                    self._seen[path] = key
                    try:
                        with open(path, "rb") as fh:
                            if self.secret in fh.read():
                                self.found.add(path)
                    except OSError:
                        continue
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                try:
                    argv = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if self.secret in argv:
                    self.in_argv.add(argv.replace(b"\0", b" ").decode(errors="replace")[:200])
        self.scans += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.scan()
            self._stop.wait(0.2)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.scan()
