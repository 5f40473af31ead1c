"""An anonymized refresh's own work: the plan of what is masked, the masked copy built beside, the proof.

The run's stage is the target (pre-production); phases with `stage: source`
read production, which is only read: its rows in one exported snapshot,
masked on its own host, its schema with pg_dump in that same snapshot. The
target gets a new database beside its own (the restore's derived name,
recorded before it exists), filled in this order: the schema without
indexes and keys (pg_dump's pre-data), the rows of every table by COPY, then
the indexes, unique constraints and foreign keys (post-data), which check
every row as they are made, then every sequence. Only then is it proved
clean and swapped in by the restore's own swap (the previous database kept
aside until pruned).

The proof's key and the digests of the original values live in this
process's memory only (`memory(ctx)`), never in the journal or the run's
resumable state: a refresh finished by another process cannot prove a copy,
so it drops the copy rather than swap it in unproved.
"""
from __future__ import annotations

import base64
import posixpath
import secrets
import sys
import threading
import time
from array import array
from concurrent.futures import Future, ThreadPoolExecutor

from .. import layout
from ..errors import DeployError, PreflightFailed
from ..sqltext import literal
from ..transport.host import q
from ..work import catalog, post_data
from ..work.masked_copy import Snapshot, copy_tables, psql_argv, shell
from ..work.subset import plan as subset_plan, select

_MEMORY: dict[str, dict] = {}
_MEMORY_LOCK = threading.Lock()


class ProofFailed(DeployError):
    """Original values of masked columns were found in the new copy: it is dropped, the target keeps its data."""


def memory(ctx) -> dict:
    """What this run keeps in memory only: the proof key, the digests of the originals, the masking key."""
    with _MEMORY_LOCK:
        return _MEMORY.setdefault(ctx.run_id, {})


def forget(ctx) -> None:
    """Drop what the run kept in memory (the snapshot's transaction ends with it)."""
    with _MEMORY_LOCK:
        mem = _MEMORY.pop(ctx.run_id, None) or {}
    snap = mem.get("snapshot")
    if snap is not None:
        try:
            snap.close()
        except DeployError:
            pass


# -- the proof: digests of the originals, then the scan of the copy -------------------------------------------
def open_snapshot(ctx, src, driver, plan: dict) -> dict:
    """Open the copy's snapshot of the source (a transaction held open), count in it the rows each table will
    copy, and make the run's keys; {"tables", "rows", "masked_tables"}. The originals are digested in it by
    `build`, beside the copy of the tables without rules (collect_digests)."""
    mem = memory(ctx)
    mem["mask_key"] = mask_key(ctx)
    mem["proof_key"] = secrets.token_hex(32)
    tables = catalog.parse(plan["catalog"])
    snap = mem["snapshot"] = Snapshot(ctx, driver, src)
    mem["counts"] = snap.counts(list(tables.values()), plan["where"])
    return {"tables": len(tables), "rows": sum(mem["counts"].values()), "masked_tables": len(plan["masks"])}


def _digest_tables(ctx, src, driver, plan: dict, **args):
    """(table, the mask helper's digests answer) of every masked table, read in the copy's snapshot."""
    mem = memory(ctx)
    tables = catalog.parse(plan["catalog"])
    snap = mem["snapshot"]
    kw = driver.access(ctx, src, read_only=True)
    for name, spec in plan["masks"].items():
        cols = sorted(spec["masks"])
        copy = psql_argv(driver, driver.spec.name, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
                         f"SET TRANSACTION SNAPSHOT {literal(snap.id)}",
                         f"COPY ({select(tables[name], cols, plan['where'].get(name))}) TO STDOUT", "COMMIT")
        yield name, src.helper("mask", "digests", {"command": copy, "columns": cols, "proof_key": mem["proof_key"],
                                                   "masks": spec["masks"], "table": name, **args},
                               env=kw["env"], secrets=kw["secrets"], timeout=ctx.config.command_timeout)


def collect_screen(ctx, src, driver, plan: dict) -> int:
    """The screen values of every original masked value (mem["screen"]: what the masks avoid), in the copy's
    snapshot: one CRC-32 each by C loops, no keyed digest (one process is enough), so the masks start
    soon. Returns how many."""
    mem = memory(ctx)
    screens = [base64.b64decode(got["digests"][col]["screen"])
               for _name, got in _digest_tables(ctx, src, driver, plan, only="screen", jobs=1)
               for col in got["digests"]]
    mem["screen"] = b"".join(screens)
    return len(mem["screen"]) // 4


