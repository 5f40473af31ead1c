"""Operator output: one line per step as it happens, tables at the end (rich)."""
from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .engine.results import RunResult, StepRecord

# piped output (logs, CI) gets wide tables instead of wrapped cells
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 220)
STYLE = {"ok": "green", "changed": "yellow", "failed": "bold red", "skipped": "dim", "planned": "cyan"}


def step_line(rec: StepRecord) -> None:
    """One line per step; whatever a host printed is shown as text, never read as markup."""
    line = Text(f"  {rec.playbook:<8} {rec.phase:<12} {rec.step:<22} {rec.host:<12} ")
    line.append(f"{rec.status:<8}", style=STYLE.get(rec.status, ""))
    line.append(f" {rec.seconds:6.2f}s  {rec.message}")
    console.print(line)
    if rec.diff and rec.status in ("changed", "planned"):
        for text in rec.diff.splitlines():
            console.print(Text(f"      {text}", style="dim"))


def timings_table(result: RunResult, title: str = "step timings") -> Table:
    table = Table(title=title)
    for col in ("playbook", "phase", "step", "host", "status", "seconds"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    runs = [result] + ([result.recovery] if result.recovery else [])
    for run in runs:
        for rec in run.records:
            table.add_row(*(escape(x) for x in (rec.playbook, rec.phase, rec.step, rec.host, rec.status)),
                          f"{rec.seconds:.2f}")
    return table


def rollout_table(rollout: dict) -> Table:
    """A rolling release, per host: its batch, what it reached (done, back, failed, built), why it failed."""
    table = Table(title="rollout")
    for col in ("host", "batch", "state", "why"):
        table.add_column(col)
    batch_of = {h: i + 1 for i, batch in enumerate(rollout.get("batches") or []) for h in batch}
    for host, state in (rollout.get("hosts") or {}).items():
        style = {"done": "green", "failed": "bold red", "back": "yellow"}.get(state, "")
        table.add_row(escape(host), str(batch_of.get(host, "-")), Text(state, style=style),
                      escape((rollout.get("failures") or {}).get(host) or ""))
    return table


def releases_table(rows: list[dict], sizes: dict | None = None) -> Table:
    table = Table(title="releases")
    for col in ("release", "commit", "tags", "status", "migrations (leaf per app)", "backup"):
        table.add_column(col)
    for r in rows:
        leaves = ", ".join(f"{app}:{names[-1]}" for app, names in sorted((r.get("migrations") or {}).items())
                           if names and app not in ("admin", "auth", "contenttypes", "sessions"))
        backup = r.get("backup_id") or "-"
        if sizes and r.get("backup_id") in sizes:
            backup += f" ({sizes[r['backup_id']] / (1 << 20):.1f} MB)"
        table.add_row(*(escape(str(x)) for x in (r["id"], (r.get("commit") or "")[:10],
                                                  ", ".join(r.get("tags") or []) or "-", r["status"], leaves or "-",
                                                  backup)))
    return table


def backups_table(rows: list[dict]) -> Table:
    table = Table(title="backups")
    for col in ("backup", "created", "size", "verified", "items", "taken before"):
        table.add_column(col)
    for r in rows:
        verified = "yes" if r["verified"] else f"NO: {'; '.join(r['problems'][:2])}"
        table.add_row(*(escape(str(x)) for x in (r["id"], r.get("created") or "-", f"{r['bytes'] / (1 << 20):.1f} MB",
                                                  verified, ", ".join(r["items"]) or "-", r.get("for_release") or "-")))
    return table


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "age unknown"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit} old"
    return f"{seconds:.0f} s old"


def colours_table(found: dict) -> Table:
    """deploykit colours: one row per colour: served by the router, live release, data age."""
    table = Table(title="colours")
    for col in ("colour", "router", "live release", "data age (newest verified backup)"):
        table.add_column(col)
    served = {c for c in found["router"].values() if c}
    for colour, doc in found["colours"].items():
        rel = doc.get("release")
        release = f"{rel['id']} ({rel.get('tag') or '-'})" if rel else "none"
        backup = doc.get("backup")
        age = f"{age_text(backup.get('age_seconds'))} ({backup['id']})" if backup else "unknown"
        if doc.get("error"):
            release, age = "unknown", f"unknown: {doc['error']}"
        table.add_row(escape(colour), "LIVE" if colour in served else "idle", escape(release), escape(age))
    return table


def _mb(n) -> str:
    return "?" if n is None else f"{n / (1 << 20):.1f} MB" if n < (1 << 30) else f"{n / (1 << 30):.1f} GB"


