"""A transfer by PostgreSQL logical replication: seed the target beside, catch up, cut over, clean up.

The target's new database is made beside its live one (a derived name,
recorded before it exists) with the source's schema; the source publishes
every table, a logical slot is made there, and the target's new database
subscribes to it: the data is copied while the source keeps serving. Under
the freeze: wait until the slot has confirmed the source's current WAL
position, copy every sequence's value, drop the subscription, the slot and the
publication. The one name of all three is derived from the run id (never a
truncation) and kept in the run's resumable state before each is made, so a
run that stops anywhere, or the run that finishes a dead one, drops exactly
those: a forgotten slot keeps the source's WAL forever.

The source is only read apart from those three catalog objects. The target's
server logs in to the source's as the admin role with the password deploykit
has (from the controller's environment), handed to psql on stdin and never
put in SQL text, argv or the journal.
"""
from __future__ import annotations

import time

from .. import names
from ..drivers import database_drivers
from ..errors import DeployError, HostCommandFailed
from ..sqltext import ident, literal
from ..transport.host import q

CAUGHT_UP_BYTES = 1 << 20  # lag under which the freeze starts: what is left is applied in well under a second
POLL_SECONDS = 0.05


class FreezeBudgetExceeded(DeployError):
    """The freeze would last longer than --max-freeze: the source is unfrozen, nothing is switched."""


def pg_drivers(ctx) -> list:
    return [d for d in database_drivers(ctx.config) if d.engine == "postgresql"]


