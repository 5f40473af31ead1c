"""One way to reach a host: the same methods over SSH or on the local machine.

Commands are shell strings; every value put into one goes through `q()`.
Remote helpers (deploykit/remote/*.py) are sent on stdin and run by the app's
Python, so nothing of deploykit is installed on a host.

Every command runs marked: its process and every child carry
`DEPLOYKIT_RUN=<run id>` and `DEPLOYKIT_CMD=<token>` in their environment, so
a command that times out, or is interrupted, is killed with all it started
by that recorded token, never by matching process names. Long commands of a
run (migrate, pg_restore, archives) are also listed in the run's pid file on
the host (`.deploykit/run/<run id>.pids`), so a later run can tell whether
they still run. Secrets (the admin's database password) reach a command on
its stdin, never in argv, the environment of the shell command line, or a
file on the host.

A host made for a dry-run refuses every command and helper action that is not
declared read-only: a dry-run cannot write, whatever a step does.
"""
from __future__ import annotations

import json
import os
import posixpath
import re
import secrets as _secrets
import shlex
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .. import layout
from ..config import Config, HostSpec
from ..errors import DeployError, DryRunWrite, HostCommandFailed, HostKeyUnknown, HostUnreachable, Interrupted
from .agent import BOOT, AgentClient, AgentLost, agent_payload
from .bundle import (REMOTE_DIR, helper_digest, helper_modules, helper_source,  # noqa: F401 (REMOTE_DIR: used by others)
                     read_only_actions)
from .session import LineSession, Stream

PID_MARK = "\x1edeploykit-pid "  # first stdout line of every command: its pid (= its process group)

# Helper actions that change nothing on the host: the only ones a dry-run may call (each helper's READ_ONLY).
READ_ONLY_ACTIONS = {module: read_only_actions(module) for module in helper_modules()}


# Helper actions that need the interpreter's site (a venv's sys.prefix is set by site): they start a Python of
# their own; every other action of a stdlib helper is forked by the host's agent (python -I -S)
NEEDS_SITE = {"pyenv": {"probe", "ensure"}}


def needs_site(module: str, action: str) -> bool:
    return action in NEEDS_SITE.get(module, ())


def q(value) -> str:
    """Quote one value for a POSIX shell."""
    return shlex.quote(str(value))


SEND_CHUNK = 256 * 1024
AGENT_EXIT_WAIT = 2.0  # seconds a closing host waits for its agent to exit (it has nothing left to do)


def sendall(chan, data) -> None:
    """chan.sendall in pieces: paramiko's sendall cuts what is left of its argument after every packet
    (`s = s[sent:]`), a copy each time, so a big write (a refresh's digests, tens of megabytes) was
    quadratic in its length."""
    view = memoryview(data)
    for start in range(0, len(view), SEND_CHUNK):
        chan.sendall(view[start:start + SEND_CHUNK].tobytes())


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

# Kill every process whose environment carries NAME=VALUE (an exact recorded
# id): TERM, a grace period, then KILL. Prints the pids it signalled.
_KILL = r"""
m="$1"; grace="$2"; me=$$
pids() { for d in /proc/[0-9]*; do p=${d#/proc/}; [ "$p" = "$me" ] && continue
  grep -qsxzF -- "$m" "$d/environ" 2>/dev/null && echo "$p"; done; }
first=$(pids); [ -z "$first" ] && exit 0
kill -TERM $first 2>/dev/null
i=0; while [ $i -lt $((grace * 10)) ]; do [ -z "$(pids)" ] && break; sleep 0.1; i=$((i + 1)); done
left=$(pids); [ -n "$left" ] && kill -KILL $left 2>/dev/null
echo $first
"""


