"""What a colour took while it was live: its write counters when the router began to serve it, and now.

`deploykit switch --to blue` moves no data: the writes green took since it
went live stay in green, and the operator is told how many (per table), so
nothing is lost silently. PostgreSQL counts rows inserted, updated and
deleted per table (pg_stat_user_tables, cumulative; a statistics reset or a
crash makes the count unknown, never wrong by omission: it then says so);
SQLite has no such counters, so its tables' row counts are compared (an
update, or an insert and a delete, does not show). All reads are read-only.
"""
from __future__ import annotations

from .. import layout
from ..drivers import database_drivers
from ..errors import DeployError
from ..state.journal import utc_now

CHANGES_SQL = ("SELECT schemaname || '.' || relname, n_tup_ins + n_tup_upd + n_tup_del FROM pg_stat_user_tables "
               "ORDER BY 1;")


def counters(ctx, host) -> dict:
    """alias -> {"kind": "changes" | "rows", "tables": {table: n}} for each database of the colour."""
    out = {}
    for d in database_drivers(ctx.config):
        if d.engine == "postgresql":
            if d.database_exists(ctx, host, d.spec.name):
                rows = d.query(ctx, host, CHANGES_SQL, db=d.spec.name)
                out[d.spec.alias] = {"kind": "changes", "tables": {t: int(n) for t, n in rows}}
        elif d.engine == "sqlite":
            doc = host.helper("sqlite", "info", {"path": d.path(host)})
            out[d.spec.alias] = {"kind": "rows", "tables": doc.get("tables") or {}}
    return out


def record_live(ctx, host, colour: str) -> None:
    """The colour's counters now, kept on its primary: the router serves it from this moment."""
    host.write_json(layout.live_since(host), {"colour": colour, "since": utc_now(), "run": ctx.run_id,
                                              "counters": counters(ctx, host)})


def since_live(ctx, host, colour: str) -> dict | None:
    """What the colour took since it went live (read-only): {"since", "tables": {alias.table: n}, "total",
    "kind"}; None when it never went live through deploykit."""
    try:
        then = host.read_json(layout.live_since(host))
    except DeployError:
        return None
    if not then or then.get("colour") != colour:
        return None
    now = counters(ctx, host)
    tables, kinds, unknown = {}, set(), []
    for alias, was in (then.get("counters") or {}).items():
        cur = now.get(alias)
        if cur is None:
            continue
        kinds.add(cur["kind"])
        for table, n in cur["tables"].items():
            delta = n - (was["tables"].get(table) or 0)
            if delta < 0 and cur["kind"] == "changes":  # the statistics were reset: the count is unknown
                unknown.append(f"{alias}.{table}")
            elif delta:
                tables[f"{alias}.{table}"] = delta
    return {"since": then.get("since"), "tables": tables, "total": sum(abs(v) for v in tables.values()),
            "kind": "changes" if kinds == {"changes"} else "rows", "unknown": unknown}


def describe(colour: str, got: dict | None) -> str:
    """One line for the operator."""
    if got is None:
        return f"{colour}: no record of when it went live; its writes stay in it"
    what = "row(s) written" if got["kind"] == "changes" else "row(s) more or fewer"
    shown = ", ".join(f"{t} {n:+d}" for t, n in sorted(got["tables"].items(), key=lambda kv: -abs(kv[1]))[:4])
    unknown = f"; unknown for {', '.join(got['unknown'][:3])} (statistics reset)" if got["unknown"] else ""
    if not got["total"] and not got["unknown"]:
        return f"{colour} took no writes since it went live at {got['since']}"
    return (f"{colour} took {got['total']} {what} since it went live at {got['since']} ({shown}){unknown}: "
            f"they stay in {colour}, not moved")
