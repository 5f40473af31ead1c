"""Commands on a host with a pipe of their own: byte streams, and sessions spoken to in lines.

A Stream is a command whose stdin or stdout carries bulk data (host-to-host
copies). A LineSession is a long-lived command spoken to in lines: what
replaces a process per request.

Starting a Django (about a second) or a psql (tens of milliseconds plus a
connection) for every question a run asks is most of what a run waits for.
A session starts the command once per run and host; each request is a line
on its stdin, each answer ends with a line the caller recognises. The command
is marked and tracked like any other (an interrupt kills it with all it
started), and it ends when the host is closed at the end of the run.
"""
from __future__ import annotations

import queue
import threading
from typing import TYPE_CHECKING

from ..errors import DeployError, HostCommandFailed, Interrupted

if TYPE_CHECKING:
    from .host import CommandResult


class SessionEnded(HostCommandFailed):
    """The session's command ended (or was killed) before it answered."""


class Stream:
    """A command on a host whose stdin or stdout is a byte stream; `close()` gives its exit status."""

    def __init__(self, host, command: str, token: str, pipe, write: bool):
        self.host, self.command, self.token, self.pipe, self.write_side = host, command, token, pipe, write

    def read(self, size: int = 1 << 20) -> bytes:
        return self.pipe.read(size)

    def write(self, data: bytes) -> None:
        self.pipe.write(data)

    def end_input(self) -> None:
        """End the command's stdin (a filter's: its output is read after)."""
        self.pipe.close_input()

    def close(self) -> CommandResult:
        """Wait for the command; its exit status and stderr (the stream side is closed first)."""
        try:
            return self.pipe.finish(self.command)
        finally:
            self.host._forget(self.token)

    def abort(self) -> None:
        """Stop the command and all it started (by its recorded token)."""
        try:
            self.pipe.abandon()
        finally:
            try:
                self.host.kill_marked(f"DEPLOYKIT_CMD={self.token}", grace=2)
            except DeployError:
                pass
            self.host._forget(self.token)


class LineSession(Stream):
    """stdin/stdout of one command as lines; a reader thread keeps stdout flowing."""

    def __init__(self, host, command: str, token: str, pipe):
        super().__init__(host, command, token, pipe, True)
        self._lines: queue.Queue = queue.Queue()
        self._ended = threading.Event()
        self._send_lock = threading.Lock()
        self.turn = threading.Lock()  # held by whoever is between a request and its answer
        self.tail: list[str] = []  # the last lines that were not answers: what a failing command said
        self.served = 0  # answers given: a session that served before and then ended was stopped from outside
        threading.Thread(target=self._read, daemon=True, name=f"session-{host.name}").start()

    @property
    def alive(self) -> bool:
        return not self._ended.is_set()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.pipe.read(1 << 16)
                if not chunk:
                    break
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._lines.put(line.decode(errors="replace"))
        except (OSError, EOFError, DeployError, ValueError):
            pass
        finally:
            if buf:
                self._lines.put(buf.decode(errors="replace"))
            self._ended.set()
            self._lines.put(None)

    def send(self, text: str) -> None:
        try:
            with self._send_lock:
                self.pipe.write(text.encode())
        except (OSError, EOFError, DeployError, ValueError) as exc:
            self._ended.set()
            raise self._gone(f"could not send to it ({exc})") from None

    def read_line(self, timeout: float) -> str:
        """The next stdout line; SessionEnded when the command ended, HostCommandFailed after `timeout`."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            self.abort()
            raise HostCommandFailed(f"{self.host.name}: {self.command[:80]!r} did not answer within {timeout:.0f}s "
                                    "(stopped)", hint="see what the command waits for on the host") from None
        if line is None:
            self._lines.put(None)  # every later read sees the end too
            raise self._gone("it ended")
        return line

    def _gone(self, why: str) -> DeployError:
        if self.host.cancelled.is_set():
            return Interrupted(f"{self.host.name}: interrupted: {self.command[:80]!r} was stopped")
        err = " | ".join(self.pipe.err.decode(errors="replace").strip().splitlines()[-3:]) if hasattr(
            self.pipe, "err") else ""
        said = err or " | ".join(self.tail[-3:])
        return SessionEnded(f"{self.host.name}: {self.command[:80]!r}: {why}{': ' + said if said else ''}",
                            hint="see the journal for the full output")

    def close(self, timeout: float = 10):
        """End the command by closing its stdin; stopped by its token if it has not ended after `timeout`."""
        done: list = []

        def finish():
            try:
                done.append(self.pipe.finish(self.command))
            except Exception as exc:  # the connection went: nothing is left to close
                done.append(exc)

        waiter = threading.Thread(target=finish, daemon=True)
        waiter.start()
        waiter.join(timeout)
        if not done:
            self.abort()
            return None
        self.host._forget(self.token)
        self._ended.set()
        return done[0]

    def abort(self) -> None:
        self._ended.set()
        super().abort()