def collect_digests(ctx, src, driver, plan: dict) -> dict:
    """Digest, in the copy's snapshot (open_snapshot), every original value of every masked column (or the
    sample refresh.proof.sample says): the proof's reference, read while the masked copy runs.

    The digests stay in this process's memory (mem: exact, avoid, screen); the run's state holds the counts.
    """
    mem = memory(ctx)
    sample = ctx.config.refresh.proof_sample if ctx.config.refresh else None
    exact, normalised, screens = [], [], []
    stats = {"columns": 0, "digested": 0, "skipped_short": 0, "sampled": []}
    # one process: it has the whole masked copy to finish in, and the masks' workers need the source's cores
    for name, got in _digest_tables(ctx, src, driver, plan, sample=sample or "all", jobs=1):
        for col, counts in got["columns"].items():
            stats["columns"] += 1
            stats["digested"] += counts["digested"]
            stats["skipped_short"] += counts["skipped_short"]
            if counts.get("sampled"):
                stats["sampled"].append(f"{name}.{col}")
            exact.append(base64.b64decode(got["digests"][col]["exact"]))
            normalised.append(base64.b64decode(got["digests"][col]["normalised"]))
            screens.append(base64.b64decode(got["digests"][col].get("screen") or ""))
    # the proof's lists stay one per column (prove looks through them for the flagged values only); the
    # screen is collect_screen's (this one has the same values, the json rules' leaves too)
    mem["exact_parts"], mem["normal_parts"] = exact, normalised
    mem.setdefault("screen", b"".join(screens))
    stats["sample"] = sample or "all"
    mem["digest_stats"] = stats
    return stats


def prove(ctx, dst, driver) -> dict:
    """Scan the built copy (every text-like column, a plain pg_dump of it) for the originals' digests."""
    mem = memory(ctx)
    if "normal_parts" not in mem or "exact_parts" not in mem:
        raise ProofFailed("the digests of the originals are gone (the run that took them ended): the copy "
                          "cannot be proved", hint="run the refresh again")
    built = next(b for b in reversed(ctx.state.restore["built"]) if not b.get("swapped"))
    kw = driver.access(ctx, dst, read_only=True)
    psql = psql_argv(driver, built["name"])
    # the target gets the screen only; the values it flags come back as digests, decided here
    report = dst.helper("proof", "scan", {"psql": psql, "pg_dump": _pg_dump_argv(driver, built["name"]),
                                          "proof_key": mem["proof_key"],
                                          "screen": base64.b64encode(mem["screen"]).decode(),
                                          "jobs": driver.jobs(dst)},
                        env=kw["env"], secrets=kw["secrets"], timeout=ctx.config.command_timeout)
    found = decide(report.pop("candidates", {}), mem["exact_parts"], mem["normal_parts"])
    report["found"] = found + report.get("found", [])
    # each masked column's distinct originals, summed (a value in two columns counts twice): never sorted
    # into one list, the digests are only looked through for the few values the target's screen flagged
    report["originals"] = sum(len(part) for part in mem["normal_parts"]) // 8
    if mem.get("digest_stats") is not None:
        mem["digest_stats"]["originals"] = report["originals"]
    return report


def decide(candidates: dict, exact_parts: list[bytes], normal_parts: list[bytes]) -> list[dict]:
    """The finds among the values the target's screen flagged ({where: base64 of (normalised digest, exact
    digest) pairs}): a value whose normalised digest is among the originals' (`normal_parts`) is found,
    "exact" when its own digest is among their exact ones too (`exact_parts`). The parts (packed lists, one
    per masked column) are looked through for the few flagged values only, never merged or sorted; the
    originals' digests never leave this process."""
    pairs = {where: _unpacked(base64.b64decode(text)) for where, text in candidates.items()}  # compact arrays
    normal = _among(normal_parts, {d for a in pairs.values() for d in a[0::2]})
    hits = {where: [(a[i], a[i + 1]) for i in range(0, len(a), 2) if a[i] in normal]
            for where, a in pairs.items()} if normal else {}
    exact = _among(exact_parts, {e for found in hits.values() for _, e in found})
    found: dict[tuple[str, str], int] = {}
    for where, values in hits.items():
        for _, e in values:
            how = "exact" if e in exact else "normalised"
            found[(where, how)] = found.get((where, how), 0) + 1
    return [{"where": where, "how": how, "count": n} for (where, how), n in sorted(found.items())]


