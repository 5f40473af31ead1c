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