def status_rows(doc: dict) -> list[tuple[str, str, str]]:
    """(what, what it is, style) for one host of `deploykit status`: red for a problem, yellow a warning."""
    bad = {p["what"] for p in doc.get("problems", [])}
    warn = {w["what"] for w in doc.get("warnings", [])}

    def style(what: str) -> str:
        return "bold red" if what in bad else "yellow" if what in warn else ""

    if not doc.get("reachable", True):
        return [("host", "; ".join(p["text"] for p in doc["problems"]), "bold red")]
    rows = []
    live = doc.get("live")
    if "live" in doc:
        rows.append(("live release", f"{live['id']} ({live.get('tag') or (live.get('commit') or '')[:10]})"
                     if live else "none", style("release")))
        rows.append(("current", doc.get("current") or "-", style("drift")))
        agree = doc.get("agree")
        rows.append(("registry vs current", doc.get("drift") or ("agree" if agree else "-"), style("drift")))
    lock = doc.get("lock")
    if lock and lock.get("error"):
        lock_text = f"could not be read: {lock['error']}"
    elif lock:
        lock_text = (f"{(lock.get('state') or '?').upper()}: run {lock.get('run_id')} ({lock.get('command')}) of "
                     f"{lock.get('user')}@{lock.get('controller')} pid {lock.get('pid')} since {lock.get('since')}: "
                     f"{lock.get('why')}" + (f"; {lock['pending']} pending" if lock.get("pending") else ""))
    else:
        lock_text = "free"
    rows.append(("lock", lock_text, style("lock")))
    if "processes" in doc:
        rows.append(("processes", ", ".join(f"{p['name']} {'running' if p['running'] else 'NOT running'}"
                                            for p in doc["processes"]) or "none configured", style("processes")))
    if "health" in doc:
        h = doc["health"]
        rows.append(("health", "ok: " + "; ".join(h.get("notes") or []) if h["ok"] else f"FAILING: {h['error']}",
                     style("health")))
    disk = doc.get("disk")
    if disk:
        rows.append(("disk free", f"{_mb(disk['free_bytes'])} of {_mb(disk.get('total_bytes'))} under "
                                  f"{disk['path']} (min_free_mb {disk['min_free_mb']})", style("disk")))
    if "backups" in doc:
        b = doc.get("backup")
        text = (f"{b['id']} ({age_text(b.get('age_seconds'))}, verified)" if b else "none verifies")
        rows.append(("newest backup", f"{text}; {doc['backups']} on the host", style("backup")))
    if "snapshots" in doc:
        held = doc["snapshots"]
        kinds = {}
        for c in held:
            kinds.setdefault(c.get("kind"), []).append(c)
        text = "; ".join(f"{len(v)} {'set-aside cop' + ('ies' if len(v) > 1 else 'y') if k == 'aside' else k + 's'} "
                         f"({_mb(sum(c.get('bytes') or 0 for c in v))})" for k, v in sorted(kinds.items()))
        rows.append(("snapshots", text or "none", style("snapshots")))
    for p in doc.get("problems", []):
        if p["what"] in ("host",):
            rows.append(("problem", p["text"], "bold red"))
    return rows


def status_table(doc: dict) -> Table:
    title = f"{doc['host']}" + (" (primary)" if doc.get("primary") else "") + f": {doc.get('deploy_to')}"
    table = Table(title=escape(title), show_header=False)
    table.add_column("what", style="bold")
    table.add_column("state")
    for what, text, style in status_rows(doc):
        table.add_row(escape(what), Text(text, style=style))
    return table


def runs_table(rows: list[dict], title: str = "runs") -> Table:
    table = Table(title=escape(title))
    for col in ("run", "command", "stage", "started", "seconds", "outcome"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    colour = {"ok": "green", "recovered": "yellow", "finished": "yellow", "running": "cyan", "failed": "bold red",
              "recovery failed": "bold red", "died": "bold red", "interrupted": "yellow"}
    for r in rows:
        outcome = ("dry run " if r.get("dry_run") and r["outcome"] == "ok" else "") + r["text"]
        table.add_row(escape(r["run"]), escape(str(r.get("command") or "-")), escape(str(r.get("stage") or "-")),
                      escape(r.get("started") or "-"),
                      f"{r['seconds']:.1f}" if r.get("seconds") is not None else "-",
                      Text(outcome, style=colour.get(r["outcome"], "")))
    return table


def run_steps_table(doc: dict) -> Table:
    """Every step of one run, per host (`deploykit log RUN`); the recovery's steps marked."""
    table = Table(title=escape(f"run {doc['run']}: {doc.get('command')} on {doc.get('stage') or '?'}"))
    for col in ("host", "playbook", "phase", "step", "status", "seconds", "message"):
        table.add_column(col, justify="right" if col == "seconds" else "left")
    for host in doc["hosts"]:
        for r in (s for s in doc["steps"] if s["host"] == host):
            table.add_row(escape(host), escape(r["playbook"] + (" (recovery)" if r["recovery"] else "")),
                          escape(r["phase"]), escape(r["step"]), Text(r["status"], style=STYLE.get(r["status"], "")),
                          f"{r['seconds']:.2f}", Text(r["message"]))
    return table


CLASS_STYLE = {"safe": "green", "review": "yellow", "unsafe": "bold red"}


def _lock_cell(op: dict) -> str:
    """'ACCESS EXCLUSIVE, brief; no rewrite' (PostgreSQL), else what the helper said ('n/a (sqlite)')."""
    text = op.get("lock_text") or "-"
    if op.get("rewrite") is None:
        return text
    if op["rewrite"]:
        return text if "rewritten" in text else f"{text}; table rewrite"
    return f"{text}; no rewrite"


def migration_plan_table(plan: dict) -> Table:
    """deploykit plan: one row per operation, a section per migration."""
    to = (plan.get("to") or {})
    live = plan.get("from") or {}
    table = Table(title=f"migrations {live.get('tag') or live.get('id') or 'none'} -> "
                        f"{to.get('tag') or (to.get('commit') or '')[:10]}")
    for col in ("app", "migration", "operation", "class", "lock / rewrite", "why"):
        table.add_column(col, overflow="fold")
    for step in plan.get("steps") or []:
        for i, op in enumerate(step.get("operations") or []):
            cls = op["classification"]
            table.add_row(escape(step["app"]) if i == 0 else "", escape(step["name"]) if i == 0 else "",
                          escape(f"{op['index']}. {op['describe']}"), f"[{CLASS_STYLE.get(cls, '')}]{cls}[/]",
                          escape(_lock_cell(op)), escape(op["why"]))
        table.add_section()
    return table