def _among(parts: list[bytes], wanted: set) -> set:
    """The digests of `wanted` that some packed list of `parts` holds (one pass in C over each)."""
    held = set()
    for part in parts if wanted else ():
        held.update(wanted.intersection(_unpacked(part)))
    return held


def _unpacked(data: bytes) -> array:
    values = array("Q", data)
    if sys.byteorder == "little":
        values.byteswap()
    return values


def _pg_dump_argv(driver, db: str) -> list[str]:
    """A plain pg_dump of db to stdout, as the admin role, never asking a password."""
    return ["pg_dump", *driver.conn_argv(), "-d", db]


def pg_driver(ctx):
    """The one PostgreSQL database a refresh copies (its driver); anything else is a refusal."""
    from ..drivers import database_drivers
    drivers = database_drivers(ctx.config)
    pg = [d for d in drivers if d.engine == "postgresql"]
    if len(drivers) != 1 or not pg:
        raise PreflightFailed("a refresh copies one PostgreSQL database "
                              f"(this app has {', '.join(d.engine for d in drivers) or 'none'})",
                              hint="configure one 'databases:' entry with engine: postgresql")
    return pg[0]


def mask_key(ctx) -> str:
    """The masking secret from the controller's environment (refresh.key_env), as hex; never stored."""
    spec = ctx.config.refresh
    if spec is None:
        raise PreflightFailed("no 'refresh:' section in deploykit.yaml: there are no masking rules",
                              hint="write the rules under 'refresh: {rules: ...}' ('deploykit refresh --init-rules "
                                   "--from STAGE' suggests them) and name the key's variable in refresh.key_env")
    return spec.mask_key().hex()


# -- the new database ---------------------------------------------------------------------------------------
def _schema_file(ctx, src, dst, driver, snapshot_id: str) -> str:
    """The source's schema (pg_dump -Fc --schema-only, in the copy's snapshot) streamed into a file on the
    target (nothing is written on the source), read back by pg_restore --list before it is used."""
    there = posixpath.join(layout.scratch_dir(dst, ctx.run_id), f"schema-{ctx.run_id}.dump")
    dst.run(f"mkdir -p -m 700 {q(posixpath.dirname(there))}")
    kw = driver.access(ctx, src, read_only=True)
    dump = ["pg_dump", *driver.conn_argv(), "-Fc", "--schema-only", f"--snapshot={snapshot_id}",
            "--no-publications", "--no-subscriptions", "-d", driver.spec.name]
    reader = src.open_filter(shell(dump), env=kw["env"], secrets=kw["secrets"], read_only=True)
    reader.end_input()
    try:
        writer = dst.open_stream(f"umask 077 && cat > {q(there)}", write=True)
    except BaseException:
        reader.abort()
        raise
    try:
        while chunk := reader.read(1 << 20):
            writer.write(chunk)
    except BaseException:
        writer.abort()
        reader.abort()
        raise
    got, sent = writer.close(), reader.close()
    if not sent.ok:
        raise DeployError(f"{src.name}: pg_dump of the schema failed (exit {sent.exited}): {sent.tail()}",
                          hint="the target's own database is untouched")
    if not got.ok:
        raise DeployError(f"{dst.name}: writing the schema failed (exit {got.exited}): {got.tail()}",
                          hint="check the free space on the target host")
    dst.run(f"pg_restore --list {q(there)} > /dev/null")
    return there


