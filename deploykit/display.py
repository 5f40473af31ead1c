"""What the operator sees while a command runs: step lines with live progress, plain lines, or JSON lines.

Everything shown comes from the run's journal events (state.journal.watching),
so the screen, `--json` and the journal never disagree:

- on a terminal, one line per finished step (report.step_line) and, below
  them, a live line per host for the step it runs now: elapsed time and its
  latest progress (health attempts with the last answer, migrate output,
  bytes sent);
- when stdout is not a terminal (logs, CI), the same as plain lines, the
  progress of bytes at most every few seconds;
- with `--json`, one JSON object per event on stdout and, last, one object
  `{"event": "result", ...}` with the outcome and the exit code. Nothing else
  reaches stdout; the last line for people still goes to stderr.
"""
from __future__ import annotations

import contextvars
import json
import sys
import threading
import time
from contextlib import ExitStack

from rich.live import Live
from rich.markup import escape
from rich.text import Text

from .report import console, step_line
from .state.journal import watching

BYTES_EVERY = 2.0  # seconds between two plain lines about the bytes of one step
QUIET_EVERY = 10.0  # plain lines: a step that said nothing for this long gets a line with its elapsed time

_current: contextvars.ContextVar["Display | None"] = contextvars.ContextVar("deploykit_display", default=None)


def current() -> "Display":
    """The display of the running command (a plain one outside a task: library use)."""
    return _current.get() or Display()