class Host:
    """Base: what every step may do to a host. Subclasses provide `_exec`."""

    keeps_sessions = True  # open_session/session: a command kept open for the run (drivers/psql.py)

    def __init__(self, spec: HostSpec, config: Config, *, run_id: str = "none", read_only: bool = False):
        self.spec = spec
        self.config = config
        self.name = spec.name
        self.roles = spec.roles
        self.deploy_to = spec.deploy_to
        self.python = spec.python
        self.run_id = run_id
        self.read_only = read_only
        self.cancelled = threading.Event()  # set by an interrupt: new commands refused, running ones killed
        self._active: dict[str, str] = {}  # token -> command, running now
        self.tracked = False  # a long command of this run was listed in its pid file here
        self._active_lock = threading.Lock()
        self._agent: AgentClient | None = None
        self._agent_lock = threading.RLock()
        self._no_agent = False  # the host's Python could not start the agent: a process per command
        self._sessions: dict = {}  # key -> LineSession (a Django start-up, a psql) kept for the run
        self._facts: dict = {}  # key -> what fact() read once for the run (a tool's version)
        self._starting = threading.Lock()  # held while a session is looked up or started

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @property
    def is_primary(self) -> bool:
        return "primary" in self.roles

    def render(self, text: str) -> str:
        return self.spec.render(text)

    def path(self, *parts: str) -> str:
        return posixpath.join(self.deploy_to, *parts)

    @property
    def pid_file(self) -> str:
        return layout.pid_file(self, self.run_id)

    def connect(self) -> None:
        """Open the connection now, so errors surface before any change."""

    def close(self) -> None:
        self._close_sessions()
        self._stop_agent()

    # -- commands ------------------------------------------------------------
    def run(self, command: str, *, cwd: str | None = None, env: dict | None = None, secrets: dict | None = None,
            check: bool = True, timeout: float | None = None, stdin: str | None = None,
            read_only: bool = False, track: str | None = None, always: bool = False) -> CommandResult:
        """Run a shell command on the host.

        read_only: the command changes nothing (the only kind a dry-run runs).
        track: a label; the command is listed in the run's pid file while it runs.
        secrets: NAME -> value, exported to the command from its stdin.
        always: run even after an interrupt (journal lines, lock updates, kills).
        """
        if self.read_only and not read_only:
            raise DryRunWrite(f"{self.name}: refused to run {command[:100]!r} during a dry-run",
                              hint="this is a bug in a step that claims to be read-only; please report it")
        if self.cancelled.is_set() and not always:
            raise Interrupted(f"{self.name}: interrupted before {command[:80]!r}")
        token = _secrets.token_hex(8)
        inner, feed, marks = self._prepare(command, token, cwd=cwd, env=env, secrets=secrets, track=track)
        script = _MARK_PREFIX + inner
        with self._active_lock:
            self._active[token] = command
        try:
            parts = [p for p in ([feed] + (list(stdin) if isinstance(stdin, list) else [stdin])) if p]
            result = self._exec(script, stdin=parts, timeout=timeout or self.config.command_timeout, token=token,
                                marks=marks)
        finally:
            with self._active_lock:
                self._active.pop(token, None)
        result.command = command
        return self.judge(result, check=check, always=always)

    def judge(self, result: CommandResult, *, check: bool = True, always: bool = False) -> CommandResult:
        """What a command's result means for the run: stopped by an interrupt, failed, or done."""
        if self.cancelled.is_set() and not always and not result.ok:
            raise Interrupted(f"{self.name}: interrupted: {result.command[:80]!r} was stopped")
        if check and not result.ok:
            raise HostCommandFailed(
                f"{self.name}: command failed (exit {result.exited}): {result.command[:120]}: {result.tail()}",
                hint="see the journal for the full output")
        return result

    def _prepare(self, command: str, token: str, *, cwd=None, env=None, secrets=None, track=None):
        """The shell text around a command (secrets read from stdin, env, cwd, the pid-file line),
        what to feed its stdin first, and the marks its environment carries."""
        inner = ""
        feed = ""
        for name, value in (secrets or {}).items():
            value = "" if value is None else str(value)
            if "\n" in value or "\0" in value:
                raise DeployError(f"the value of {name} contains a line break", hint="use a password without one")
            inner += f"IFS= read -r {name} && export {name}; "
            feed += value + "\n"
        if env:
            inner += "export " + " ".join(f"{k}={q(v)}" for k, v in env.items()) + "; "
        if cwd:
            inner += f"cd {q(cwd)} || exit 1; "
        marks = {"DEPLOYKIT_RUN": self.run_id, "DEPLOYKIT_CMD": token}
        if track:
            self.tracked = True
            pid_file = self.pid_file
            label = re.sub(r"[^\w.:-]+", "_", track)[:60]
            inner = (f"mkdir -p {q(posixpath.dirname(pid_file))} 2>/dev/null; "
                     f"echo \"$$ {token} {label}\" >> {q(pid_file)} 2>/dev/null; ") + inner
            marks["DEPLOYKIT_TRACK"] = self.run_id
        return inner + command, feed, marks

    # -- the way to the host: one agent per host per run ------------------------
    def _exec(self, script: str, stdin: list, timeout: float, token: str, marks: dict | None = None) -> CommandResult:
        """Run `bash -c script` on the host with `marks` added to its environment.

        stdin parts are text or {"helper": module} (that helper's source, length first).
        """
        start = time.monotonic()
        stdin = [stdin] if isinstance(stdin, str) else (stdin or [])
        agent = self._agent_for_command()
        if agent is None:  # no agent on this host (its Python does not start): a process per command
            if marks:
                script = f"exec env {' '.join(f'{k}={q(v)}' for k, v in marks.items())} bash -c {q(script)}"
            return self._exec_direct(script, self._stdin_text(stdin), timeout, token)
        try:
            parts = [agent.ensure_source(helper_digest(p["helper"]), helper_source(p["helper"]))
                     if isinstance(p, dict) else p for p in stdin]
            answer = agent.run(script, parts, timeout, token, marks or {})
        except AgentLost as exc:
            raise self._lost(exc) from None
        return CommandResult(script, answer["exited"], _strip_mark(answer["stdout"]), answer["stderr"],
                             time.monotonic() - start)

    @staticmethod
    def _stdin_text(parts: list) -> str | None:
        text = "".join(f"{len(helper_source(p['helper']))}\n{helper_source(p['helper'])}" if isinstance(p, dict)
                       else p for p in parts)
        return text or None

    def _agent_for_command(self) -> AgentClient | None:
        """The running agent; started on first use; None when the host's Python cannot run it."""
        with self._agent_lock:
            if self._agent is not None and self._agent.lost:
                self._agent_dropped()
            if self._agent is None and not self._no_agent:
                try:
                    self._agent = self._start_agent()
                except AgentLost:
                    self._no_agent = True
            return self._agent

    def _agent_dropped(self) -> None:
        """The agent's channel closed between commands."""
        self._agent = None

    def _start_agent(self) -> AgentClient:
        raise NotImplementedError

    def _lost(self, exc) -> HostUnreachable:
        """The agent's channel closed under a request: what runs on the host keeps running."""
        with self._agent_lock:
            agent, self._agent = self._agent, None
        if agent is not None:
            agent.close()
        return HostUnreachable(f"host {self.name}: connection lost: {exc or type(exc).__name__}",
                               hint="check the host, then run the same command again: it finishes what was left")

    def _exec_direct(self, script: str, stdin: str | None, timeout: float, token: str) -> CommandResult:
        raise NotImplementedError

    def journal_append(self, path: str, line: str) -> None:
        """Append one journal line on the host without waiting for it (in order; flushed by close)."""
        if self.read_only:
            raise DryRunWrite(f"{self.name}: refused to write the journal {path} during a dry-run")
        agent = self._agent_for_command()
        if agent is None:
            self.run(f"mkdir -p -m 700 {q(posixpath.dirname(path))} && cat >> {q(path)}", stdin=line + "\n",
                     always=True, timeout=60)
            return
        try:
            agent.post({"op": "append", "path": path, "line": line})
        except AgentLost as exc:
            raise self._lost(exc) from None

    def flush(self) -> None:
        """Wait until the agent has written every journal line sent so far."""
        agent = self._agent
        if agent is not None and not agent.lost:
            try:
                agent.sync()
            except AgentLost:
                pass

    def _stop_agent(self) -> None:
        with self._agent_lock:
            agent, self._agent = self._agent, None
        if agent is not None:
            if not agent.lost:
                try:
                    agent.sync()
                except AgentLost:
                    pass
            agent.close()

    def kill_marked(self, marker: str, grace: float = 5) -> list[int]:
        """TERM (then KILL) every process of this host's user whose environment holds `marker`."""
        res = self._exec(f"exec bash -c {q(_KILL)} dk-kill {q(marker)} {int(grace)}", stdin=None,
                         timeout=grace + 30, token="kill")
        return [int(p) for p in res.stdout.split() if p.isdigit()]

    def cancel(self) -> list[int]:
        """Interrupt: refuse new commands, kill the running ones (each with all it started)."""
        self.cancelled.set()
        with self._active_lock:
            tokens = list(self._active)
        killed = []
        agent = self._agent
        for token in tokens:
            if agent is not None:
                try:
                    agent.cancel(token)  # a forked helper carries its token in memory, not in /proc
                except AgentLost:
                    pass
            try:
                killed += self.kill_marked(f"DEPLOYKIT_CMD={token}")
            except DeployError:
                pass
        return killed

    def resume(self) -> None:
        """Accept commands again (the procedure after an interrupt runs)."""
        self.cancelled.clear()

    def allows(self, module: str, action: str) -> bool:
        """Whether helper `module`'s `action` is read-only; on a dry-run Host any other is refused here."""
        read_only = action in READ_ONLY_ACTIONS.get(module, ())
        if self.read_only and not read_only:
            raise DryRunWrite(f"{self.name}: refused helper {module} {action} during a dry-run",
                              hint="this is a bug in a step that claims to be read-only; please report it")
        return read_only

    def helper(self, module: str, action: str, args: dict | None = None, *,
               env: dict | None = None, secrets: dict | None = None, check: bool = True,
               timeout: float | None = None, track: str | None = None, always: bool = False,
               python: str | None = None, cwd: str | None = None, launcher: str | None = None) -> dict:
        """Run remote/<module>.py ACTION with JSON args on the host's Python.

        `launcher` replaces `python -c` (e.g. `python manage.py shell -c`), so a
        helper can run inside the app's own environment.
        """
        read_only = self.allows(module, action)
        if self.read_only:  # and the helper refuses it again on the host
            env = {**(env or {}), "DEPLOYKIT_READ_ONLY": "1"}
        site = needs_site(module, action)
        if not (launcher or track or python or site):
            # a stdlib helper with the host's Python: forked on the host, no interpreter started
            doc = self._forked_helper(module, action, args or {}, env=env, secrets=secrets, cwd=cwd,
                                      timeout=timeout, always=always)
            if doc is not None:
                if check and not doc.get("ok"):
                    raise HostCommandFailed(f"{self.name}: {module} {action}: {doc.get('error')}")
                return doc
        name = f"deploykit-{module}.py"
        # the source crosses the channel once per connection; the agent feeds it from its cache
        payload = [{"helper": module}, json.dumps(args or {})]
        # -I -S: a stdlib helper needs no site-packages (and starts in a third of the time); the
        # environment builder looks at the interpreter's own site-packages, so it keeps them
        flags = "" if site else " -I -S"
        base = launcher or f"{q(python or self.python)}{flags} -c"
        cmd = f"{base} {q(_BOOTSTRAP.format(name=name))} {q(action)}"
        result = self.run(cmd, env=env, secrets=secrets, check=False, stdin=payload, timeout=timeout,
                          read_only=read_only, track=track, always=always, cwd=cwd)
        doc = _last_json(result.stdout)
        if not isinstance(doc, dict):
            raise HostCommandFailed(
                f"{self.name}: helper {module} {action} gave no answer (exit {result.exited}): {result.tail()}",
                hint=f"check that {python or self.python} runs on {self.name}")
        if check and not doc.get("ok"):
            raise HostCommandFailed(f"{self.name}: {module} {action}: {doc.get('error')}")
        return doc

    # -- streams ----------------------------------------------------------------
    def open_stream(self, command: str, *, write: bool, read_only: bool = False) -> "Stream":
        """Start COMMAND with its stdin (write=True) or its stdout (write=False) as a byte stream.

        For bulk data (host-to-host copies): it does not pass through the
        command channel. The command is marked like every other (killed with
        all it started on an interrupt) and refused during a dry-run unless
        declared read-only.
        """
        if self.read_only and not read_only:
            raise DryRunWrite(f"{self.name}: refused to stream into {command[:100]!r} during a dry-run",
                              hint="this is a bug in a step that claims to be read-only; please report it")
        if self.cancelled.is_set():
            raise Interrupted(f"{self.name}: interrupted before {command[:80]!r}")
        token = _secrets.token_hex(8)
        script = f"exec env DEPLOYKIT_RUN={q(self.run_id)} DEPLOYKIT_CMD={token} bash -c {q(command)}"
        with self._active_lock:
            self._active[token] = command
        try:
            pipe = self._open_pipe(script, write)
        except BaseException:
            self._forget(token)
            raise
        return Stream(self, command, token, pipe, write)

    def open_filter(self, command: str, *, env: dict | None = None, secrets: dict | None = None,
                    cwd: str | None = None, read_only: bool = False) -> "Stream":
        """Start COMMAND with both its stdin and its stdout as byte streams (a filter).

        For bulk data that must be written to a command and read back from it on
        the same host (a masking helper fed its program and arguments, then read;
        a `COPY FROM STDIN`). Secrets go first on stdin, as for `run`; the caller
        writes what follows, calls `end_input()` when it has written all, reads
        the output to its end, then `close()`. Refused during a dry-run unless
        declared read-only; killed by an interrupt like any command.
        """
        if self.read_only and not read_only:
            raise DryRunWrite(f"{self.name}: refused to stream into {command[:100]!r} during a dry-run",
                              hint="this is a bug in a step that claims to be read-only; please report it")
        if self.cancelled.is_set():
            raise Interrupted(f"{self.name}: interrupted before {command[:80]!r}")
        token = _secrets.token_hex(8)
        inner, feed, marks = self._prepare(command, token, cwd=cwd, env=env, secrets=secrets)
        script = f"exec env {' '.join(f'{k}={q(v)}' for k, v in marks.items())} bash -c {q(inner)}"
        with self._active_lock:
            self._active[token] = command
        try:
            pipe = self._open_pipe(script, True, duplex=True)
        except BaseException:
            self._forget(token)
            raise
        stream = Stream(self, command, token, pipe, True)
        if feed:
            stream.write(feed.encode())
        return stream

    def _open_pipe(self, script: str, write: bool, duplex: bool = False):
        raise NotImplementedError

    def open_session(self, command: str, *, cwd: str | None = None, env: dict | None = None,
                     secrets: dict | None = None, read_only: bool = False, track: str | None = None) -> LineSession:
        """Start COMMAND for a conversation in lines: requests on its stdin, answers on its stdout.

        What would otherwise start a process per request (a Django start-up,
        a psql) starts once per run. Marked, tracked and refused in a dry-run
        like a command; killed by an interrupt like one; closed with the host.
        """
        if self.read_only and not read_only:
            raise DryRunWrite(f"{self.name}: refused to start {command[:100]!r} during a dry-run",
                              hint="this is a bug in a step that claims to be read-only; please report it")
        if self.cancelled.is_set():
            raise Interrupted(f"{self.name}: interrupted before {command[:80]!r}")
        token = _secrets.token_hex(8)
        inner, feed, marks = self._prepare(command, token, cwd=cwd, env=env, secrets=secrets, track=track)
        script = f"exec env {' '.join(f'{k}={q(v)}' for k, v in marks.items())} bash -c {q(inner)}"
        with self._active_lock:
            self._active[token] = command
        try:
            pipe = self._open_pipe(script, True, duplex=True)
        except BaseException:
            self._forget(token)
            raise
        session = LineSession(self, command, token, pipe)
        if feed:
            session.send(feed)
        return session

    def fact(self, key, read):
        """A fact of this host that cannot change during a run (a tool's version): `read()` once, then kept.

        A read that fails raises and is not kept: the next asker tries again.
        """
        with self._active_lock:
            if key in self._facts:
                return self._facts[key]
        value = read()
        with self._active_lock:
            return self._facts.setdefault(key, value)

    def session(self, key, start) -> LineSession:
        """The run's live session under KEY on this host, started by `start()` when there is none (or it ended)."""
        with self._starting:  # two steps running at the same time start one session, not two
            with self._active_lock:
                found = self._sessions.get(key)
            if found is not None and found.alive:
                return found
            if found is not None:
                found.abort()
            made = start()
            with self._active_lock:
                self._sessions[key] = made
            return made

    def _close_sessions(self) -> None:
        with self._active_lock:
            sessions, self._sessions = list(self._sessions.values()), {}

        def close(session) -> None:
            try:
                session.close(timeout=10)
            except Exception:
                session.abort()
        # at once: each waits for its command to end (a Django's, a psql's), none for another's
        threads = [threading.Thread(target=close, args=(s,), daemon=True) for s in sessions[1:]]
        for t in threads:
            t.start()
        if sessions:
            close(sessions[0])
        for t in threads:
            t.join()

    def _forget(self, token: str) -> None:
        with self._active_lock:
            self._active.pop(token, None)

    def _forked_helper(self, module, action, args, *, env, secrets, cwd, timeout, always) -> dict | None:
        """Run a helper in a process forked by the host's agent; None when there is no agent."""
        if self.cancelled.is_set() and not always:
            raise Interrupted(f"{self.name}: interrupted before helper {module} {action}")
        agent = self._agent_for_command()
        if agent is None:
            return None
        token = _secrets.token_hex(8)
        marks = {"DEPLOYKIT_RUN": self.run_id, "DEPLOYKIT_CMD": token}
        for key, value in (secrets or {}).items():  # in the forked helper's memory: no argv, no /proc environ
            marks[key] = "" if value is None else str(value)
        marks.update({k: str(v) for k, v in (env or {}).items()})
        with self._active_lock:
            self._active[token] = f"helper {module} {action}"
        try:
            answer = agent.helper(module, action, args, env=marks, cwd=cwd,
                                  timeout=timeout or self.config.command_timeout, token=token)
        except AgentLost as exc:
            raise self._lost(exc) from None
        finally:
            with self._active_lock:
                self._active.pop(token, None)
        if self.cancelled.is_set() and not always and answer["exited"] != 0:
            raise Interrupted(f"{self.name}: interrupted: helper {module} {action} was stopped")
        doc = _last_json(answer["stdout"])
        if not isinstance(doc, dict):
            tail = " | ".join((answer["stderr"].strip() or answer["stdout"].strip()).splitlines()[-3:])
            raise HostCommandFailed(
                f"{self.name}: helper {module} {action} gave no answer (exit {answer['exited']}): {tail}",
                hint=f"check that {self.python} runs on {self.name}")
        return doc

    # -- small conveniences -----------------------------------------------------
    def exists(self, path: str) -> bool:
        return self.run(f"test -e {q(path)} -o -L {q(path)}", check=False, read_only=True).ok

    def realpath(self, path: str) -> str | None:
        res = self.run(f"readlink -f {q(path)}", check=False, read_only=True)
        return res.stdout.strip() if res.ok and res.stdout.strip() else None

    def read_json(self, path: str):
        doc = self.helper("files", "read_json", {"path": path})
        return doc["data"] if doc.get("exists") else None

    def write_json(self, path: str, data) -> None:
        self.helper("files", "write_json", {"path": path, "data": data})

    def listdir(self, path: str) -> list[str]:
        res = self.run(f"ls -1A {q(path)} 2>/dev/null", check=False, read_only=True)
        return sorted(x for x in res.stdout.splitlines() if x.strip())

    def put(self, local: str | Path, remote: str, mode: int = 0o600, progress=None) -> None:
        """Upload a file (written beside, renamed into place); `progress(sent, total)` as bytes go."""
        raise NotImplementedError

    def _refuse_put(self, remote: str) -> None:
        if self.read_only:
            raise DryRunWrite(f"{self.name}: refused to upload {remote} during a dry-run",
                              hint="this is a bug in a step that claims to be read-only; please report it")


