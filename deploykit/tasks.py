"""The invoke tasks operators run. Import `ns` from your project's tasks.py:

    from deploykit.tasks import ns

or run them without a tasks.py through the `deploykit` console script.
Operator tasks only: the demo and the test suite are the repository's own
tasks (its tasks.py), so a user's `invoke --list` never offers a task that
may run apt-get as root.
Errors a user can fix are shown as one line with a hint; exit codes are
chosen in one place (deploykit.ending). invoke's own `--dry` means
`--dry-run` here.
"""
from __future__ import annotations

import functools
import sys
from pathlib import Path

from invoke import Collection, Exit, task
from rich.markup import escape
from rich.table import Table

from . import api
from .config import load_config
from .config.rollout import parse_batch_option
from .ending import REFUSED, ending, exit_code, status_ending
from .errors import DeployError
from .display import Display, current, run_result_doc
from . import runreport
from .report import (backups_table, colours_table, migration_plan_table, releases_table, rollout_table, run_steps_table,
                     runs_table, status_table, timings_table)
from .scaffold import init_project
from .state import runlog


def user_errors(fn):
    """The frame of every operator task: `--stage` as another name of `--host`, the display (`--json` or
    not), and DeployError caught once, at the top: one line, a hint, the exit code of its class (2: refused).

    With --json a refusal is still one result object on stdout (the line for people goes to stderr).
    """

    @functools.wraps(fn)
    def wrapper(c, *args, **kwargs):
        host, stage = kwargs.get("host"), kwargs.pop("stage", None)
        if host and stage and host != stage:
            raise Exit(f"deploykit: error: --host {host} and --stage {stage} disagree (hint: they are the same "
                       "option: give one)", code=REFUSED)
        if "host" in kwargs:
            kwargs["host"] = host or stage
        with Display(json_mode=bool(kwargs.pop("json", False))) as out:
            try:
                return fn(c, *args, **kwargs)
            except DeployError as exc:
                text = f"deploykit: error: {exc.one_line()}"
                code = exit_code(exc, REFUSED)
                if out.result_doc is None:
                    out.result({"command": fn.__name__, "ok": False, "code": code, "line": text,
                                "error": exc.one_line()})
                raise Exit(text, code=code) from None
    return wrapper


def _dry(c, dry_run: bool) -> bool:
    """`--dry-run`, or invoke's own `--dry` (users mean the same thing)."""
    try:
        return bool(dry_run or c.config.run.dry)
    except AttributeError:
        return bool(dry_run)


def _finish(result, what: str, command: str) -> None:
    end = ending(result, what, command)
    out = current()
    out.result(run_result_doc(result, end, command))
    if result.recovery is not None or (not result.ok and not result.dry_run):
        out.print(timings_table(result))
    if end.code == 0:
        out.print(escape(end.text()), style="green" if not result.dry_run else "cyan")
        return
    raise Exit(end.text(), code=end.code)


def _config(path, stage):
    cfg = load_config(path)
    if not stage:
        raise DeployError("no stage given", hint=f"pass --stage STAGE (or --host STAGE), one of: "
                                                 f"{', '.join(sorted(cfg.stages))}")
    cfg.stage(stage)  # an unknown stage is refused before anything else
    return cfg