def build(ctx, src, dst, driver, plan: dict, record) -> dict:
    """The masked copy as a new database on the target (recorded in the restore state before it exists).

    `plan`: what plan_tables returned; `record()` saves the run's resumable state.
    """
    state = ctx.state.restore_state(ctx.backup_id, ctx.run_id)
    new = driver.claim(ctx, dst, "restore", ctx.run_id)
    built = {"engine": driver.engine, "alias": driver.spec.alias, "name": new, "label": ctx.run_id,
             "item": driver.item_name}
    state["built"].append(built)
    record()
    mem = memory(ctx)
    tables = catalog.parse(plan["catalog"])
    snap = mem.get("snapshot")
    if snap is None:  # opened by another process (this one finishes a dead run): digest again, same snapshot
        raise DeployError("the refresh's snapshot of the source is gone (the run that opened it ended)",
                          hint="run the refresh again: it starts from the snapshot")
    timings = {}
    # beside the copy of the tables without rules, the originals' screen values (a masked table's copy waits
    # for them), then, beside the masked copies too, their keyed digests for the proof
    digests = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refresh-digests")
    screened: Future = Future()
    digested = digests.submit(_originals, ctx, src, driver, plan, screened)
    try:
        start = time.monotonic()
        counts = mem["counts"]
        schema = _schema_file(ctx, src, dst, driver, snap.id)
        timings["schema_dump"] = round(time.monotonic() - start, 3)
        driver.create_empty(ctx, dst, new, driver.database_settings(ctx, src, driver.spec.name))
        start = time.monotonic()
        driver.pg_restore(ctx, dst, schema, new, section="pre-data")
        timings["pre_data"] = round(time.monotonic() - start, 3)
        release_dir = layout.current(src)
        jobs = []
        for name, t in tables.items():
            spec = plan["masks"].get(name)
            job = {"table": t, "columns": [c.column for c in t.columns], "where": plan["where"].get(name)}
            if spec and spec.get("masks"):
                job["mask"] = _when_digested(screened, {"spec": spec, "release_dir": release_dir,
                                                        "mask_key": mem["mask_key"], "proof_key": mem["proof_key"],
                                                        "jobs": driver.jobs(src)}, mem)
            jobs.append(job)
        # a table's own indexes and constraints are built as soon as its rows are in (post_data.split)
        early, later = post_data.split(post_data.items(ctx, driver, dst, schema),
                                       post_data.index_tables(ctx, driver, src))
        keys = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refresh-keys")
        building: list = []

        def copied_one(table, _got) -> None:
            lines = early.get((table.schema, table.table))
            if lines:
                building.append(keys.submit(_timed, driver.pg_restore_items, ctx, dst, schema, new, lines))
        start = time.monotonic()
        try:
            copied = copy_tables(ctx, driver, src, dst, new, snap.id, jobs, driver.jobs(dst), on_done=copied_one)
            timings["copy"] = round(time.monotonic() - start, 3)
            waited = time.monotonic()
            timings["post_data_early"] = round(sum(f.result() for f in list(building)), 3)
            timings["post_data_early_wait"] = round(time.monotonic() - waited, 3)
        finally:
            keys.shutdown(wait=True)
        waited = time.monotonic()
        timings["screen"], timings["digests"] = digested.result()  # (raised here when no masked copy waited)
        timings["digests_wait"] = round(time.monotonic() - waited, 3)  # the proof's digests, after the copy
    finally:
        digests.shutdown(wait=True)  # a failed copy still waits for the digests' helper: it ends the snapshot's use
        mem.pop("snapshot", None)
        snap.close()
    start = time.monotonic()
    if later:  # foreign keys (and what else was not a table's own): every row checked
        driver.pg_restore_items(ctx, dst, schema, new, later)
    timings["post_data"] = round(time.monotonic() - start, 3)
    dst.run(f"rm -f -- {q(schema)}", check=False)
    _sync_sequences(ctx, driver, src, dst, new)
    got = driver.row_counts(ctx, dst, new)
    expected = {f"{tables[n].schema}.{tables[n].table}": c for n, c in counts.items()}
    diff = sorted(t for t in expected if expected[t] != got.get(t))
    if diff:
        shown = ", ".join(f"{t}: {got.get(t)} rows, source {expected[t]}" for t in diff[:3])
        raise DeployError(f"{dst.name}: the masked copy differs from the source ({shown}): not swapped in",
                          hint="the target's own database is untouched")
    driver.check_restored(ctx, dst, new, {})  # owners
    built.update(rows=counts, copied=copied, timings=timings)
    record()
    return built


def _timed(fn, *args) -> float:
    start = time.monotonic()
    fn(*args)
    return round(time.monotonic() - start, 3)


