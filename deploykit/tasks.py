"""The invoke tasks operators run. Import `ns` from your project's tasks.py:

    from deploykit.tasks import ns

or run them without a tasks.py through the `deploykit` console script.
Errors a user can fix are shown as one line with a hint and exit non-zero.
"""
from __future__ import annotations

import functools
import sys

from invoke import Collection, Exit, task
from rich.table import Table

from . import api
from .config import load_config
from .errors import DeployError
from .report import backups_table, console, releases_table, step_line, timings_table


def user_errors(fn):
    """Catch DeployError once, at the top: one line, a hint, exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DeployError as exc:
            raise Exit(f"deploykit: error: {exc.one_line()}", code=2) from None
        except KeyboardInterrupt:
            raise Exit("deploykit: interrupted; run the same command again to resume, or 'invoke unlock'", code=130)
    return wrapper


def _finish(result, what: str) -> None:
    if result.dry_run:
        console.print(f"[cyan]dry run of {what}: nothing was changed[/cyan]")
        return
    if result.ok:
        console.print(f"[green]{what}: done[/green]  (journal: {result.data.get('journal')})")
        return
    err = result.error.one_line() if result.error else "failed"
    handler = result.recovery.playbook if result.recovery else None
    at = f" at {result.failed_stage}" if result.failed_stage else ""
    if handler != "recover" and result.failed_stage in (None, "check", "plan"):
        raise Exit(f"deploykit: error: {what} refused{at}: {err}", code=2)
    if handler != "recover":
        kept = {"abort": "; nothing live was changed, the upload is kept in failed/",
                "abandon": "; lock freed: fix the cause and run the same command again"}.get(handler or "", "")
        raise Exit(f"deploykit: error: {what} failed{at}: {err}{kept}", code=1)
    console.print(timings_table(result))
    if result.recovered:
        raise Exit(f"deploykit: {what} failed at {result.failed_stage}: {err}; RECOVERED: code, databases and media "
                   f"are back to release {result.data.get('previous')} (failed state kept in failed/)", code=1)
    rec_err = result.recovery.error.one_line() if result.recovery.error else "?"
    raise Exit(f"deploykit: {what} failed at {result.failed_stage}: {err}; recovery ALSO failed at "
               f"{result.recovery.failed_stage}: {rec_err} (lock kept; backup {result.data.get('backup_id')}; "
               f"journal {result.data.get('journal')})", code=3)


def _config(path, stage):
    cfg = load_config(path)
    if not stage:
        raise DeployError("no stage given", hint=f"pass --host STAGE, one of: {', '.join(sorted(cfg.stages))}")
    cfg.stage(stage)  # an unknown stage is refused before anything else
    return cfg


HOST_HELP = "stage to act on (a key of 'stages:' in deploykit.yaml)"
CONFIG_HELP = "path of deploykit.yaml (default: $DEPLOYKIT_CONFIG or ./deploykit.yaml)"


@task(auto_shortflags=False, help={"host": HOST_HELP, "tag": "git tag to release (default: the newest tag)",
            "dry_run": "say what each step would do, change nothing", "config": CONFIG_HELP})
@user_errors
def release(c, host=None, tag=None, dry_run=False, config=None):
    """Back up, release a git tag, verify it; on failure put code, data and media back."""
    cfg = _config(config, host)
    result = api.release(cfg, host, tag, dry_run=dry_run, reporter=step_line)
    _finish(result, f"release {result.data.get('release_id')}")


def _confirm_loss(yes: bool):
    """Show the rows a data rollback would lose; go on only when confirmed."""

    def confirm(loss: dict) -> bool:
        table = Table(title="rows written since the backup, lost by --with-data")
        for col in ("database", "table", "rows lost"):
            table.add_column(col)
        total = 0
        for db, tables in sorted(loss.items()):
            for name, n in sorted(tables.items()):
                if n:
                    table.add_row(db, name, str(n))
                    total += n
        console.print(table if total else "no row was written since that backup")
        if yes:
            return True
        if not sys.stdin.isatty():
            return False
        return input(f"restore the backup and lose {total} row(s)? type yes: ").strip() == "yes"
    return confirm


@task(auto_shortflags=False, help={
    "host": HOST_HELP, "to_tag": "roll back to the release of this git tag",
    "to_commit": "roll back to the release of this commit (a unique prefix is enough)",
    "to_release": "roll back to this release id (see 'invoke releases')",
    "with_data": "restore the target release's backup (needed across irreversible migrations; rows written since are lost)",
    "yes": "confirm the data loss of --with-data without asking (scripts)",
    "dry_run": "print the plan: per app from -> to, the backward SQL, the code switch; change nothing",
    "config": CONFIG_HELP})
@user_errors
def rollback(c, host=None, to_tag=None, to_commit=None, to_release=None, with_data=False, yes=False,
             dry_run=False, config=None):
    """Go back to an earlier release: migrations unapplied with the newer code, code switched, rows kept.

    Without --to-tag/--to-commit/--to-release: the release before the live one.
    Running the same command again after an interruption finishes it.
    """
    cfg = _config(config, host)
    if sum(bool(x) for x in (to_tag, to_commit, to_release)) > 1:
        raise DeployError("give only one of --to-tag, --to-commit, --to-release", hint="pick the one you mean")
    result = api.rollback(cfg, host, to_tag=to_tag, to_commit=to_commit, to_release=to_release,
                          with_data=with_data, confirm=_confirm_loss(yes), dry_run=dry_run, reporter=step_line)
    plan = result.data.get("plan")
    if dry_run and plan:
        console.print(f"plan: {result.data.get('release_id')} -> {result.data.get('target')}")
        for step in plan["steps"]:
            console.print(f"  {'unapply' if step['backwards'] else 'apply'} {step['app']}.{step['name']}"
                          + (f"  IRREVERSIBLE: {'; '.join(step['irreversible'])}" if step["irreversible"] else ""))
            for line in step.get("sql", []):
                console.print(f"      {line}", style="dim")
    _finish(result, f"rollback to {result.data.get('target')}")


@task(auto_shortflags=False, help={"host": HOST_HELP, "dry_run": "say what would be backed up", "config": CONFIG_HELP})
@user_errors
def backup(c, host=None, dry_run=False, config=None):
    """Take a verified backup set (code, databases, media, paths) now."""
    cfg = _config(config, host)
    result = api.backup(cfg, host, dry_run=dry_run, reporter=step_line)
    _finish(result, f"backup {result.data.get('backup_id')}")


@task(auto_shortflags=False, help={"host": HOST_HELP, "backup": "backup id (see 'invoke backups')",
            "dry_run": "say what would be restored", "config": CONFIG_HELP})
@user_errors
def restore(c, host=None, backup=None, dry_run=False, config=None):
    """Restore a backup's databases and files; refuses one that does not verify."""
    cfg = _config(config, host)
    if not backup:
        raise DeployError("no backup given", hint="pass --backup ID, one of those listed by 'invoke backups'")
    result = api.restore(cfg, host, backup, dry_run=dry_run, reporter=step_line)
    _finish(result, f"restore of {backup}")