def _ask(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty() or current().json_mode:
        return False
    current().pause()
    return input(f"{question} type yes: ").strip() == "yes"


HOST_HELP = "stage to act on (a key of 'stages:' in deploykit.yaml); --stage is the same option"
STAGE_HELP = "the same as --host: the stage to act on"
JSON_HELP = "print one JSON object per event on stdout, the result last (for scripts)"


def _help(**extra) -> dict:
    return {"host": HOST_HELP, "stage": STAGE_HELP, "json": JSON_HELP, "config": CONFIG_HELP, **extra}
CONFIG_HELP = "path of deploykit.yaml (default: $DEPLOYKIT_CONFIG or ./deploykit.yaml)"


@task(auto_shortflags=False, help=_help(
    tag="git tag to release (default: the newest tag)",
    dry_run="say what each step would do; nothing on any host can be changed",
    batch="roll the app hosts in batches, e.g. 1,25%,100% (over rollout.batches): drained, switched, checked, "
          "put back, batch by batch",
    all_at_once="every host at once, processes stopped during the migrate (downtime), even when rollout.batches "
                "is set: for migrations the old code does not survive"))
@user_errors
def release(c, host=None, tag=None, dry_run=False, config=None, stage=None, json=False, batch=None,
            all_at_once=False):
    """Back up, release a git tag, verify it; on failure put code, data and media back.

    With rollout.batches (or --batch) the app hosts are switched in batches behind the balancer, after
    migrations checked safe while the old code serves; a failure puts the switched hosts back, and the same
    command run again resumes with the hosts not done.
    """
    cfg = _config(config, host)
    result = api.release(cfg, host, tag, dry_run=_dry(c, dry_run), reporter=current().step,
                         batches=parse_batch_option(batch), all_at_once=all_at_once)
    rollout = result.data.get("rollout")
    if rollout and rollout.get("batches") and not current().json_mode:
        current().print(rollout_table(rollout))
    _finish(result, f"release {result.data.get('release_id')}", "release")


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
                    table.add_row(escape(db), escape(name), str(n))
                    total += n
        current().print(table if total else "no row was written since that backup")
        return _ask(f"restore the backup and lose {total} row(s)?", yes)
    return confirm


@task(auto_shortflags=False, help=_help(
    to_tag="roll back to the release of this git tag",
    to_commit="roll back to the release of this commit (a unique prefix is enough)",
    to_release="roll back to this release id (see 'invoke releases')",
    with_data="restore the target release's backup (needed across irreversible migrations; rows written since "
              "are lost)",
    yes="confirm the data loss of --with-data without asking (scripts)",
    dry_run="print the plan: per app from -> to, the backward SQL, the code switch; change nothing"))
@user_errors
def rollback(c, host=None, to_tag=None, to_commit=None, to_release=None, with_data=False, yes=False,
             dry_run=False, config=None, stage=None, json=False):
    """Go back to an earlier release: migrations unapplied with the newer code, code switched, rows kept.

    Without --to-tag/--to-commit/--to-release: the release before the live one.
    Running the same command again after an interruption finishes it.
    """
    cfg = _config(config, host)
    if sum(bool(x) for x in (to_tag, to_commit, to_release)) > 1:
        raise DeployError("give only one of --to-tag, --to-commit, --to-release", hint="pick the one you mean")
    result = api.rollback(cfg, host, to_tag=to_tag, to_commit=to_commit, to_release=to_release,
                          with_data=with_data, confirm=_confirm_loss(yes), dry_run=_dry(c, dry_run),
                          reporter=current().step)
    plan = result.data.get("plan")
    if result.dry_run and plan:
        out = current()
        out.line(f"plan: {result.data.get('release_id')} -> {result.data.get('target')}")
        for step in plan["steps"]:
            out.line(f"  {'unapply' if step['backwards'] else 'apply'} {step['app']}.{step['name']}"
                     + (f"  IRREVERSIBLE: {'; '.join(step['irreversible'])}" if step["irreversible"] else ""))
            for line in step.get("sql", []):
                out.line(f"      {line}", style="dim")
    _finish(result, f"rollback to {result.data.get('target')}", "rollback")


@task(auto_shortflags=False, help=_help(dry_run="say what would be backed up"))
@user_errors
def backup(c, host=None, dry_run=False, config=None, stage=None, json=False):
    """Take a verified backup set (code, databases, media, paths) now."""
    cfg = _config(config, host)
    result = api.backup(cfg, host, dry_run=_dry(c, dry_run), reporter=current().step)
    _finish(result, f"backup {result.data.get('backup_id')}", "backup")


def _confirm_restore(yes: bool):
    def confirm(summary: dict) -> bool:
        table = Table(title=f"restore of backup {summary['backup']} (taken {summary.get('created')})")
        for col in ("item", "replaces", "backed up"):
            table.add_column(col)
        for row in summary["items"]:
            table.add_row(escape(row["name"]), escape(row["replaces"]), escape(row["size"]))
        current().print(table)
        current().line(f"live release: {summary.get('live') or 'none'}; the replaced data is kept aside")
        return _ask("replace the live data with this backup?", yes)
    return confirm


@task(auto_shortflags=False, help=_help(backup="backup id (see 'invoke backups')",
                                       yes="replace the live data without asking (scripts)",
                                       dry_run="say what would be restored"))
@user_errors
def restore(c, host=None, backup=None, yes=False, dry_run=False, config=None, stage=None, json=False):
    """Restore a backup's databases and files (built beside, then swapped in); refuses one that does not verify."""
    cfg = _config(config, host)
    if not backup:
        raise DeployError("no backup given", hint="pass --backup ID, one of those listed by 'invoke backups'")
    result = api.restore(cfg, host, backup, confirm=_confirm_restore(yes), dry_run=_dry(c, dry_run),
                         reporter=current().step)
    _finish(result, f"restore of {backup}", "restore")


@task(auto_shortflags=False, help=_help())
@user_errors
def check(c, host=None, config=None, stage=None, json=False):
    """Every check a release makes before it changes anything: config, hosts, tools, processes, databases, health."""
    cfg = _config(config, host)
    out = current()
    result = api.check(cfg, host, reporter=out.step)
    for h in result.data.get("holders", []):
        out.line(f"{h['host']}: locked by run {h.get('run_id')} ({h.get('command')}): {h['why']}")
    if not result.ok:
        text = (f"deploykit: error: check of {host} failed at {result.failed_phase}: "
                f"{result.error.one_line() if result.error else 'failed'}")
        out.result({"command": "check", "ok": False, "code": REFUSED, "line": text, "run": result.run_id,
                    "failed_phase": result.failed_phase, "holders": result.data.get("holders", [])})
        raise Exit(text, code=REFUSED)
    text = f"deploykit: check of {host}: every check passed; nothing was changed"
    out.result({"command": "check", "ok": True, "code": 0, "line": text, "run": result.run_id,
                "holders": result.data.get("holders", [])})
    out.line(text, style="green")


@task(auto_shortflags=False, help=_help(
    tag="the git tag whose migrations are classified (default: the newest tag)",
    python="for a tag whose code is not on the stage yet: the controller's interpreter that imports the "
           "project's settings (default: the one running deploykit)"))
@user_errors
def plan(c, host=None, tag=None, python=None, config=None, stage=None, json=False):
    """The migrations a release of TAG would run, each operation classified for a rolling release (the old
    code still serves): safe, review or unsafe, with the lock and table rewrite each takes on PostgreSQL.

    Read-only: nothing is changed and nothing is refused (exit 0); a rolling release refuses the unsafe ones.
    The tag's own code classifies: on the primary when a release of it is there, else from a checkout on the
    controller against the applied migrations read from the primary.
    """
    from .work.migration_safety import counts_text, source_text, unsafe_operations

    cfg = _config(config, host)
    found = api.plan(cfg, host, tag, python=python)
    out = current()
    to = (found.get("to") or {}).get("tag") or (found.get("to") or {}).get("commit", "")[:10]
    unsafe = unsafe_operations(found)
    text = f"deploykit: plan of {to} on {host}: {counts_text(found)}; nothing was changed"
    out.result({**found, "command": "plan", "ok": True, "code": 0, "line": text, "stage": host, "unsafe": unsafe})
    if found.get("steps"):
        out.print(migration_plan_table(found))
    else:
        out.line(f"no migration to apply: the database has every migration of {to}")
    for app, names in sorted((found.get("unmatched") or {}).items()):
        out.line(f"the database has {app} migrations {to} does not know: {', '.join(names)} (a rollback target?)",
                 style="yellow")
    out.line(source_text(found), style="dim")
    if unsafe:
        first = unsafe[0]
        out.line(f"a rolling release refuses it: {first['app']}.{first['migration']} {first['describe']}"
                 + (f" and {len(unsafe) - 1} more" if len(unsafe) > 1 else "") + "; the ways out: --all-at-once "
                 "(downtime: processes stopped during migrate) or split it over two releases (expand, then contract)",
                 style="bold red")
    out.line(text, style="green")


@task(auto_shortflags=False, help=_help())
@user_errors
def releases(c, host=None, config=None, stage=None, json=False):
    """List the releases recorded on the stage: commit, tags, status, migrations, backup."""
    cfg = _config(config, host)
    rows = api.list_releases(cfg, host)
    out = current()
    out.result({"command": "releases", "ok": True, "code": 0, "stage": host, "releases": rows})
    out.print(releases_table(rows, {r["backup_id"]: r["backup_bytes"] for r in rows if r.get("backup_bytes")}))


@task(auto_shortflags=False, help=_help())
@user_errors
def backups(c, host=None, config=None, stage=None, json=False):
    """List the backups on the stage's primary host with sizes and verification state."""
    cfg = _config(config, host)
    rows = api.list_backup_sets(cfg, host)
    out = current()
    out.result({"command": "backups", "ok": True, "code": 0, "stage": host, "backups": rows})
    out.print(backups_table(rows))


@task(auto_shortflags=False, help=_help(force="free the lock even of a live run, or of a dead one with work left",
                                       dry_run="show the holders and what would be freed; nothing is changed"))
@user_errors
def unlock(c, host=None, force=False, dry_run=False, config=None, stage=None, json=False):
    """Show who holds the stage lock; free it only when that run is provably gone and left nothing to finish."""
    cfg = _config(config, host)
    dry = _dry(c, dry_run)
    found = api.unlock(cfg, host, force=force, dry_run=dry)
    out = current()
    out.result({"command": "unlock", "ok": True, "code": 0, "stage": host, "dry_run": dry, "locks": found})
    if not found:
        out.line(f"stage {host}: no lock held")
    for f in found:
        verb = "would free" if dry else "freed"
        out.line(f"{f['host']}: {verb}{' (FORCED)' if f.get('forced') or (dry and force) else ''} lock "
                 f"of run {f.get('run_id')} ({f.get('command')}) by {f.get('user')}@{f.get('controller')} "
                 f"pid {f.get('pid')}, held since {f.get('since')}: {f['why']}")
    if dry:
        out.line(f"dry run of unlock on {host}: nothing was changed", style="cyan")


def _init_table(result) -> Table:
    table = Table(title=f"deploykit init of {result.project.dir} ({result.project.settings_module}, "
                        f"Django {result.project.django})")
    for col in ("file", "", "detail"):
        table.add_column(col)
    style = {"written": "green", "replaced": "yellow", "appended": "green", "kept": "yellow", "to add": "yellow"}
    for f in result.files:
        table.add_row(escape(f.path), f"[{style.get(f.action, 'dim')}]{escape(f.action)}[/]", escape(f.detail))
    return table


@task(auto_shortflags=False, help=_help(
    project="the Django project: the directory of manage.py, the top of its git repository (default: .)",
    python="the interpreter that can import the project's settings (default: the one running deploykit)",
    force="replace files init would write that differ (each old one is kept as NAME.orig)",
    port="the app's port on the hosts, for gunicorn's --bind and the health check (default: 8000)",
    app="the app's name, for program names and files (default: the project directory's name)",
    deploy_to="the app's directory on the hosts (default: /srv/APP)",
    host="not used by init", stage="not used by init", config="not used by init (it writes DIR/deploykit.yaml)"))
@user_errors
def init(c, host=None, project=".", python=None, force=False, port=8000, app=None, deploy_to=None, config=None,
         stage=None, json=False):
    """Set up a Django project for deploykit: deploykit.yaml, supervisor/systemd program files, the tasks.py line."""
    result = init_project(project, python=python or sys.executable, force=force, port=int(port), app=app,
                          deploy_to=deploy_to)
    out = current()
    out.print(_init_table(result))
    for note in result.notes:
        out.line(f"note: {note}")
    kept = [f.path for f in result.files if f.action == "kept"]
    wrote = [f.path for f in result.files if f.action in ("written", "replaced", "appended")]
    if result.changed:
        text = (f"deploykit: init wrote {', '.join(wrote)}; next: put your server in deploykit.yaml (FILL IN), "
                "then 'deploykit check --stage production'")
    else:
        text = "deploykit: init: nothing to do, nothing was changed" + (
            f" ({', '.join(kept)} differ from what init writes and are kept: --force replaces them)" if kept else
            ": every file is as init writes it")
    out.result({"command": "init", "ok": True, "code": 0, "line": text, "changed": result.changed,
                "project": str(result.project.dir), "settings_module": result.project.settings_module,
                "django": result.project.django, "app": result.app, "deploy_to": result.deploy_to,
                "port": result.port, "files": [f.doc() for f in result.files], "notes": result.notes})
    out.line(text, style="green")


@task(auto_shortflags=False, help=_help())
@user_errors
def status(c, host=None, config=None, stage=None, json=False):
    """What each host of the stage is like now: live release and current, lock, processes, health, disk,
    newest verified backup, snapshots. Read-only.

    Exit 0: every host is well; 1: something needs a look (drift, a dead run's lock, disk, no usable backup);
    3: the app may not be serving (a host unreachable, a process stopped, a health check failing).
    """
    cfg = _config(config, host)
    out = current()
    found = api.status(cfg, host)
    end = status_ending(host, found["hosts"])
    text = end.text(hint="every problem is listed per host above (and in the --json result)")
    problems = [{"host": name, **p} for name, doc in found["hosts"].items() for p in doc["problems"]]
    warnings = [{"host": name, **w} for name, doc in found["hosts"].items() for w in doc["warnings"]]
    out.result({"command": "status", "ok": end.code == 0, "code": end.code, "line": text, "stage": host,
                "run": found["run"], "hosts": found["hosts"], "problems": problems, "warnings": warnings})
    for doc in found["hosts"].values():
        out.print(status_table(doc))
    for p in problems:
        out.line(f"{p['host']}: {p['text']}", style="bold red")
    for w in warnings:
        out.line(f"{w['host']}: {w['text']}", style="yellow")
    if end.code == 0:
        out.line(text, style="green")
        return
    raise Exit(text, code=end.code)


COLOURS_HELP = "not needed: the router's stage and the colours come from 'colours:' in deploykit.yaml"


def _router_stage(cfg, host) -> None:
    """--host/--stage, when given, must be the router's stage: a switch never runs on another one."""
    router = cfg.colours.router.stage if cfg.colours else None
    if host and host != router:
        raise DeployError(f"--stage {host}: switch and colours run on the router's stage ({router or 'none'})",
                          hint="leave --stage out: colours.router.stage in deploykit.yaml names it")


@task(auto_shortflags=False, help=_help(to="the colour to send the traffic to (one of colours.stages)",
                                       dry_run="run the checks, say what would change; nothing is changed",
                                       host=COLOURS_HELP, stage=COLOURS_HELP))
@user_errors
def switch(c, host=None, to=None, dry_run=False, config=None, stage=None, json=False):
    """Send the traffic to the other colour at once (no data moves); verified through the router.

    The writes the colour left behind took since it went live are counted and said: they stay in it.

    Refused (exit 2, nothing changed) when that colour is already live, is not healthy, or the router's
    preflight fails; when the check through the router fails, the router is switched back (exit 1).
    """
    cfg = load_config(config)
    _router_stage(cfg, host)
    if not to:
        names = " or ".join(cfg.colours.stages) if cfg.colours else "a colour"
        raise DeployError("no colour given", hint=f"pass --to COLOUR ({names})")
    result = api.switch(cfg, to, dry_run=_dry(c, dry_run), reporter=current().step)
    for said in result.data.get("left_said") or []:
        current().line(f"deploykit: {said}")
    _finish(result, f"switch to {to}", "switch")


@task(auto_shortflags=False, help=_help(
    from_="the colour whose state is copied (only read; writes frozen from the dump until the switch)",
    to="the idle colour that receives it (refused when it is live)",
    tag="release this tag on the idle target first (its own release, undone on failure); its code then "
        "migrates the moved data (default: the target's live release)",
    mode="how the data moves: copy (dump, copy, restore: all frozen), replicate (PostgreSQL logical "
         "replication: frozen for the last moment only), auto (replicate when the source allows it; the default)",
    max_freeze="replicate: the most seconds writes may stay frozen; past it the source is unfrozen and "
               "nothing is switched (default 10)",
    dry_run="run the checks, say what would change; nothing is changed",
    host=COLOURS_HELP, stage=COLOURS_HELP))
@user_errors
def transfer(c, host=None, from_=None, to=None, tag=None, mode="auto", max_freeze=10.0, dry_run=False, config=None,
             stage=None, json=False):
    """Move the live colour's databases and media to the idle colour, migrate and verify it, switch the router to it.

    Refused (exit 2, nothing changed) when the target is live, the source is not healthy, both colours use the
    same database, or a lock of either colour or of the router is held. 'deploykit switch --to SOURCE' sends
    the traffic back at once; the writes the target took since stay in the target.
    """
    cfg = load_config(config)
    if host and cfg.colours and host not in cfg.colours.stages:
        raise DeployError(f"--stage {host}: a transfer runs on the colours' stages",
                          hint="leave --stage out: --from and --to name them")
    if not from_ or not to:
        names = " and ".join(cfg.colours.stages) if cfg.colours else "two colours"
        raise DeployError("a transfer needs --from COLOUR and --to COLOUR", hint=f"the colours: {names}")
    try:
        seconds_allowed = float(max_freeze)
    except (TypeError, ValueError):
        raise DeployError(f"--max-freeze {max_freeze!r} is not a number of seconds", hint="--max-freeze 10") from None
    result = api.transfer(cfg, from_, to, mode=mode, tag=tag, max_freeze=seconds_allowed, dry_run=_dry(c, dry_run),
                          reporter=current().step)
    seconds = result.data.get("freeze_seconds")
    if seconds is not None:
        current().line(f"deploykit: writes on {from_} were frozen {seconds:.2f} s")
    _finish(result, f"transfer {from_} -> {to}", "transfer")


@task(auto_shortflags=False, help=_help(host=COLOURS_HELP, stage=COLOURS_HELP))
@user_errors
def colours(c, host=None, config=None, stage=None, json=False):
    """Which colour the router serves, each colour's live release and data age (newest verified backup). Read-only."""
    cfg = load_config(config)
    _router_stage(cfg, host)
    found = api.colours(cfg)
    out = current()
    live = found["live"]
    served = ", ".join(f"{h}: {c or 'no colour'}" for h, c in found["router"].items())
    text = f"deploykit: colours: the router serves {live}" if live else \
        f"deploykit: colours: the router serves no single colour ({served})"
    out.result({"command": "colours", "ok": True, "code": 0, "line": text, "run": found["run"], "live": live,
                "router": found["router"], "colours": found["colours"]})
    out.print(colours_table(found))
    out.line(text, style="green")


# tasks that take one bare word (`deploykit log RUN`): invoke has no optional positional argument, so the
# deploykit program turns the word into the option (cli.py); through invoke, give `--run RUN`
BARE_WORD = {"log": "run"}


@task(auto_shortflags=False, help=_help(
    run="the run to show: its id, a unique prefix of it, or 'last' (none: list the runs)",
    host="with --from-host: the stage whose hosts keep the journals; else list only that stage's runs",
    from_host="read the journals the stage's hosts keep (read-only), not this controller's",
    html="write an HTML report of the run (timeline per host, recovery, figures) to this file"))
@user_errors
def log(c, host=None, run=None, from_host=False, html=None, config=None, stage=None, json=False):
    """List the runs this controller journaled, or show one run's steps per host (its recovery, the backup
    used); --html writes a report page of it."""
    cfg = load_config(config)
    out = current()
    if from_host and not host:
        raise DeployError("--from-host needs the stage", hint=f"pass --host STAGE, one of: {', '.join(sorted(cfg.stages))}")
    if host:
        cfg.stage(host)  # an unknown stage is refused
    if run is None and not html:
        if from_host:
            rows, where = api.host_runs(cfg, host), f"the primary host of {host}"
            for r in rows:
                r["stage"] = r.get("stage") or host
        else:
            where = str(cfg.journal_dir)
            rows = [runlog.summary(rid, runlog.load(cfg.journal_dir, rid)) for rid in runlog.run_ids(cfg.journal_dir)]
            if host:
                rows = [r for r in rows if r.get("stage") == host]
        out.result({"command": "log", "ok": True, "code": 0, "from": where, "runs": rows})
        out.print(runs_table(rows, title=f"runs in {where}"))
        if not rows:
            out.line(f"no run journal in {where}")
        return
    errors: dict = {}
    if from_host:
        run_id, events, errors = api.host_journals(cfg, host, run)
        local = False
    else:
        run_id = runlog.resolve(runlog.run_ids(cfg.journal_dir), run, str(cfg.journal_dir))
        events, local = runlog.load(cfg.journal_dir, run_id), True
    doc = runlog.detail(run_id, events, local=local)
    if from_host:
        doc["stage"] = doc.get("stage") or host
    written = None
    if html:
        written = Path(html).expanduser().resolve()
        written.parent.mkdir(parents=True, exist_ok=True)
        written.write_text(runreport.render(doc), encoding="utf-8")
    out.result({"command": "log", "ok": True, "code": 0, "run": doc, "html": str(written) if written else None,
                "unread_hosts": errors})
    out.print(run_steps_table(doc))
    out.line(f"outcome: {doc['text']}", style="green" if doc["outcome"] == "ok" else "bold red"
             if doc["outcome"] in ("failed", "recovery failed", "died") else "yellow")
    if doc.get("recovery"):
        rec = doc["recovery"]
        out.line(f"recovery: {rec['procedure']} " + ("done" if rec["ok"] else f"failed at {rec['failed_phase']}: "
                                                                              f"{rec['error']}"))
    out.line(f"backup used: {doc.get('backup') or 'none'}" + (f"; data: {doc['restored_from']}"
                                                              if doc.get("restored_from") else ""))
    down = doc.get("downtime")
    if down and down.get("seconds") is not None:
        out.line(f"downtime: {down['seconds']:.2f} s (first stop or restart of the processes to the last "
                 "health check passed)")
    for name, why in errors.items():
        out.line(f"{name}: {why}", style="yellow")
    if written:
        out.line(f"report: {written}")


@task(auto_shortflags=False, help=_help(
    from_="the stage whose database is copied (only read: production)",
    to="the stage that receives the masked copy (its database is built beside, proved, then swapped in)",
    init_rules="write the suggested rule of every personal-looking column without one to the rules file "
               "(refresh.rules_file, else refresh-rules.yaml beside deploykit.yaml) and stop; never overwrites",
    dry_run="run the checks (rules, personal columns), say what would change; nothing is changed"))
@user_errors
def refresh(c, host=None, from_=None, to=None, init_rules=False, dry_run=False, config=None, stage=None, json=False):
    """Copy production's database to another stage with every personal column masked on production's host.

    The rules come from 'refresh:' in deploykit.yaml, per Django field (app_label.Model.field) or table.column.
    Before anything is copied, every column that looks personal and has no rule (or an explicit keep) stops the
    refresh and is named; --init-rules writes suggestions. After the copy, the target is scanned for every
    original value of the masked columns: one found drops the copy and keeps the target's data (exit 1).
    """
    cfg = load_config(config)
    if host or stage:
        raise DeployError("--stage is not used by a refresh", hint="--from and --to name the stages")
    if not from_:
        raise DeployError("a refresh needs --from STAGE", hint=f"the stages: {', '.join(cfg.stages)}")
    if init_rules:
        got = api.init_refresh_rules(cfg, from_)
        current().line(f"deploykit: {len(got['suggested'])} suggested rule(s) written to {got['path']}; review "
                       "them, then run the refresh")
        return
    if not to:
        raise DeployError("a refresh needs --to STAGE", hint=f"the stages: {', '.join(cfg.stages)}")
    result = api.refresh(cfg, from_, to, dry_run=_dry(c, dry_run), reporter=current().step)
    proof = result.data.get("proof") or {}
    if proof.get("checked") is not None:
        current().line(f"deploykit: proof: {proof['checked']} value(s) of {to} checked against "
                       f"{proof.get('originals')} original(s), {sum(f['count'] for f in proof.get('found') or [])} found")
    _finish(result, f"refresh {from_} -> {to}", "refresh")


ns = Collection(release, rollback, backup, restore, check, releases, backups, unlock, status, log, init,
                switch, colours, transfer, refresh, plan)