# Every command prints its pid first (marked, stripped from the result), so a
# command is known by pid and token while it runs.
_MARK_PREFIX = "printf '\\036deploykit-pid %s\\n' $$; "


def _strip_mark(out: str) -> str:
    if out.startswith(PID_MARK):
        return out.split("\n", 1)[1] if "\n" in out else ""
    return out


class LocalHost(Host):
    """`host: local`: the demo and single-box installs. The same agent as over SSH, over a pipe."""

    def _start_agent(self):
        try:
            # a new session: Ctrl-C in the operator's terminal reaches deploykit, not the agent's commands
            proc = subprocess.Popen([self.python, "-I", "-S", "-c", BOOT], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise AgentLost(str(exc)) from None
        proc.stdin.write(agent_payload())
        proc.stdin.flush()

        def write(data):
            proc.stdin.write(data)
            proc.stdin.flush()

        def close():
            proc.stdin.close()  # the agent finishes what runs, then exits
            proc.stdout.close()

        agent = AgentClient(write, proc.stdout.readline, close, name=f"agent-{self.name}")
        try:
            agent.wait_ready(self.config.connect_timeout)
        except AgentLost:
            agent.close()
            raise
        return agent

    def _exec_direct(self, script, stdin, timeout, token):
        start = time.monotonic()
        # a new session: Ctrl-C in the operator's terminal reaches deploykit, not the command
        proc = subprocess.Popen(["bash", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            if token != "kill":
                self.kill_marked(f"DEPLOYKIT_CMD={token}", grace=2)
            try:
                os.killpg(proc.pid, 9)
            except OSError:
                pass
            out, err = proc.communicate()
            return CommandResult(script, 124, _strip_mark(out or ""), f"timed out after {timeout}s",
                                 time.monotonic() - start)
        return CommandResult(script, proc.returncode, _strip_mark(out), err, time.monotonic() - start)

    def _open_pipe(self, script, write, duplex=False):
        return _LocalPipe(script, write, duplex)

    def put(self, local, remote, mode=0o600, progress=None):
        self._refuse_put(remote)
        self.run(f"mkdir -p {q(posixpath.dirname(remote))}")
        tmp = f"{remote}.part"
        total, sent = os.path.getsize(local), 0
        with open(local, "rb") as src, open(tmp, "wb") as dst:
            os.chmod(tmp, mode)
            while chunk := src.read(1 << 20):
                dst.write(chunk)
                sent += len(chunk)
                if progress:
                    progress(sent, total)
        os.replace(tmp, remote)


class SSHHost(Host):
    """A host reached with Fabric; its key must already be in known_hosts."""

    def __init__(self, spec, config, **kwargs):
        super().__init__(spec, config, **kwargs)
        self._conn = None
        self._connect_lock = threading.Lock()

    @property
    def conn(self):
        if self._conn is None:
            self.connect()
        return self._conn

    def connect(self):
        with self._connect_lock:
            if self._conn is None:
                self._conn = self._open()

    def _open(self):
        import paramiko
        from fabric import Connection

        kwargs = {"look_for_keys": False, "allow_agent": False}
        if self.config.identity and not os.path.exists(self.config.identity):
            # paramiko would only say "No such file or directory", which reads like an unreachable host
            raise HostUnreachable(f"host {self.name}: the SSH identity file {self.config.identity} does not exist "
                                  "on this controller", hint="fix ssh.identity in deploykit.yaml")
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
        _no_delay(conn.client.get_transport())
        return conn

    def close(self):
        self._close_sessions()
        self._stop_agent()
        with self._connect_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _lost(self, exc) -> HostUnreachable:
        with self._agent_lock:
            agent, self._agent = self._agent, None
        if agent is not None:
            agent.close()
        with self._connect_lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except Exception:
                    pass
            self._conn = None
        return HostUnreachable(f"host {self.name}: connection lost: {exc or type(exc).__name__}",
                               hint="check the host, then run the same command again: it finishes what was left")

    def _transport(self):
        """The open SSH transport; reconnects once when it dropped since the last command."""
        try:
            transport = self.conn.client.get_transport()
            if transport is None or not transport.is_active():  # dropped since the last command: reconnect once
                self.close()
                transport = self.conn.client.get_transport()
            if transport is None or not transport.is_active():
                raise EOFError("the SSH transport is closed")
        except DeployError:
            raise
        except Exception as exc:  # OSError, EOFError, paramiko.SSHException
            raise self._lost(exc) from None
        return transport

    def _session(self):
        """A new channel of its own on the connection (bulk streams do not go through the agent)."""
        transport = self._transport()
        try:
            return transport.open_session(timeout=self.config.connect_timeout)
        except Exception as exc:  # OSError, EOFError, paramiko.SSHException
            raise self._lost(exc) from None

    def _open_pipe(self, script, write, duplex=False):
        return _ChannelPipe(self, script, write)  # a channel is both ways: stdin stays open while write=True

    def _start_agent(self):
        transport = self._transport()
        try:
            chan = transport.open_session(timeout=self.config.connect_timeout)
            chan.settimeout(None)
            chan.set_combine_stderr(True)  # a shell's complaint (no such python) is read, and ignored, as a line
            chan.exec_command(f"exec {q(self.python)} -I -S -c {q(BOOT)}")
            sendall(chan, agent_payload())
            reader = _Lines(chan.recv)
        except (OSError, EOFError, socket.timeout) as exc:
            raise self._lost(exc) from None
        except Exception as exc:
            if type(exc).__module__.startswith("paramiko"):
                raise self._lost(exc) from None
            raise

        def close():
            try:
                chan.shutdown_write()  # the agent finishes what runs, reaps its zygote, then exits
                # its exit status comes once sshd reaped it: nothing of the run is left behind on the host
                chan.status_event.wait(AGENT_EXIT_WAIT)
            finally:
                chan.close()

        agent = AgentClient(lambda data: sendall(chan, data), reader.readline, close, name=f"agent-{self.name}")
        try:
            agent.wait_ready(self.config.connect_timeout + 10)
        except AgentLost:
            agent.close()
            transport_alive = transport.is_active()
            if not transport_alive:
                raise self._lost(EOFError("the SSH transport closed")) from None
            raise
        return agent

    def _agent_dropped(self):
        self._agent = None
        conn = self._conn
        transport = conn.client.get_transport() if conn is not None else None
        if transport is not None and transport.is_active():
            # the agent went away but the connection is fine (the agent was killed): say so rather than
            # start a second one behind the back of commands that may still run
            raise HostUnreachable(f"host {self.name}: connection lost: the deploykit agent stopped",
                                  hint="check the host, then run the same command again: it finishes what was left")

    def _exec_direct(self, script, stdin, timeout, token):
        start = time.monotonic()
        transport = self._transport()
        try:
            chan = transport.open_session(timeout=self.config.connect_timeout)
        except Exception as exc:  # OSError, EOFError, paramiko.SSHException
            raise self._lost(exc) from None
        out, err = bytearray(), bytearray()
        try:
            chan.settimeout(None)
            chan.exec_command(script)
            if stdin:
                try:
                    sendall(chan, stdin.encode())
                except OSError:
                    pass  # the command ended without reading all of it; its exit status tells
            chan.shutdown_write()
            # blocking reads, one thread per stream; the exit status is an event to wait for
            readers = [threading.Thread(target=_drain, args=(chan.recv, out), daemon=True),
                       threading.Thread(target=_drain, args=(chan.recv_stderr, err), daemon=True)]
            for r in readers:
                r.start()
            if not chan.status_event.wait(max(0.0, start + timeout - time.monotonic())):
                chan.close()
                if token != "kill":
                    try:
                        self.kill_marked(f"DEPLOYKIT_CMD={token}", grace=2)
                    except DeployError:
                        pass
                return CommandResult(script, 124, _strip_mark(bytes(out).decode(errors="replace")),
                                     f"timed out after {timeout}s", time.monotonic() - start)
            status = chan.recv_exit_status()
            for r in readers:
                r.join()
            chan.close()
        except (OSError, EOFError, socket.timeout) as exc:
            raise self._lost(exc) from None
        except Exception as exc:  # paramiko.SSHException and friends
            if type(exc).__module__.startswith("paramiko"):
                raise self._lost(exc) from None
            raise
        return CommandResult(script, status, _strip_mark(out.decode(errors="replace")),
                             err.decode(errors="replace"), time.monotonic() - start)

    def put(self, local, remote, mode=0o600, progress=None):
        self._refuse_put(remote)
        self.run(f"mkdir -p {q(posixpath.dirname(remote))}")
        tmp = f"{remote}.part"
        try:
            sftp = self.conn.sftp()
            sftp.put(str(local), tmp, callback=progress)
            sftp.chmod(tmp, mode)
        except (OSError, EOFError) as exc:
            raise self._lost(exc) from None
        self.run(f"mv -f {q(tmp)} {q(remote)}")


class _Lines:
    """Lines read from `recv(n)` in large chunks (paramiko's own readline is quadratic in a line's length: an
    agent's answer of a hundred megabytes, a refresh's digests, took minutes)."""

    def __init__(self, recv, chunk: int = 1 << 20):
        self._recv, self._chunk = recv, chunk
        self._buf = bytearray()
        self._scanned = 0  # the buffer holds no newline before this position

    def readline(self) -> bytes:
        while True:
            end = self._buf.find(b"\n", self._scanned)
            if end >= 0:
                line = bytes(self._buf[:end + 1])
                del self._buf[:end + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buf)
            data = self._recv(self._chunk)
            if not data:
                line, self._buf = bytes(self._buf), bytearray()
                self._scanned = 0
                return line
            self._buf += data


class _LocalPipe:
    def __init__(self, script: str, write: bool, duplex: bool = False):
        self.start = time.monotonic()
        self.proc = subprocess.Popen(["bash", "-c", script], stdin=subprocess.PIPE if write else subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL if write and not duplex else subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self.write_side = write
        self.err = bytearray()
        self._err_reader = threading.Thread(target=self._drain, daemon=True)
        self._err_reader.start()

    def _drain(self):
        while chunk := self.proc.stderr.read(1 << 16):
            self.err += chunk

    def read(self, size):
        return self.proc.stdout.read1(size) if hasattr(self.proc.stdout, "read1") else self.proc.stdout.read(size)

    def write(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_input(self):
        self.proc.stdin.close()

    def finish(self, command):
        if self.write_side:
            self.proc.stdin.close()
        else:
            self.proc.stdout.read()
        status = self.proc.wait()
        self._err_reader.join(5)
        return CommandResult(command, status, "", self.err.decode(errors="replace"), time.monotonic() - self.start)

    def abandon(self):
        try:
            os.killpg(self.proc.pid, 9)
        except OSError:
            pass
        self.proc.wait()


class _ChannelPipe:
    def __init__(self, host: "SSHHost", script: str, write: bool):
        self.host = host
        self.start = time.monotonic()
        self.write_side = write
        self.err = bytearray()
        self.chan = host._session()
        self.chan.settimeout(None)
        self.chan.exec_command(script)
        if not write:
            self.chan.shutdown_write()

    def _drain_err(self):
        while self.chan.recv_stderr_ready():
            self.err += self.chan.recv_stderr(1 << 16)

    def read(self, size):
        try:
            data = self.chan.recv(size)
            self._drain_err()
            return data
        except (OSError, EOFError, socket.timeout) as exc:
            raise self.host._lost(exc) from None

    def write(self, data):
        try:
            sendall(self.chan, data)
            self._drain_err()
        except (OSError, EOFError, socket.timeout) as exc:
            if self.chan.exit_status_ready():  # the command ended before reading it all: close() says why
                raise BrokenPipeError(f"{self.host.name}: the command stopped reading") from None
            raise self.host._lost(exc) from None

    def close_input(self):
        try:
            self.chan.shutdown_write()
        except (OSError, EOFError, socket.timeout) as exc:
            raise self.host._lost(exc) from None

    def finish(self, command):
        try:
            if self.write_side:
                self.chan.shutdown_write()
            else:
                while self.chan.recv(1 << 16):
                    pass
            status = self.chan.recv_exit_status()
            while True:
                chunk = self.chan.recv_stderr(1 << 16)
                if not chunk:
                    break
                self.err += chunk
            self.chan.close()
        except (OSError, EOFError, socket.timeout) as exc:
            raise self.host._lost(exc) from None
        return CommandResult(command, status, "", self.err.decode(errors="replace"), time.monotonic() - self.start)

    def abandon(self):
        try:
            self.chan.close()
        except Exception:
            pass


def _last_json(out: str):
    """A helper's answer: the last line of its output that is JSON (a library may print before it)."""
    for line in reversed(out.strip().splitlines()):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    return None


def _drain(recv, into: bytearray) -> None:
    """Read one stream of a channel to its end (blocking)."""
    try:
        while True:
            data = recv(1 << 16)
            if not data:
                return
            into += data
    except Exception:  # the channel closed under us: what was read is kept
        return


def _no_delay(transport) -> None:
    """Send small SSH packets at once: with Nagle's algorithm on, each channel's
    open/exec/close round trip waits for delayed ACKs (34-62 ms a channel)."""
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_host(spec: HostSpec, config: Config, *, run_id: str = "none", read_only: bool = False) -> Host:
    cls = LocalHost if spec.is_local else SSHHost
    return cls(spec, config, run_id=run_id, read_only=read_only)