def _originals(ctx, src, driver, plan: dict, screened: Future) -> tuple[float, float]:
    """collect_screen (then `screened` is done: the masks may start), then collect_digests; their seconds."""
    start = time.monotonic()
    try:
        collect_screen(ctx, src, driver, plan) if plan["masks"] else memory(ctx).setdefault("screen", b"")
    except BaseException as exc:
        screened.set_exception(exc)
        raise
    screened.set_result(True)
    middle = time.monotonic()
    collect_digests(ctx, src, driver, plan)
    return round(middle - start, 3), round(time.monotonic() - middle, 3)


def _when_digested(screened: Future, mask: dict, mem: dict):
    """A masked table's mask settings, once the originals' screen values are in (the avoid list)."""
    def settings() -> dict:
        screened.result()  # the failure, raised in the copy that needed them
        return dict(mask, avoid=mem["screen"], avoid_format="ds32")
    return settings


def _sync_sequences(ctx, driver, src, dst, new: str) -> int:
    """Every sequence set to the source's value (a schema-only dump carries none)."""
    rows = driver.query(ctx, src, "SELECT format('%I.%I', schemaname, sequencename), last_value FROM pg_sequences "
                                  "WHERE last_value IS NOT NULL;", db=driver.spec.name)
    if rows:
        driver.psql(ctx, dst, "\n".join(f"SELECT setval({literal(seq)}, {int(value)}, true);" for seq, value in rows),
                    db=new)
    return len(rows)


def _source_columns(ctx, src, driver):
    """(catalog text, tables, the source's model columns, db columns) read on the source (read-only)."""
    from ..djangoapp import model_columns
    text = catalog.read(ctx, driver, src, driver.spec.name)
    tables = catalog.parse(text)
    return text, tables, model_columns(ctx, src, layout.current(src)), catalog.as_db_columns(tables)


def suggest_rules(ctx, src, driver) -> list:
    """The personal-looking columns of the source without a rule, each with a suggested rule (--init-rules)."""
    from ..anonymize import classify, resolve
    _, _, models, db_columns = _source_columns(ctx, src, driver)
    spec = ctx.config.refresh
    return classify(models, db_columns, resolve(spec.rules if spec else {}, models, db_columns))


def _uses_faker(rule: dict) -> bool:
    return rule.get("kind") == "faker" or any(_uses_faker(r) for r in (rule.get("paths") or {}).values())


def _require_faker(ctx, src, masks: dict) -> None:
    """A faker rule masks with the app's own Faker on the source host: refused before anything is copied when
    that Python cannot import it (the built-in kinds need nothing)."""
    from ..pyenv import app_python
    named = sorted(f"{t}.{c}" for t, spec in masks.items() for c, r in spec["masks"].items() if _uses_faker(r))
    if not named:
        return
    python = app_python(ctx.config, src, layout.current(src))
    if not src.run(f"{python} -c 'import faker'", check=False, read_only=True).ok:
        raise PreflightFailed(f"{', '.join(named[:3])}: a faker rule, and the app's Python on {src.name} cannot "
                              "import faker", hint="add Faker to the app's requirements (and release), or use a "
                                                   "built-in kind: format, email, phone, hash")


def plan_tables(ctx, src, driver) -> dict:
    """What the refresh copies and how (read-only, on the source's primary): every table in COPY column order,
    each masked column's rule (resolved through the source's live models), the subset's conditions.

    A personal-looking column without a rule (or an explicit keep) stops the refresh here, naming it.
    """
    from ..anonymize import classify, require_rules, resolve, resolve_subset
    text, tables, models, db_columns = _source_columns(ctx, src, driver)
    spec = ctx.config.refresh
    resolved = resolve(spec.rules if spec else {}, models, db_columns)
    require_rules(classify(models, db_columns, resolved))
    where = subset_plan(tables, resolve_subset(spec.subset if spec else {}, models, db_columns))
    masks = {}
    for name, rules in resolved.items():
        t = tables[name]
        masked = {col: rule for col, rule in rules.items() if rule.get("kind") != "keep"}
        if not masked:
            continue
        masks[name] = {"table": name, "columns": [c.column for c in t.columns], "masks": masked,
                       "unique": [c for c in masked if (t.column(c).unique or t.column(c).primary_key)],
                       "max_length": {c: t.column(c).max_length for c in masked if t.column(c).max_length}}
    _require_faker(ctx, src, masks)
    return {"catalog": text, "tables": sorted(tables), "masks": masks, "where": where,
            "masked_columns": sorted(f"{t}.{c}" for t, spec_ in masks.items() for c in spec_["masks"])}
