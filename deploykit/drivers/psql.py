"""One psql per host, server and run (a session) instead of a psql process per statement.

A release asks PostgreSQL a few dozen small questions (does the database
exist, its owner, its settings, snapshots to prune...). A psql process and a
new connection for each cost 50-150 ms; one psql kept open answers each in a
millisecond or two. The session behaves as a one-shot `psql -v
ON_ERROR_STOP=1` would: a script stops at its first error, and psql exits
then (the next question starts a new session), so a failing statement gives
the same exit status and message as before.

The session rests connected to the maintenance database: after a request
on another database it connects back, so it never holds a connection to a
database the run is about to clone, rename or drop.
"""
from __future__ import annotations

import secrets
import time

from ..transport.host import CommandResult
from ..transport.session import SessionEnded

MAINTENANCE_DB = "postgres"


class PsqlSession:
    """A LineSession running psql, with the database it is connected to."""

    def __init__(self, session, command: str):
        self.session, self.command = session, command
        self.mark = f"--deploykit-{secrets.token_hex(8)}--"  # a line no query result can be
        self.db = MAINTENANCE_DB

    # what Host.session needs of what it keeps
    @property
    def alive(self) -> bool:
        return self.session.alive

    def close(self, timeout: float = 10):
        return self.session.close(timeout)

    def abort(self) -> None:
        self.session.abort()

    def run(self, sql: str, db: str, timeout: float) -> CommandResult:
        """SQL as `psql -v ON_ERROR_STOP=1` runs it; the result a psql of its own would give."""
        session = self.session
        start = time.monotonic()
        text = sql.rstrip()
        # After the first answer, a no-op goes first: a connection that died while the session waited
        # (a server restart, terminated backends) fails it, and the script itself is known not to have run.
        script = f"DO $$BEGIN END$$;\n\\echo {self.mark}-ping\n" if session.served else ""
        if db != self.db:
            script += f"\\connect {_meta_quote(db)}\n"
        script += text + "\n"
        if db != MAINTENANCE_DB:
            script += f"\\connect {MAINTENANCE_DB}\n"
        script += f"\\echo {self.mark}\n"
        out: list[str] = []
        with session.turn:
            seen = len(getattr(session.pipe, "err", b""))
            try:
                session.send(script)
                deadline = start + timeout
                started = not session.served
                while True:
                    line = session.read_line(max(0.1, deadline - time.monotonic()))
                    if line == self.mark:
                        break
                    if line == f"{self.mark}-ping":
                        started = True
                        continue
                    out.append(line)
            except SessionEnded:
                ended = session.close(timeout=5)
                if not started:
                    raise  # the session had gone before the script began: run_sql asks a new one
                err = ended.stderr if isinstance(ended, CommandResult) else ""
                if not err:
                    err = bytes(getattr(session.pipe, "err", b"")[seen:]).decode(errors="replace")
                return CommandResult(self.command, getattr(ended, "exited", None) or 2,
                                     "\n".join(out), err, time.monotonic() - start)
        self.db = MAINTENANCE_DB
        session.served += 1
        return CommandResult(self.command, 0, "\n".join(out) + ("\n" if out else ""), "", time.monotonic() - start)


def _meta_quote(name: str) -> str:
    """A database name as one argument of a psql meta-command (single quotes, doubled inside)."""
    return "'" + name.replace("'", "''") + "'"


def session_for(host, key, command: str, access: dict) -> PsqlSession:
    """The run's psql on `host` under `key` (server, role, read-only or not), started on first use."""
    return host.session(key, lambda: PsqlSession(
        host.open_session(command, env=access.get("env"), secrets=access.get("secrets"), read_only=True), command))


def run_sql(host, key, command: str, access: dict, sql: str, db: str) -> CommandResult:
    """SQL through the run's session; sent once more, to a new session, when the one it was sent to had
    gone before the script began (its connection was dropped, or it was killed with an interrupt's leftovers)."""
    try:
        return session_for(host, key, command, access).run(sql, db, host.config.command_timeout)
    except SessionEnded:
        return session_for(host, key, command, access).run(sql, db, host.config.command_timeout)