class Display:
    """One command's output. Use as a context manager around the command; `step` is the run's reporter."""

    def __init__(self, json_mode: bool = False, *, tty: bool | None = None, stream=None):
        self.json_mode = json_mode
        self.stream = stream or sys.stdout
        self.tty = (self.stream.isatty() if tty is None else tty) and not json_mode
        self.active: dict[str, dict] = {}  # host -> the step it runs now and its latest progress
        self._said_bytes: dict[tuple, float] = {}
        self._lock = threading.Lock()
        self._live: Live | None = None
        self._stack: ExitStack | None = None
        self._token = None
        self._ended = threading.Event()
        self.result_doc: dict | None = None

    # -- lifetime ----------------------------------------------------------------
    def __enter__(self) -> "Display":
        self._stack = ExitStack()
        self._stack.enter_context(watching(self.event))
        self._token = _current.set(self)
        if not self.tty and not self.json_mode:
            threading.Thread(target=self._tick, daemon=True, name="display-ticker").start()
        return self

    def __exit__(self, *exc) -> None:
        self._ended.set()
        self.pause()
        _current.reset(self._token)
        self._stack.close()

    def pause(self) -> None:
        """Stop the live lines (before a question is asked, and at the end)."""
        with self._lock:
            if self._live is not None:
                self._live.stop()
                self._live = None

    # -- what the run reports ------------------------------------------------------
    def step(self, rec) -> None:
        """A finished step (the engine's reporter): one line; in --json mode its journal event says it."""
        if not self.json_mode:
            step_line(rec)

    def event(self, entry: dict) -> None:
        """Every journal event, as it is recorded."""
        if self.json_mode:
            self._json(entry)
            return
        kind = entry.get("event")
        host = entry.get("host") or "controller"
        if kind == "batch":
            console.print(Text(f"  batch {entry.get('batch')}/{entry.get('of')}: {', '.join(entry.get('hosts') or [])}",
                               style="bold"))
        elif kind == "step_start":
            with self._lock:
                self.active[host] = {"step": entry.get("step"), "t": entry.get("t") or time.time(), "text": "",
                                     "batch": f"batch {entry['batch']}/{entry['of']}" if entry.get("batch") else ""}
            self._refresh()
        elif kind == "step":
            with self._lock:
                self.active.pop(host, None)
            self._refresh()
        elif kind == "progress":
            self._progress(host, entry)

    def _progress(self, host: str, entry: dict) -> None:
        text = str(entry.get("text") or "")
        with self._lock:
            doing = self.active.setdefault(host, {"step": entry.get("step"), "t": entry.get("t") or time.time()})
            doing["text"] = text
            doing["said"] = time.time()
            started = doing.get("t") or time.time()
        if self.tty:
            self._refresh()
            return
        if entry.get("kind") == "bytes" and not entry.get("done"):
            key = (host, entry.get("step"))
            now = time.monotonic()
            if now - self._said_bytes.get(key, 0.0) < BYTES_EVERY:
                return
            self._said_bytes[key] = now
        elapsed = max(0.0, (entry.get("t") or time.time()) - started)
        console.print(Text(f"      {host:<12} {entry.get('step') or '':<22} {elapsed:6.1f}s  {text}", style="dim"))

    def _tick(self) -> None:
        """Plain lines: a long step that reports nothing still says, now and then, that it runs and for how long."""
        while not self._ended.wait(1.0):
            now = time.time()
            with self._lock:
                quiet = [(host, dict(doing)) for host, doing in self.active.items()
                         if now - max(doing.get("said") or 0.0, doing.get("t") or now) >= QUIET_EVERY]
                for host, _ in quiet:
                    self.active[host]["said"] = now
            for host, doing in sorted(quiet):
                console.print(Text(f"      {host:<12} {doing.get('step') or '':<22} {now - doing['t']:6.1f}s  "
                                   "still running", style="dim"))

    def _refresh(self) -> None:
        if not self.tty:
            return
        with self._lock:
            if self._live is None:
                if not self.active:
                    return
                self._live = Live(self._render(), console=console, refresh_per_second=4, transient=True,
                                  get_renderable=self._render)
                self._live.start()
            else:  # now, not at the next tick: a line printed next must not bring back a finished step
                self._live.refresh()

    def _render(self) -> Text:
        now = time.time()
        out = Text()
        for host, doing in sorted(self.active.items()):
            batch = f"{doing['batch']:<11} " if doing.get("batch") else ""
            out.append(f"  … {host:<12} {batch}{doing.get('step') or '':<22} "
                       f"{max(0.0, now - (doing.get('t') or now)):6.1f}s  ", style="cyan")
            out.append(f"{doing.get('text') or ''}\n", style="dim")
        return out

    # -- output that is not an event ---------------------------------------------------
    def print(self, renderable, **kwargs) -> None:
        """Tables and lines for people; not shown in --json mode (the result holds the same facts)."""
        if not self.json_mode:
            console.print(renderable, **kwargs)

    def line(self, text: str, **kwargs) -> None:
        self.print(escape(text), **kwargs)

    def result(self, doc: dict) -> None:
        """The command's outcome: in --json mode, the last object on stdout."""
        self.result_doc = {"event": "result", **doc}
        if self.json_mode:
            self._json(self.result_doc)

    def _json(self, doc: dict) -> None:
        with self._lock:
            self.stream.write(json.dumps(doc, default=str) + "\n")
            self.stream.flush()


def run_result_doc(result, end, command: str) -> dict:
    """A RunResult and its Ending as the `--json` result object."""
    def records(run):
        return [{"playbook": r.playbook, "phase": r.phase, "step": r.step, "host": r.host, "status": r.status,
                 "seconds": round(r.seconds, 3), "message": r.message} for r in run.records]

    doc = {"command": command, "playbook": result.playbook, "run": result.run_id, "ok": end.code == 0, "code": end.code,
           "line": end.text(), "dry_run": result.dry_run, "failed_phase": result.failed_phase,
           "error": result.error.one_line() if result.error is not None else None,
           "steps": records(result), "data": result.data}
    if result.recovery is not None:
        rec = result.recovery
        doc["recovery"] = {"playbook": rec.playbook, "ok": rec.ok, "failed_phase": rec.failed_phase,
                           "error": rec.error.one_line() if rec.error is not None else None, "steps": records(rec)}
    return doc