def blockers(ctx, src, dst) -> list[str]:
    """Why the databases cannot move by logical replication (read-only): empty when they can."""
    drivers = database_drivers(ctx.config)
    if not drivers:
        return ["no databases are configured"]
    out = [f"{d.spec.alias}: {d.engine} has no logical replication" for d in drivers if d.engine != "postgresql"]
    for d in pg_drivers(ctx):
        try:
            level = d.value(ctx, src, "SHOW wal_level;")
            if level != "logical":
                out.append(f"{d.spec.alias}: the source's wal_level is {level}, not logical")
            for host, where in ((src, "source"), (dst, "target")):
                if d.value(ctx, host, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user;") != "t":
                    out.append(f"{d.spec.alias}: the admin role {d.spec.admin_user} is not a superuser on the "
                               f"{where} (publications for all tables and subscriptions need one)")
            free = d.value(ctx, src, "SELECT current_setting('max_replication_slots')::int - "
                                     "(SELECT count(*) FROM pg_replication_slots);")
            if free and int(free) < 1:
                out.append(f"{d.spec.alias}: the source has no free replication slot (max_replication_slots)")
            if not d.database_exists(ctx, src, d.spec.name):
                out.append(f"{d.spec.alias}: the source has no database {d.spec.name}")
                continue
            bare = d.query(ctx, src, TABLES_WITHOUT_IDENTITY, db=d.spec.name)
            if bare:
                shown = ", ".join(r[0] for r in bare[:5])
                out.append(f"{d.spec.alias}: table(s) without a primary key or replica identity: {shown} "
                           "(their updates and deletes cannot be replicated)")
        except DeployError as exc:
            out.append(f"{d.spec.alias}: {exc.one_line()}")
        if d.spec.password() is None:
            out.append(f"{d.spec.alias}: the admin password is not in the controller's environment "
                       f"(password_env): the target's server could not log in to the source's")
    return out


TABLES_WITHOUT_IDENTITY = """
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND c.relreplident IN ('d', 'n')
  AND (c.relreplident = 'n' OR NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
ORDER BY 1;
"""


def object_name(ctx, driver) -> str:
    """The publication's, the slot's and the subscription's one name: derived, fixed length, lower case."""
    return names.derived_name("replication", ctx.config.app, driver.spec.name, ctx.run_id)


def _source_address(ctx, driver, src) -> tuple[str, int]:
    """Where the target's server reaches the source's: the address the source's server answered psql on,
    else the source host's own name and the configured port."""
    row = driver.query(ctx, src, "SELECT coalesce(host(inet_server_addr()), ''), "
                                 "coalesce(inet_server_port(), 0);")
    addr, port = (row[0] if row else ["", "0"])
    if driver.spec.host and not driver.spec.host.startswith("/"):
        addr = driver.spec.host
    return addr or src.spec.hostname, int(port) or int(driver.spec.port or 5432)


def _as_admin(ctx, driver, host, sql: str, db: str, secrets: dict | None = None):
    """psql of its own (the SQL on stdin), with extra secrets exported from stdin."""
    kw = driver.access(ctx, host)
    kw["secrets"] = {**(kw.get("secrets") or {}), **(secrets or {})}
    return host.run(f"psql {driver.conn_args()} -X -q -A -t -v ON_ERROR_STOP=1 -d {q(db)}", stdin=sql, **kw)


def seed(ctx, driver, src, dst, doc: dict, record) -> None:
    """The target's new database with the source's schema, subscribed to the source (data copying begins).

    `doc` is the run's resumable record of what exists; `record()` saves it: called before each object is
    made, so an interrupt at any point leaves names the cleanup can find.
    """
    name = doc.setdefault("name", object_name(ctx, driver))
    if not doc.get("new"):
        doc["new"] = driver.claim(ctx, dst, "restore", ctx.run_id)
        record()
    if driver.database_exists(ctx, dst, doc["new"]):  # a seed interrupted before: start it again from nothing
        drop(ctx, driver, src, dst, doc)
        driver.drop(ctx, dst, doc["new"])
        names.record(ctx, doc["new"], "restore", engine=driver.engine, alias=driver.spec.alias,
                     database=driver.spec.name, label=ctx.run_id)
    meta = driver.database_settings(ctx, src, driver.spec.name)
    driver.create_empty(ctx, dst, doc["new"], meta)
    schema = src.run(f"pg_dump {driver.conn_args()} --schema-only --no-publications "
                     f"--no-subscriptions -d {q(driver.spec.name)}", read_only=True,
                     **driver.access(ctx, src, read_only=True)).stdout
    _as_admin(ctx, driver, dst, schema, doc["new"])
    doc["publication"] = doc["slot"] = True
    record()
    driver.psql(ctx, src, f"CREATE PUBLICATION {ident(name)} FOR ALL TABLES;", db=driver.spec.name)
    driver.psql(ctx, src, f"SELECT pg_create_logical_replication_slot({literal(name)}, 'pgoutput');",
                db=driver.spec.name)
    addr, port = _source_address(ctx, driver, src)
    doc["subscription"] = True
    doc["source"] = f"{addr}:{port}"
    record()
    conninfo = (f"host={addr} port={port} dbname={driver.spec.name} user={driver.spec.admin_user} "
                "application_name=deploykit")
    _as_admin(ctx, driver, dst, "\\getenv source_password DK_SOURCE_PASSWORD\n"
              f"SELECT {literal(conninfo)} || ' password=' || :'source_password' AS conninfo \\gset\n"
              f"CREATE SUBSCRIPTION {ident(name)} CONNECTION :'conninfo' PUBLICATION {ident(name)} "
              f"WITH (create_slot = false, slot_name = {literal(name)}, copy_data = true, "
              "synchronous_commit = 'on');\n", doc["new"], secrets={"DK_SOURCE_PASSWORD": driver.spec.password()})


def progress(ctx, driver, src, dst, doc: dict) -> dict:
    """Tables copied so far and the lag in bytes of the slot behind the source's WAL (read-only)."""
    states = driver.query(ctx, dst, "SELECT srsubstate, count(*) FROM pg_subscription_rel r JOIN pg_subscription "
                                    f"s ON s.oid = r.srsubid WHERE s.subname = {literal(doc['name'])} "
                                    "GROUP BY 1;", db=doc["new"])
    counts = {s: int(n) for s, n in states}
    lag = driver.value(ctx, src, "SELECT coalesce(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn), -1)"
                                 f"::bigint FROM pg_replication_slots WHERE slot_name = {literal(doc['name'])};")
    return {"tables": sum(counts.values()), "ready": counts.get("r", 0), "lag": int(lag) if lag else None}


def catch_up(ctx, driver, src, dst, doc: dict, report, timeout: float) -> dict:
    """Wait, the source serving, until every table is copied and the slot is within CAUGHT_UP_BYTES."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        now = progress(ctx, driver, src, dst, doc)
        if now["lag"] is None:
            raise HostCommandFailed(f"{src.name}: the replication slot {doc['name']} is gone",
                                    hint="the transfer is undone; run it again")
        if now != last:
            report(now)
            last = now
        if now["tables"] and now["ready"] == now["tables"] and 0 <= now["lag"] < CAUGHT_UP_BYTES:
            return now
        if time.monotonic() > deadline:
            raise HostCommandFailed(f"{dst.name}: the replication did not catch up in {timeout:.0f}s "
                                    f"({now['ready']}/{now['tables']} tables copied, {now['lag']} bytes behind)",
                                    hint="nothing was frozen or switched; try --mode copy, or again when "
                                         "the source is less busy")
        time.sleep(0.5)


def wait_applied(ctx, driver, src, doc: dict, deadline: float) -> str:
    """The source's current WAL position (writes frozen), once the slot has confirmed it: the target has every
    change. Past `deadline` (monotonic): FreezeBudgetExceeded."""
    target = driver.value(ctx, src, "SELECT pg_current_wal_lsn();")
    while True:
        done = driver.value(ctx, src, "SELECT confirmed_flush_lsn >= " + literal(target) + "::pg_lsn FROM "
                                      f"pg_replication_slots WHERE slot_name = {literal(doc['name'])};")
        if done == "t":
            return target
        if done == "":
            raise HostCommandFailed(f"{src.name}: the replication slot {doc['name']} is gone",
                                    hint="the transfer is undone; run it again")
        if time.monotonic() > deadline:
            raise FreezeBudgetExceeded(f"the target had not applied the source's changes up to {target} within "
                                       "the freeze budget", hint="raise --max-freeze, or use --mode copy")
        time.sleep(POLL_SECONDS)


def sync_sequences(ctx, driver, src, dst, doc: dict) -> int:
    """Every sequence of the source set to its value there (logical replication does not carry them)."""
    rows = driver.query(ctx, src, "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences "
                                  "WHERE last_value IS NOT NULL;", db=driver.spec.name)
    if rows:
        driver.psql(ctx, dst, "\n".join(f"SELECT setval({literal(seq)}, {int(value)}, true);" for seq, value in rows),
                    db=doc["new"])
    return len(rows)


def drop(ctx, driver, src, dst, doc: dict) -> list[str]:
    """Drop the subscription, then the slot, then the publication, each by its recorded name, if it exists.
    Safe to repeat; every exit path of a replicate transfer runs it."""
    name, gone = doc.get("name"), []
    if not name:
        return gone
    if doc.get("subscription") and doc.get("new") and driver.database_exists(ctx, dst, doc["new"]):
        present = driver.value(ctx, dst, f"SELECT 1 FROM pg_subscription WHERE subname = {literal(name)};",
                               db=doc["new"])
        if present == "1":
            driver.psql(ctx, dst, f"ALTER SUBSCRIPTION {ident(name)} DISABLE;\n"
                                  f"ALTER SUBSCRIPTION {ident(name)} SET (slot_name = NONE);\n"
                                  f"DROP SUBSCRIPTION {ident(name)};", db=doc["new"], always=True)
            gone.append("subscription")
    doc["subscription"] = False
    if doc.get("slot"):
        for _ in range(100):  # the walsender of the disabled subscription lets go within moments
            active = driver.value(ctx, src, f"SELECT coalesce(active_pid, 0) FROM pg_replication_slots "
                                            f"WHERE slot_name = {literal(name)};")
            if active == "":
                break
            if active == "0":
                driver.psql(ctx, src, f"SELECT pg_drop_replication_slot({literal(name)});", always=True)
                gone.append("slot")
                break
            driver.psql(ctx, src, f"SELECT pg_terminate_backend({int(active)});", always=True)
            time.sleep(0.1)
        else:
            raise HostCommandFailed(f"{src.name}: the replication slot {name} stays in use",
                                    hint=f"drop it: SELECT pg_drop_replication_slot('{name}') on the source")
    doc["slot"] = False
    if doc.get("publication") and driver.database_exists(ctx, src, driver.spec.name):
        present = driver.value(ctx, src, f"SELECT 1 FROM pg_publication WHERE pubname = {literal(name)};",
                               db=driver.spec.name)
        if present == "1":
            driver.psql(ctx, src, f"DROP PUBLICATION {ident(name)};", db=driver.spec.name, always=True)
            gone.append("publication")
    doc["publication"] = False
    return gone


def leftovers(ctx, driver, src, name: str) -> list[str]:
    """What of a replication exists on the source under `name` (read-only): for checks and tests."""
    slot = driver.value(ctx, src, f"SELECT 1 FROM pg_replication_slots WHERE slot_name = {literal(name)};")
    pub = driver.value(ctx, src, f"SELECT 1 FROM pg_publication WHERE pubname = {literal(name)};", db=driver.spec.name)
    return [k for k, v in (("slot", slot), ("publication", pub)) if v == "1"]
