"""The interruption matrix: every procedure, stopped at every phase and inside its longest command.

A `FaultLab` owns one deployed stage (real sshd hosts, PostgreSQL,
supervisord + gunicorn). It brings the stage to a known *golden* state once
(v1.0 then v1.1 released with data written after each, and a manual backup),
keeps a copy of it (every database of the stage cloned, every deploy root
copied) and resets the stage to it before each case in seconds.

A case runs one operator command (`deploykit release ...` in a subprocess,
exactly as an operator would), waits for the point named by the case — the
start of a phase, read from the run's own journal, or a long command of the
run found in its pid file on the host — and applies the fault: SIGINT,
SIGTERM, SIGKILL of the controller, or a dropped SSH connection (the sshd
session processes killed, the listener left up). When the command has ended,
and if it left the lock (or asked to be run again), the same command runs
again, as the ending line tells an operator to. Then the case checks what
the promise says: the databases (rows, schema, owners), media and the
version every host serves equal either the state before the run or the state
a completed run gives (measured once per procedure, without a fault) —
never a mix; every host serves; no lock, no passfile, no process of any run
and no controller temp directory is left. A rolling release that is undone
keeps its migrations by design (they were proven safe for the old code,
which served the data all along): its third allowed state is every host on
the code before with the data and schema of the completed run (BACK).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

FAULTS = ("sigint", "sigterm", "sigkill", "drop")
BACK = "back, migrations kept"  # an undone rolling release: the code before, the data and schema of after


@dataclass(frozen=True)
class Procedure:
    name: str
    argv: tuple  # after the command name: --host is added
    command: str  # the deploykit command (release, rollback, restore, backup)
    playbook: str  # the playbook whose phases are the points
    phases: tuple
    inside: str  # label prefix of its longest remote command in the run's pid file
    config: dict = field(default_factory=dict)  # changes to deploykit.yaml for this procedure
    in_procedure: bool = False  # the points lie in an on_failure procedure: a first signal only warns
    keeps_migrations: bool = False  # undone, it keeps its (additive) migrations: code before, schema after


PROCEDURES = {
    "release": Procedure("release", ("release", "--tag", "v1.2"), "release", "release",
                         ("check", "backup", "upload", "snapshot", "migrate", "switch", "verify", "finish"),
                         "migrate"),
    "recovery": Procedure("recovery", ("release", "--tag", "v1.3-broken-migration"), "release", "recover",
                          ("stop", "set_aside", "code", "check_backup", "restore", "swap", "start", "verify",
                           "finish"), "pg_restore_", config={"snapshots": False}, in_procedure=True),
    "rollback": Procedure("rollback", ("rollback", "--to-tag", "v1.0"), "rollback", "rollback",
                          ("prepare", "stop", "unapply", "switch", "migrate", "start", "verify", "finish"),
                          "unapply"),
    "rollback_data": Procedure("rollback_data", ("rollback", "--to-tag", "v1.0", "--with-data", "--yes"), "rollback",
                               "rollback_data",
                               ("prepare", "stop", "restore", "swap", "switch", "migrate", "start", "verify",
                                "finish"), "pg_restore_", config={"snapshots": False}),
    "restore": Procedure("restore", ("restore", "--backup", "{backup}", "--yes"), "restore", "restore",
                         ("check", "stop", "restore", "swap", "start", "verify", "finish"), "pg_restore_"),
    "backup": Procedure("backup", ("backup",), "backup", "backup", ("check", "backup", "finish"), "pg_dump_"),
    # a rolling release (one host, then the other) of migrations safe while the old code serves
    "rolling": Procedure("rolling", ("release", "--tag", "v1.6-additive", "--batch", "1,100%"), "release",
                         "release_rolling", ("check", "backup", "upload", "plan", "migrate", "rollout", "finish"),
                         "migrate", keeps_migrations=True),
}

#: what a completed run's database holds and an undone rolling release keeps (its migrations stay applied)
SCHEMA_KEYS = ("rows", "migrations", "schema", "owners", "settings")
#: every version a host of the lab may serve
SERVED = ("1.0", "1.1", "1.2", "1.6")


@dataclass(frozen=True)
class Case:
    procedure: str
    point: str  # a phase name, or "in:<label>"
    fault: str

    @property
    def id(self) -> str:
        return f"{self.procedure}@{self.point}/{self.fault}"


def all_cases() -> list[Case]:
    cases = []
    for proc in PROCEDURES.values():
        for point in list(proc.phases) + [f"in:{proc.inside}"]:
            for fault in FAULTS:
                cases.append(Case(proc.name, point, fault))
    return cases


# a representative subset for CI: every procedure, every fault, boundaries and long commands
CI_CASES = [
    Case("release", "migrate", "sigint"),
    Case("release", "in:migrate", "sigkill"),
    Case("release", "switch", "sigterm"),
    Case("release", "verify", "drop"),
    Case("recovery", "swap", "sigint"),
    Case("recovery", "in:pg_restore_", "sigkill"),
    Case("rollback", "in:unapply", "sigkill"),
    Case("rollback", "switch", "sigint"),
    Case("rollback_data", "swap", "sigterm"),
    Case("rollback_data", "in:pg_restore_", "drop"),
    Case("restore", "in:pg_restore_", "sigint"),
    Case("restore", "swap", "sigkill"),
    Case("backup", "in:pg_dump_", "sigterm"),
    Case("rolling", "rollout", "sigkill"),
]


@dataclass
class CaseResult:
    case: Case
    outcome: str  # "before", "after", or what went wrong
    seconds: float
    exits: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    fired: bool = False
    timings: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.fired and self.outcome in ("before", "after", BACK) and not self.problems


def _environ_has(pid: str, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def run_processes(run_id: str) -> list[tuple[int, str]]:
    """Processes on this machine that carry the marker of a run (none may outlive it)."""
    marker = f"DEPLOYKIT_RUN={run_id}".encode()
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
        except OSError:
            continue
        if marker in env:
            out.append((int(pid), cmd))
    return out


class FaultLab:
    def __init__(self, stage, workdir: Path):
        self.st = stage
        self.pg = stage.pg
        self.workdir = Path(workdir)
        self.golden_dir = self.workdir / "golden"
        self.golden_dbs: dict[str, dict] = {}  # name -> {"clone", "allowconn", "owner"}
        self.expected: dict[str, dict] = {}  # procedure -> normalized state after a clean run
        self.before: dict | None = None
        self.backup_id: str | None = None
        self.configs: dict[str, Path] = {}

    # -- the golden state ------------------------------------------------------
    def prepare(self) -> None:
        st = self.st
        for tag in ("v1.0", "v1.1"):
            cp = st.cli("release", "--host", st.name, "--tag", tag)
            if cp.returncode != 0:
                raise RuntimeError(f"release {tag} failed: {cp.stderr}")
            st.manage("seed_library", "--books", "3", "--with-covers", "--prefix", f"after-{tag}")
        # enough rows that pg_dump and pg_restore take a moment (the "inside" points)
        st.pg.psql(st.db, "INSERT INTO library_author (name) SELECT 'bulk ' || g FROM generate_series(1, 20) g; "
                          "INSERT INTO library_book (title, author_id, cover, created) "
                          "SELECT md5(g::text) || md5((g * 3)::text), (SELECT min(id) FROM library_author), '', now() "
                          "FROM generate_series(1, 150000) g;")
        cp = st.cli("backup", "--host", st.name)
        if cp.returncode != 0:
            raise RuntimeError(f"backup failed: {cp.stderr}")
        self.backup_id = sorted(p.name for p in (st.primary.deploy_to / "backups").iterdir()
                                if p.name.endswith("-manual"))[-1]
        # written after the backup: a restore of it (or a data rollback) must lose exactly these
        st.manage("seed_library", "--books", "2", "--with-covers", "--prefix", "after-backup")
        self._save_golden()
        self.before = self.state()
        for proc in PROCEDURES.values():
            self.configs[proc.name] = self._config_for(proc)

    def _config_for(self, proc: Procedure) -> Path:
        if not proc.config:
            return self.st.config_path
        cfg = yaml.safe_load(self.st.config_path.read_text())
        cfg.update(proc.config)
        path = self.workdir / f"deploykit-{proc.name}.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def _stage_databases(self) -> list[str]:
        """The live database and every derived one the registry lists."""
        names = {self.st.db}
        for h in self.st.hosts:
            reg = h.deploy_to / ".deploykit" / "releases.json"
            if reg.exists():
                names |= set(json.loads(reg.read_text()).get("derived", {}))
        existing = set(self.pg.databases())
        return sorted(n for n in names if n in existing)

    def _save_golden(self) -> None:
        self._web("stop")
        shutil.rmtree(self.golden_dir, ignore_errors=True)
        self.golden_dir.mkdir(parents=True)
        for h in self.st.hosts:
            subprocess.run(["cp", "-a", str(h.deploy_to), str(self.golden_dir / h.name)], check=True)
        for name in self._stage_databases():
            clone = "fg_" + hashlib.sha256(name.encode()).hexdigest()[:20]
            with self.pg.connect() as conn:
                row = conn.execute("SELECT datallowconn, pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s",
                                   (name,)).fetchone()
            self.pg.drop_database(clone)
            self._clone(name, clone, row[1])
            self.golden_dbs[name] = {"clone": clone, "allowconn": row[0], "owner": row[1]}
        self._web("start")

    def _clone(self, src: str, dest: str, owner: str) -> None:
        with self.pg.connect() as conn:
            conn.execute(f'ALTER DATABASE "{src}" WITH ALLOW_CONNECTIONS true')
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (src,))
            conn.execute(f'CREATE DATABASE "{dest}" TEMPLATE "{src}" OWNER "{owner}" STRATEGY FILE_COPY')

    def reset(self) -> None:
        """Back to the golden state: every database of the stage, every deploy root, the processes."""
        t = time.monotonic()
        self._web("stop")
        self.reset_times = {"stop": round(time.monotonic() - t, 2)}
        for name in set(self._stage_databases()) | set(self.golden_dbs):
            self.pg.drop_database(name)
        for name, meta in self.golden_dbs.items():
            self._clone(meta["clone"], name, meta["owner"])
            with self.pg.connect() as conn:
                conn.execute(f'ALTER DATABASE "{meta["clone"]}" WITH ALLOW_CONNECTIONS false')
                conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"true" if meta["allowconn"] else "false"}')
        self.reset_times["db"] = round(time.monotonic() - t, 2)
        for h in self.st.hosts:
            shutil.rmtree(h.deploy_to)
            subprocess.run(["cp", "-a", str(self.golden_dir / h.name), str(h.deploy_to)], check=True)
        self.reset_times["files"] = round(time.monotonic() - t, 2)
        self._web("start")
        self.reset_times["start"] = round(time.monotonic() - t, 2)

    def _web(self, verb: str) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(self.st.supervisors)) as pool:
            list(pool.map(lambda sup: sup.ctl(verb, "web"), self.st.supervisors))

    # -- what the promise is about -----------------------------------------------
    def state(self) -> dict:
        st = self.st
        rows = self.pg.row_checksums(st.db)
        rows.pop("django_migrations", None)  # its applied-at times differ between runs
        with self.pg.connect(st.db) as conn:
            migrations = sorted(conn.execute("SELECT app, name FROM django_migrations").fetchall())
            settings = conn.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d "
                                    "ON d.oid = s.setdatabase WHERE d.datname = current_database()").fetchall()
        served = {}
        for h in st.hosts:
            status, body = st.get(h)
            served[h.name] = body.get("version") if status == 200 and isinstance(body, dict) else f"HTTP {status}"
        return {"rows": rows, "migrations": [list(m) for m in migrations], "schema": self.pg.schema(st.db),
                "owners": self.pg.owners(st.db), "settings": settings, "media": st.media_checksums(),
                "served": served, "tags": {h.name: (st.revision(h) + [None, None])[1] for h in st.hosts}}

    def expect(self, proc: Procedure) -> dict:
        """The state a completed run of the procedure gives (measured once, without a fault).

        A recovery's completed state is the state before the release, and a
        backup changes no data: for those the state before is the expectation.
        """
        if proc.name in ("recovery", "backup"):
            return self.before
        if proc.name not in self.expected:
            self.reset()
            cp = self._command(proc)
            code = cp.wait(timeout=600)
            if proc.name == "recovery":
                if code != 1:
                    raise RuntimeError(f"the clean {proc.name} run ended with {code}")
            elif code != 0:
                raise RuntimeError(f"the clean {proc.name} run ended with {code}: {cp.stderr.read()}")
            self.expected[proc.name] = self.state()
        return self.expected[proc.name]

    # -- one case ------------------------------------------------------------------
    def _argv(self, proc: Procedure) -> list[str]:
        args = [a.replace("{backup}", self.backup_id or "") for a in proc.argv]
        return self.st.cli_argv(*args, "--host", self.st.name, config=self.configs[proc.name])

    def _command(self, proc: Procedure) -> subprocess.Popen:
        return subprocess.Popen(self._argv(proc), env=self.st.env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)

    def _journal(self, proc: Procedure, pid: int) -> Path | None:
        found = sorted(Path(self.st.config().journal_dir).glob(f"*-{proc.command}-{pid}.jsonl"))
        return found[-1] if found else None

    def _wait_point(self, proc: Procedure, case: Case, child: subprocess.Popen, timeout: float = 300) -> bool:
        deadline = time.monotonic() + timeout
        journal, seen = None, 0
        while time.monotonic() < deadline and child.poll() is None:
            journal = journal or self._journal(proc, child.pid)
            if journal is None:
                time.sleep(0.005)
                continue
            if case.point.startswith("in:"):
                if self._inside(journal.stem, case.point[3:]):
                    return True
            else:
                lines = journal.read_text().splitlines()
                for line in lines[seen:]:
                    try:
                        ev = json.loads(line)
                    except ValueError:
                        break
                    seen += 1
                    if ev.get("event") == "phase" and ev.get("playbook") == proc.playbook \
                            and ev.get("phase") == case.point:
                        return True
            time.sleep(0.003)
        return False

    def _inside(self, run_id: str, label: str) -> bool:
        """A long command of the run, with this label, is running on a host right now."""
        for h in self.st.hosts:
            pid_file = h.deploy_to / ".deploykit" / "run" / f"{run_id}.pids"
            try:
                lines = pid_file.read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                parts = line.split(None, 2)
                if len(parts) == 3 and parts[2].startswith(label) and \
                        _environ_has(parts[0], f"DEPLOYKIT_CMD={parts[1]}".encode()):
                    return True
        return False

    def _fault(self, proc: Procedure, case: Case, child: subprocess.Popen) -> None:
        if case.fault in ("sigint", "sigterm"):
            sig = signal.SIGINT if case.fault == "sigint" else signal.SIGTERM
            child.send_signal(sig)
            if proc.in_procedure:  # a first signal during a recovery only warns: the second stops at once
                time.sleep(0.3)
                if child.poll() is None:
                    child.send_signal(sig)
        elif case.fault == "sigkill":
            child.kill()
        elif case.fault == "drop":
            self.drop_connections()

    def drop_connections(self) -> None:
        """Kill every sshd session process (the connection drops); the listeners stay up."""
        from ._proc import descendants

        for h in self.st.hosts:
            if h.process is None:
                continue
            for pid in descendants(h.process.pid):
                try:
                    exe = os.readlink(f"/proc/{pid}/exe")
                except OSError:
                    continue
                if os.path.basename(exe) == "sshd":
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass

    def run_case(self, case: Case) -> CaseResult:
        proc = PROCEDURES[case.procedure]
        after = self.expect(proc)
        t0 = time.monotonic()
        self.reset()
        started = time.monotonic()
        result = CaseResult(case, "?", 0.0)
        child = self._command(proc)
        pids = [child.pid]
        result.fired = self._wait_point(proc, case, child)
        if result.fired:
            self._fault(proc, case, child)
        try:
            out, err = child.communicate(timeout=600)
        except subprocess.TimeoutExpired:
            child.kill()
            out, err = child.communicate()
            result.problems.append("the command did not end within 600 s")
        result.exits.append(child.returncode)
        result.timings = {"reset": round(started - t0, 1), "run": round(time.monotonic() - started, 1),
                          **getattr(self, "reset_times", {})}
        for _ in range(3):  # run the same command again while it says so (or a lock is left)
            if not self._locked() and child.returncode in (0, 1, 2, 130) and "run the same command again" not in err:
                break
            rerun = self._command(proc)
            pids.append(rerun.pid)
            out, err = rerun.communicate(timeout=600)
            result.exits.append(rerun.returncode)
            child = rerun
        result.seconds = time.monotonic() - started
        t1 = time.monotonic()
        now = self.state()
        result.timings["state"] = round(time.monotonic() - t1, 1)
        if now == self.before:
            result.outcome = "before"
        elif now == after:
            result.outcome = "after"
        elif proc.keeps_migrations and all(now[k] == after[k] for k in SCHEMA_KEYS) \
                and all(now[k] == self.before[k] for k in now if k not in SCHEMA_KEYS):
            result.outcome = BACK
        else:
            result.outcome = "MIX: " + ", ".join(k for k in now if now[k] != self.before[k] and now[k] != after[k])
        run_ids = [j.stem for pid in pids for j in [self._journal(proc, pid)] if j is not None]
        result.problems += self.leftovers(run_ids)
        for h in self.st.hosts:
            for b in (h.deploy_to / "backups").iterdir() if (h.deploy_to / "backups").exists() else []:
                if not (b / "manifest.json").exists():
                    result.problems.append(f"incomplete backup left: {h.name}:{b.name}")
        if not all(v in SERVED for v in now["served"].values()):
            result.problems.append(f"not serving: {now['served']}")
        result.last_stderr = err.strip().splitlines()[-1:] if err else []
        return result

    def _locked(self) -> bool:
        return any((h.deploy_to / ".deploykit" / "lock").exists() for h in self.st.hosts)

    def leftovers(self, run_ids: list[str]) -> list[str]:
        problems = []
        if self._locked():
            problems.append("a lock is left")
        for h in self.st.hosts:
            for p in h.deploy_to.rglob("pgpass*"):
                problems.append(f"passfile left: {p}")
        procs = [p for rid in run_ids for p in run_processes(rid)]
        if procs:
            problems.append(f"processes of a run left: {procs[:3]}")
        temps = [p for rid in run_ids for p in Path(tempfile.gettempdir()).glob(f"deploykit-{rid}-*") if p.is_dir()]
        if temps:
            problems.append(f"controller temp dirs left: {[str(t) for t in temps[:3]]}")
        return problems


def table(results: list[CaseResult]) -> str:
    lines = [f"{'case':<42} {'outcome':<10} {'seconds':>8}  exits   problems"]
    for r in results:
        outcome = r.outcome if r.fired else "NOT FIRED"
        lines.append(f"{r.case.id:<42} {outcome:<10} {r.seconds:8.1f}  {','.join(map(str, r.exits)):<7} "
                     f"{'; '.join(r.problems)}  {r.timings}")
    ok = sum(r.ok for r in results)
    lines.append(f"{ok}/{len(results)} cases kept the promise")
    return "\n".join(lines)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status == 200
    except Exception:
        return False


class open_lab:
    """A FaultLab on a stage of its own: sshd hosts, a PostgreSQL cluster, the sample repo (for `invoke faults`)."""

    def __init__(self, workdir: Path, hosts: int = 2, pg=None):
        self.workdir = Path(workdir)
        self.hosts = hosts
        self.pg = pg
        self._own_pg = pg is None

    def __enter__(self) -> FaultLab:
        from .samplerepo import build_sample_repo
        from .postgres import PgCluster
        from .sshd import start_ssh_hosts
        from .stage import make_stage

        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.pg is None:
            self.pg = PgCluster.start()
        self.rig = start_ssh_hosts(self.workdir / "ssh", self.hosts)
        repo = self.workdir / "library"
        if not repo.exists():
            build_sample_repo(repo)
        self.stage = make_stage(self.rig, self.pg, repo, keep_releases=5)
        lab = FaultLab(self.stage, self.workdir / "lab")
        lab.prepare()
        return lab

    def __exit__(self, *exc) -> None:
        self.stage.stop()
        self.rig.stop()
        if self._own_pg:
            self.pg.stop()
