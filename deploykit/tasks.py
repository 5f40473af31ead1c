"""The invoke tasks operators run. Import `ns` from your project's tasks.py:

    from deploykit.tasks import ns

or run them without a tasks.py through the `deploykit` console script.
Errors a user can fix are shown as one line with a hint and exit non-zero.
"""
from __future__ import annotations

import functools
import sys

from invoke import Collection, Exit, task

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
    if handler != "recover":
        kept = "; nothing live was changed, the upload is kept in failed/" if handler == "abort" else ""
        raise Exit(f"deploykit: error: {what} stopped at {result.failed_stage}: {err}{kept}", code=2)
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


@task(auto_shortflags=False, help={"host": HOST_HELP, "dry_run": "say what each step would do, change nothing", "config": CONFIG_HELP})
@user_errors
def rollback(c, host=None, dry_run=False, config=None):
    """Undo the live release: the previous code, with its pre-release database and media."""
    cfg = _config(config, host)
    result = api.rollback(cfg, host, dry_run=dry_run, reporter=step_line)
    _finish(result, f"rollback of {result.data.get('release_id')}")


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
    console.print(releases_table(api.list_releases(cfg, host)))


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
