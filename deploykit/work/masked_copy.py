"""A refresh's table copies: read with COPY on the source, masked there, relayed, written with COPY on the target.

Every table is read in one snapshot of the source (exported by a transaction
held open for the copy: pg_dump -j does the same), so the copy is consistent
while production keeps serving. A table with masked columns is read through
the mask helper *on the source host*: the values that leave that host are
masked already, so no original of a masked column is ever written on the
target, in a table, WAL or a temp file. Tables without rules go as they are.
Several tables copy at once (`jobs`), the largest first.
"""
from __future__ import annotations

import json
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

from ..errors import DeployError, Interrupted
from ..pyenv import app_python
from ..sqltext import ident, literal
from ..transport.bundle import helper_source
from ..transport.host import q
from ..work.catalog import Table
from ..work.subset import qualified, select

CHUNK = 1 << 20
MASK_HELPER = "mask"
# runs a helper's source sent on stdin (its length first, in bytes), then the helper reads the rest of stdin
_BOOT = ("import sys;b=sys.stdin.buffer;n=int(b.readline());src=b.read(n).decode();"
         "sys.argv=['deploykit-mask.py','stream'];exec(compile(src,'deploykit-mask.py','exec'),{'__name__':'__main__'})")


def psql_argv(driver, db: str, *commands: str) -> list[str]:
    """psql's argv for `commands` (each its own -c) on database db, as the admin role, never asking a password."""
    argv = ["psql", *driver.conn_argv(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", db]
    for c in commands:
        argv += ["-c", c]
    return argv


def shell(argv: list[str]) -> str:
    return " ".join(q(a) for a in argv)


class Snapshot:
    """A transaction on the source held open so that every table is read as of one moment (its snapshot id)."""

    def __init__(self, ctx, driver, host):
        self.host = host
        kw = driver.access(ctx, host, read_only=True)
        self.session = host.open_session(shell(psql_argv(driver, driver.spec.name) + ["-A", "-t"]),
                                         env=kw["env"], secrets=kw["secrets"], read_only=True)
        self.session.send("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\nSELECT pg_export_snapshot();\n")
        self.id = self.session.read_line(timeout=60).strip()
        if not self.id or " " in self.id:
            raise DeployError(f"{host.name}: could not export a snapshot of {driver.spec.name}: {self.id!r}")

    def counts(self, tables: list[Table], where: dict[str, str]) -> dict[str, int]:
        """Rows each table will copy, counted in the snapshot (what the target must hold after)."""
        out = {}
        for t in tables:
            cond = where.get(t.name)
            self.session.send(f"SELECT count(*) FROM {qualified(t)}" + (f" WHERE {cond}" if cond else "") + ";\n")
            line = self.session.read_line(timeout=3600).strip()
            if not line.isdigit():
                raise DeployError(f"{self.host.name}: counting the rows of {t.name} failed: {line}")
            out[t.name] = int(line)
        return out

    def close(self) -> None:
        try:
            self.session.send("COMMIT;\n")
        finally:
            self.session.close()


def _reader(ctx, driver, src, snapshot_id: str, table: Table, columns: list[str], where: str | None,
            mask: dict | None):
    """The source's stream of one table's rows as COPY text: masked on the host when the table has rules."""
    copy = psql_argv(driver, driver.spec.name,
                     "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                     f"SET TRANSACTION SNAPSHOT {literal(snapshot_id)}",
                     f"COPY ({select(table, columns, where)}) TO STDOUT", "COMMIT")
    kw = driver.access(ctx, src, read_only=True)
    if mask is None:
        stream = src.open_filter(shell(copy), env=kw["env"], secrets=kw["secrets"], read_only=True)
        stream.end_input()
        return stream, None
    source = helper_source(MASK_HELPER).encode()
    python = app_python(ctx.config, src, mask["release_dir"])
    stream = src.open_filter(f"cd {q(mask['release_dir'])} && exec {python} -c {q(_BOOT)}", env=kw["env"],
                             secrets=kw["secrets"], read_only=True)
    form = mask.get("avoid_format", "dk64")  # dk64: sorted digests, 8 bytes each; ds32: screen values, 4 bytes
    header = {"command": copy, "spec": mask["spec"], "mask_key": mask["mask_key"], "proof_key": mask["proof_key"],
              "avoid_count": len(mask["avoid"]) // (4 if form == "ds32" else 8), "avoid_format": form,
              "jobs": mask.get("jobs", 1)}
    try:
        stream.write(b"%d\n" % len(source) + source + json.dumps(header).encode() + b"\n" + mask["avoid"])
        stream.end_input()
    except BaseException:
        stream.abort()
        raise
    return stream, header


def copy_table(ctx, driver, src, dst, new_db: str, snapshot_id: str, table: Table, columns: list[str],
               where: str | None, mask: dict | None, stop: threading.Event) -> dict:
    """One table from the source's snapshot into new_db on the target; (bytes, seconds) of what went over."""
    if callable(mask):  # settings that are ready later (the avoid list, once the originals are digested)
        mask = mask()
    if stop.is_set():
        raise Interrupted(f"{dst.name}: the copy of {table.name} was stopped")
    start = time.monotonic()
    reader, _ = _reader(ctx, driver, src, snapshot_id, table, columns, where, mask)
    cols = ", ".join(ident(c) for c in columns)
    target = psql_argv(driver, new_db, f"COPY {qualified(table)} ({cols}) FROM STDIN")
    kw = driver.access(ctx, dst)
    try:
        writer = dst.open_filter(shell(target), env=kw["env"], secrets=kw["secrets"])
    except BaseException:
        reader.abort()
        raise
    size = 0
    try:
        while chunk := reader.read(CHUNK):
            if stop.is_set() or src.cancelled.is_set() or dst.cancelled.is_set():
                raise Interrupted(f"{dst.name}: the copy of {table.name} was stopped")
            writer.write(chunk)
            size += len(chunk)
    except BrokenPipeError:
        reader.abort()
        got = writer.close()
        raise DeployError(f"{dst.name}: writing {table.name} into {new_db} failed (exit {got.exited}): "
                          f"{got.tail() or 'psql stopped reading'}", hint="the live database is untouched")
    except BaseException:
        writer.abort()
        reader.abort()
        raise
    sent, got = reader.close(), writer.close()
    if not sent.ok:
        what = "masking" if mask else "reading"
        raise DeployError(f"{src.name}: {what} {table.name} failed (exit {sent.exited}): {sent.tail()}",
                          hint="nothing was written on the target's live database")
    if not got.ok:
        raise DeployError(f"{dst.name}: writing {table.name} into {new_db} failed (exit {got.exited}): {got.tail()}",
                          hint="the live database is untouched")
    return {"table": table.name, "bytes": size, "seconds": round(time.monotonic() - start, 3),
            "masked": sorted((mask or {}).get("spec", {}).get("masks", {}))}


def copy_tables(ctx, driver, src, dst, new_db: str, snapshot_id: str, jobs_: list[dict], jobs: int,
                progress=None, on_done=None) -> list[dict]:
    """Every job ({table, columns, where, mask}) at most `jobs` at a time, largest first; the first failure
    stops the others (their streams are aborted) and is raised. A job's mask may be a function giving its
    settings: its copy calls it (and waits for it) when its turn comes; the tables without masks meanwhile
    take the other slots. `on_done(table, result)` is called as each copy ends (in its thread)."""
    stop = threading.Event()
    order = sorted(jobs_, key=lambda j: -(j["table"].bytes or 0))
    done: list[dict] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="refresh-copy") as pool:
        def one(j):
            got = copy_table(ctx, driver, src, dst, new_db, snapshot_id, j["table"], j["columns"], j.get("where"),
                             j.get("mask"), stop)
            if on_done is not None:
                on_done(j["table"], got)
            return got
        futures = [pool.submit(one, j) for j in order]
        finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in finished if f.exception() is not None), None)
        if failed is not None:
            stop.set()
            for f in futures:
                f.cancel()
            wait(futures)
            raise failed.exception()
        for f in futures:
            done.append(f.result())
            if progress:
                progress(done[-1])
    return done


__all__ = ["Snapshot", "copy_tables", "psql_argv", "shell"]
