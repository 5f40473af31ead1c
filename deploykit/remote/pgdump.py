#!/usr/bin/env python3
"""deploykit remote helper: a PostgreSQL dump and its row counts, from one snapshot.

Standalone (stdlib only; runs the host's psql and pg_dump; the password, if
any, is in PGPASSWORD or PGPASSFILE of the environment). A psql session opens
a REPEATABLE READ transaction and exports its snapshot; pg_dump -Fd -j N dumps
that very snapshot; the same session then counts the rows of every table. The
counts therefore describe exactly what the dump holds, and a restore is
checked against them before it replaces anything.

    python pgdump.py dump < {"conn": {"host", "port", "user"}, "dbname", "dest",
                             "jobs", "compress", "count_sql"}
      -> {"ok": true, "counts": {"schema.table": rows}, "snapshot": id}
"""
import shutil
import subprocess
import sys

from _common import _libpq_argv, serve

END = "__deploykit_end__"
SEP = "\x1f"


_conn_argv = _libpq_argv


class Session(object):
    """A psql process spoken to line by line: each request ends with an echo of END."""

    def __init__(self, conn, dbname):
        argv = ["psql"] + _conn_argv(conn) + ["-X", "-q", "-A", "-t", "-F", SEP, "-v", "ON_ERROR_STOP=1",
                                              "-d", dbname]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, universal_newlines=True)

    def ask(self, sql):
        self.proc.stdin.write(sql.rstrip() + "\n\\echo " + END + "\n")
        self.proc.stdin.flush()
        lines = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                err = self.proc.stderr.read().strip().splitlines()
                raise RuntimeError("psql: %s" % (err[-1] if err else "ended unexpectedly"))
            line = line.rstrip("\n")
            if line == END:
                return lines
            if line:
                lines.append(line)

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        self.proc.wait()


def dump(args):
    conn, dbname, dest = args.get("conn") or {}, args["dbname"], args["dest"]
    session = Session(conn, dbname)
    try:
        session.ask("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;")
        snapshot = session.ask("SELECT pg_export_snapshot();")[0]
        shutil.rmtree(dest, ignore_errors=True)
        argv = (["pg_dump"] + _conn_argv(conn) + ["-Fd", "-j", str(int(args.get("jobs") or 1))]
                + ([args["compress"]] if args.get("compress") else []) + ["--snapshot", snapshot, "-f", dest, dbname])
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
        if proc.returncode != 0:
            lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
            raise RuntimeError("pg_dump failed (exit %d): %s" % (proc.returncode, " | ".join(lines[-3:])))
        counts = {}
        for line in session.ask(args["count_sql"]):
            table, _, n = line.partition(SEP)
            counts[table] = int(n)
        session.ask("COMMIT;")
    finally:
        session.close()
    return {"ok": True, "changed": True, "counts": counts, "snapshot": snapshot}


READ_ONLY = set()  # what a dry-run may call
ACTIONS = {"dump": dump}


def main():
    sys.exit(serve(ACTIONS, name="pgdump.py", read_only=READ_ONLY, typed_errors=True,
                   private_umask=lambda action: True))


if __name__ == "__main__":
    main()