@task(auto_shortflags=False, help={"host": HOST_HELP, "config": CONFIG_HELP})
@user_errors
def releases(c, host=None, config=None):
    """List the releases recorded on the stage: commit, tags, status, migrations, backup."""
    cfg = _config(config, host)
    rows = api.list_releases(cfg, host)
    console.print(releases_table(rows, {r["backup_id"]: r["backup_bytes"] for r in rows if r.get("backup_bytes")}))


@task(auto_shortflags=False, help={"host": HOST_HELP, "config": CONFIG_HELP})
@user_errors
def backups(c, host=None, config=None):
    """List the backups on the stage's primary host with sizes and verification state."""
    cfg = _config(config, host)
    console.print(backups_table(api.list_backup_sets(cfg, host)))


@task(auto_shortflags=False, help={"host": HOST_HELP, "config": CONFIG_HELP})
@user_errors
def unlock(c, host=None, config=None):
    """Show who holds the stage lock and since when, and free it (for a stale lock)."""
    cfg = _config(config, host)
    freed = api.unlock(cfg, host)
    if not freed:
        console.print(f"stage {host}: no lock held")
    for f in freed:
        console.print(f"{f['host']}: freed lock of run {f.get('run_id')} ({f.get('command')}) by "
                      f"{f.get('user')}@{f.get('controller')} pid {f.get('pid')}, held since {f.get('since')}")


@task(auto_shortflags=False, help={"sandbox": "directory for the demo (default: ./.demo, recreated)", "keep": "leave the demo's processes running"})
@user_errors
def demo(c, sandbox=".demo", keep=False):
    """Release v1.0 and v1.1 of the sample project locally, break v1.3, watch it recovered."""
    from .demo.scenario import run_demo

    if not run_demo(sandbox, keep=keep):
        raise Exit("deploykit: demo: the final state is NOT what it was before the broken release", code=1)


@task(auto_shortflags=False, help={"k": "only tests matching this expression", "x": "stop at the first failure"})
def test(c, k=None, x=False):
    """Run the test suite (real sshd hosts, PostgreSQL, the sample project)."""
    from .testing.runner import run_tests

    sys.exit(run_tests(k=k, exitfirst=x))


ns = Collection(release, rollback, backup, restore, releases, backups, unlock, demo, test)
