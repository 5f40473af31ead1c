"""The state of one run: config, hosts, journal, lock, and what steps hand on."""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .. import layout
from ..state import lock as stage_lock
from ..config import Config
from .state import RunState
from ..transport.host import Host, make_host, q
from ..state.journal import Journal, new_run_id
from ..state import local as local_state
from ..pyenv import app_python
from ..textsize import size_text

_TEMP = re.compile(r"^deploykit-\d{8}T\d{6}Z-[a-z_]+-(\d+)-")


def sweep_dead_temp_dirs() -> list[str]:
    """Remove the controller temp dirs of runs whose process is gone (killed with SIGKILL, say)."""
    removed = []
    base = Path(tempfile.gettempdir())
    for entry in base.glob("deploykit-*"):
        m = _TEMP.match(entry.name)
        if not m or not entry.is_dir():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its run is alive
        except PermissionError:
            continue
        except OSError:
            pass
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(str(entry))
    return removed


class Context:
    """One run. `stage` is the stage it works on; `others` are further stages it reads from or copies to
    (the source and target of a transfer or a refresh): their hosts are journaled, interrupted and
    closed with the run's own."""

    def __init__(self, config: Config, stage: str, *, command: str, dry_run: bool = False,
                 options: dict | None = None, run_id: str | None = None, others: tuple[str, ...] = ()):
        self.config = config
        self.stage = stage
        self.command = command
        self.run_id = run_id or new_run_id(command)
        self.dry_run = dry_run
        self.stages: dict[str, list[Host]] = {
            name: [make_host(spec, config, run_id=self.run_id, read_only=dry_run) for spec in config.stage(name)]
            for name in dict.fromkeys((stage, *others))}
        self.hosts: list[Host] = self.stages[stage]
        self.primary: Host = self.primary_of(stage)
        self.home: Host = self.primary  # the run's own stage's primary: its lock carries the progress
        self._focused: list | None = None  # [stage, phases in it, the run's own (stage, hosts, primary)]
        self.batch: dict | None = None  # the batch of a rolling release the steps run in (engine/batches.py)
        self.tolerate = None  # in a batch: callable(failed [(host, error)]) -> True when the rollout goes on
        local_state.prepare(config, current=self.run_id)  # .deploykit/ with its .gitignore; old journals pruned
        self.journal = Journal(self.run_id, config.journal_dir, self.every_host)
        self.options = options or {}
        # what the run is (`deploykit log` lists runs by it; older journals lack it)
        self.journal.record("run_start", command=command, stage=stage, others=list(others), dry_run=dry_run,
                            options=self.options)
        self.state = RunState()  # what steps hand on
        self.failure = None
        self.locked: list[Host] = []
        # what the run is about
        self.revision = None  # gitrepo.Revision being released
        self.release_id: str | None = None  # the release being made (or recovered from)
        self.previous: dict | None = None  # registry entry of the release to go back to
        self.failed: dict | None = None  # registry entry of the release being undone
        self.backup_id: str | None = None
        self.confirm = None  # callable(summary: dict) -> bool, for steps that ask the operator
        self.resume_point: dict = {}  # where the run is, kept in the lock (its "progress" field) for a takeover
        self.interrupted: int | None = None  # the signal that interrupted the run
        self.hard_stopped: int | None = None  # a second signal: stopped at once
        self.in_procedure = False  # an on_failure procedure (abort, recover, finish) is running
        self.outcome: dict = {}  # what the ending line says: healthy, data, ...
        self.lock_lost: str | None = None
        self.lock = threading.RLock()  # for state that steps running on several hosts share
        self._interrupting = threading.Lock()  # an interrupt finishes killing before a procedure starts
        self._progress_lock = threading.RLock()
        self._doing = threading.local()  # the step each thread runs: what its progress events belong to
        self._tmp: Path | None = None
        self._heartbeat = stage_lock.Heartbeat(self, config.lock.heartbeat)
        if not dry_run:
            sweep_dead_temp_dirs()

    # -- hosts -------------------------------------------------------------
    @property
    def every_host(self) -> list[Host]:
        """The hosts of every stage of the run."""
        return [h for hosts in self.stages.values() for h in hosts]

    def primary_of(self, stage: str) -> Host:
        return next(h for h in self.stages[stage] if h.is_primary)

    def stage_hosts(self, stage: str) -> list[Host]:
        """The hosts of a stage of the run; a stage the run did not start with (a procedure of a transfer
        finished by another command) is reached on first use."""
        with self.lock:
            if stage not in self.stages:
                self.stages[stage] = [make_host(spec, self.config, run_id=self.run_id, read_only=self.dry_run)
                                      for spec in self.config.stage(stage)]
            return self.stages[stage]

    @contextmanager
    def focus(self, stage: str):
        """Steps see `stage` as the run's stage (its hosts, its primary) for a while: a transfer's phases
        on the source, then on the target. Progress is kept on the run's own primary throughout.

        Phases running at the same time (runs_with) focus the same stage (the playbook loader checks it):
        the first to enter sets it, the last to leave puts the run's own back."""
        hosts = self.stage_hosts(stage)
        with self.lock:
            if self._focused:
                if self._focused[0] != stage:
                    raise RuntimeError(f"focus on {stage} while phases run on {self._focused[0]}")
                self._focused[1] += 1
            else:
                self._focused = [stage, 1, (self.stage, self.hosts, self.primary)]
                self.stage, self.hosts, self.primary = stage, hosts, next(h for h in hosts if h.is_primary)
        try:
            yield
        finally:
            with self.lock:
                self._focused[1] -= 1
                if self._focused[1] == 0:
                    self.stage, self.hosts, self.primary = self._focused[2]
                    self._focused = None

    @contextmanager
    def narrow(self, names: list[str], *, batch, of, started: float, tolerate):
        """Steps see only these hosts of the stage for a while (a batch of a rolling release); the primary stays
        the stage's. `tolerate(failed)`: what the runner asks when hosts' steps fail (engine/batches.py)."""
        with self.lock:
            saved = (self.hosts, self.batch, self.tolerate)
            self.hosts = [h for h in saved[0] if h.name in names]
            self.batch = {"batch": batch, "of": of, "started": started, "hosts": list(names)}
            self.tolerate = tolerate
        try:
            yield
        finally:
            with self.lock:
                self.hosts, self.batch, self.tolerate = saved

    def drop_hosts(self, hosts: list[Host]) -> None:
        """Hosts that failed drop out of the rest of their batch."""
        with self.lock:
            self.hosts = [h for h in self.hosts if h not in hosts]

    @property
    def app_hosts(self) -> list[Host]:
        return [h for h in self.hosts if "app" in h.roles]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def foreign_locks(self) -> list[tuple]:
        """Other runs' locks on the stage's hosts, judged (engine.takeover): (holder, its unfinished procedure)."""
        from .takeover import holders, pending_procedure  # takeover runs playbooks: imported when asked

        return [(h, pending_procedure(self.config, h.holder.get("progress")) if h.host is self.primary else None)
                for h in holders(self)]

    # -- layout -------------------------------------------------------------
    def release_dir(self, host: Host, release_id: str | None = None) -> str:
        return layout.release_dir(host, release_id or self.release_id)

    def backup_dir(self, host: Host, backup_id: str | None = None) -> str:
        return layout.backup_dir(host, backup_id or self.backup_id)

    def failed_dir(self, host: Host, release_id: str | None = None) -> str:
        return layout.failed_dir(host, release_id or self.release_id or f"run-{self.run_id}")

    def manage(self, host: Host, args: str, release_dir: str | None = None, check: bool = True, timeout=None,
               track: str | None = None, read_only: bool = False):
        """Run `python manage.py ARGS` in a release directory on the host, with the release's own Python."""
        cwd = release_dir or layout.current(host)
        env = {"DJANGO_SETTINGS_MODULE": self.config.settings_module} if self.config.settings_module else None
        return host.run(f"{app_python(self.config, host, cwd)} manage.py {args}", cwd=cwd, env=env, check=check,
                        timeout=timeout, track=track, read_only=read_only)

    # -- controller-side scratch space -------------------------------------------
    def temp_dir(self) -> Path:
        """A private directory on the controller, removed when the run ends (whatever the ending)."""
        with self.lock:
            if self._tmp is None:
                sweep_dead_temp_dirs()
                self._tmp = Path(tempfile.mkdtemp(prefix=f"deploykit-{self.run_id}-"))
            return self._tmp

    # -- lock -------------------------------------------------------------------
    def holder_info(self) -> dict:
        return stage_lock.holder_info(self.run_id, self.command, self.stage)

    def locked_on(self, host: Host) -> None:
        """This run holds the lock on host: journal there too, keep it fresh."""
        with self.lock:
            if host not in self.locked:
                self.locked.append(host)
        self.journal.enable_remote(host)
        self._heartbeat.start()

    def lose_lock(self, host: Host) -> None:
        """Another run took the lock of `host` over: stop changing anything."""
        with self.lock:
            self.lock_lost = host.name
            if host in self.locked:
                self.locked.remove(host)
        for h in self.every_host:
            h.cancelled.set()

    def doing(self, playbook: str | None, phase: str | None = None, step: str | None = None) -> None:
        """The step this thread runs now (the runner says so; None when it ends)."""
        self._doing.step = (playbook, phase, step) if playbook else None

    def progress(self, host: Host | None, text: str, **fields) -> None:
        """Tell the operator how a long step is getting on (a health attempt, a migrate line, bytes sent).

        Journaled like every event, so `--json`, the live display and the
        report see it; the step it belongs to is the one this thread runs.
        """
        current = getattr(self._doing, "step", None)
        if current:
            fields = {"playbook": current[0], "phase": current[1], "step": current[2], **fields}
        self.journal.record("progress", host=host, text=text, **fields)

    def bytes_progress(self, host: Host | None, what: str, every: float = 0.5):
        """A `progress(sent, total)` callback for uploads and copies: a progress event at most every `every`
        seconds, and always the last one (done)."""
        last = [0.0]

        def progress(sent: int, total: int | None = None) -> None:
            done = total is not None and sent >= total
            now = time.monotonic()
            if not done and now - last[0] < every:
                return
            last[0] = now
            of = f" of {size_text(total)}" if total else ""
            self.progress(host, f"{what}: {size_text(sent)}{of}", kind="bytes", what=what, bytes=sent,
                          total=total, done=done)
        return progress

    def record_progress(self, **fields) -> None:
        """Keep in the primary's lock what a run finishing this one needs (phase, procedure, ids)."""
        with self._progress_lock:  # phases running at the same time record in turn
            self.resume_point.update(fields)
            self.resume_point["context"] = self.export_state()
            if self.home in self.locked and not self.dry_run:
                try:
                    stage_lock.heartbeat(self.home, self.run_id, {"progress": self.resume_point})
                except Exception:  # an unreachable primary: the step about to run will say so
                    pass

    def export_state(self) -> dict:
        rev = self.revision
        return {"release_id": self.release_id, "backup_id": self.backup_id, "previous": self.previous,
                "failed": self.failed, "options": self.options,
                "revision": {"commit": rev.commit, "tag": rev.tag, "tags": rev.tags} if rev else None,
                "state": self.state.export()}

    def import_state(self, doc: dict) -> None:
        from ..gitrepo import Revision

        self.release_id = doc.get("release_id")
        self.backup_id = doc.get("backup_id")
        self.previous = doc.get("previous")
        self.failed = doc.get("failed")
        self.options.update(doc.get("options") or {})
        rev = doc.get("revision")
        if rev:
            self.revision = Revision(rev.get("commit") or "", rev.get("tag"), rev.get("tags") or [], "")
        self.state.update(doc.get("state") or {})

    # -- interrupts ------------------------------------------------------------
    def interrupt(self, signum: int) -> None:
        """First signal: refuse new commands, kill the running ones on every host (in parallel)."""
        with self._interrupting:
            if self.interrupted is None:
                self.interrupted = signum
            self.journal.record("interrupted", signal=signum)
            with ThreadPoolExecutor(max_workers=max(1, len(self.every_host))) as pool:
                list(pool.map(lambda h: h.cancel(), self.every_host))

    def accept_commands(self) -> None:
        """The procedure for the point reached runs: hosts accept commands again."""
        with self._interrupting:
            for h in self.every_host:
                h.resume()

    # -- end of run -----------------------------------------------------------
    def close(self) -> None:
        self._heartbeat.stop()
        self.accept_commands()
        if self.locked and not self.dry_run:
            # the lock stays (work is left to finish): say the run ended, so the next command may take over
            for host in list(self.locked):
                try:
                    fields = {"ended": True}
                    if host is self.home:
                        fields["progress"] = self.resume_point
                    stage_lock.heartbeat(host, self.run_id, fields)
                except Exception:
                    pass
        self.journal.record("run_end", locked=[h.name for h in self.locked], release=self.release_id,
                            backup=self.backup_id)
        # every host at once: closing waits for its sessions (Django, psql) and its agent to end
        hosts = self.every_host
        if len(hosts) > 1:
            with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
                futures = [pool.submit(self._close_host, host) for host in hosts]
            errors = [f.exception() for f in futures if f.exception() is not None]
        else:
            errors = []
            for host in hosts:
                self._close_host(host)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        if errors:  # every host was closed first
            raise errors[0]

    def _close_host(self, host: Host) -> None:
        if host.tracked and host not in self.locked and not self.dry_run:
            try:  # nothing of this run is left to look for
                host.run(f"rm -f {q(host.pid_file)}", always=True, timeout=30)
            except Exception:
                pass
        host.close()

    def unlock_all(self) -> None:
        for host in list(self.locked):
            with self.lock:
                if host in self.locked:
                    self.locked.remove(host)
            stage_lock.release(host, self.run_id)
