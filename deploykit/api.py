"""The library entry points behind the invoke tasks.

Each function checks its input before it contacts a host (bad input changes
nothing), then runs `with Run(...)` (deploykit.engine.run): signals are
handled, a dead run holding the lock is finished first, the playbook runs,
and whatever happens the run is closed (heartbeat stopped, temp files
removed, the lock either freed or kept with what is left to do). A RunResult
keeps what every host did.
"""
from __future__ import annotations

from . import layout
from .engine import takeover
from .state.backups import list_backups, new_backup_id, verify
from .config import Config
from .errors import BackupInvalid, DeployError, NotConfirmed, PartialRollout
from .transport.host import q
from .gitrepo import Revision, resolve
from .planning import PlanError, find_target
from .engine import Reporter, RunResult, run_playbook
from .work import colour_writes
from .work.rollout import partial as rollout_partial
from .engine.run import Run
from .state.releases import Registry, new_release_id


def release(config: Config, stage: str, tag: str | None = None, *, dry_run: bool = False,
            reporter: Reporter | None = None, batches: list | None = None, all_at_once: bool = False) -> RunResult:
    """Back up, release TAG (default: the newest tag), verify; recover on failure.

    In batches (`batches`, else rollout.batches; not with `all_at_once`): playbooks/release_rolling.yml.
    `all_at_once`: every host together, the writers stopped during the migrate, whatever the migrations do.
    """
    revision = resolve(config.repo, tag)  # an unknown tag stops here, before any host
    rolling = bool(batches or config.rollout.batches) and not all_at_once
    options = {"tag": tag, **({"batches": batches} if batches else {}), **({"all_at_once": True} if all_at_once else {})}
    with Run(config, stage, command="release", dry_run=dry_run, options=options) as run:
        ctx = run.ctx
        ctx.revision = revision
        ctx.release_id = new_release_id(revision.commit)
        ctx.backup_id = new_backup_id(f"pre-{revision.commit[:7]}")

        def body():
            result = run_playbook(ctx, "release_rolling" if rolling else "release", reporter)
            if ctx.state.rollout:
                result.data["rollout"] = ctx.state.rollout
                behind = rollout_partial(ctx.state.rollout)
                if result.ok and behind and not ctx.dry_run:
                    result.ok, result.failed_phase, result.data["partial"] = False, "rollout", True
                    result.error = PartialRollout(f"{len(behind)} host(s) failed within rollout.max_fail and serve "
                                                  f"the previous release: {', '.join(behind)}")
            result.data["release_id"] = ctx.release_id
            return result
        return run.play(body, reporter)


def rollback(config: Config, stage: str, *, to_tag: str | None = None, to_commit: str | None = None,
             to_release: str | None = None, with_data: bool = False, confirm=None, dry_run: bool = False,
             reporter: Reporter | None = None) -> RunResult:
    """Go back to an earlier release (default: the one before the live one).

    Migrations the target did not have are unapplied with the newer code,
    then the code is switched; rows are kept. Irreversible migrations stop it
    before anything changes, unless `with_data`: then the target's backup is
    restored, after `confirm(loss_report)` says yes.
    """
    tag_commit = resolve(config.repo, to_tag).commit if to_tag else None  # unknown tag: stop before any host
    def body(ctx) -> RunResult:
        registry = Registry.load(ctx.primary)
        live = registry.live()
        if not live:
            raise DeployError(f"stage {stage} has no live release", hint="release one first with 'invoke release'")
        try:
            target = find_target(registry.releases, live, tag=to_tag, commit=to_commit, release_id=to_release,
                                 tag_commit=tag_commit)
        except PlanError as exc:
            raise DeployError(str(exc), hint=exc.hint) from None
        ctx.failed, ctx.previous, ctx.release_id = live, target, live["id"]
        ctx.revision = Revision(target.get("commit") or "", target.get("tag"), target.get("tags", []), "")
        result = run_playbook(ctx, "rollback_plan", reporter)
        result.data.update({"release_id": live["id"], "target": target["id"], "plan": ctx.state.plan,
                            "loss": ctx.state.loss})
        if not result.ok:
            return result
        if with_data and not dry_run and confirm is not None and not confirm(ctx.state.loss or {}):
            ctx.unlock_all()
            result.ok = False
            result.failed_phase, result.refused = "plan", True
            result.error = NotConfirmed("rollback not confirmed: nothing was changed")
            return result
        applied = run_playbook(ctx, "rollback_data" if with_data else "rollback", reporter)
        result.records += applied.records
        result.ok, result.error, result.failed_phase = applied.ok, applied.error, applied.failed_phase
        result.refused = applied.refused
        result.recovery = applied.recovery
        result.data["backup_id"] = ctx.backup_id
        return result

    with Run(config, stage, command="rollback", dry_run=dry_run,
             options={"with_data": with_data, "tag": to_tag}) as run:
        return run.play(lambda: body(run.ctx), reporter)


def backup(config: Config, stage: str, *, dry_run: bool = False, reporter: Reporter | None = None) -> RunResult:
    """Take a verified backup set now."""
    def body(ctx) -> RunResult:
        ctx.previous = Registry.load(ctx.primary).live()
        return run_playbook(ctx, "backup", reporter)

    with Run(config, stage, command="backup", dry_run=dry_run, options={"label": "manual"}) as run:
        run.ctx.backup_id = new_backup_id("manual")
        return run.play(lambda: body(run.ctx), reporter)


def restore(config: Config, stage: str, backup_id: str, *, confirm=None, dry_run: bool = False,
            reporter: Reporter | None = None) -> RunResult:
    """Restore a verified backup's databases and files (refuses one that does not verify).

    `confirm(summary)` is asked, under the lock, after the backup verified and
    before anything changes; None means the caller already decided (library use).
    """
    def body(ctx) -> RunResult:
        if backup_id not in list_backups(ctx.primary):
            raise BackupInvalid(f"no backup {backup_id!r} on {ctx.primary.name}")
        ctx.backup_id = backup_id
        live = Registry.load(ctx.primary).live()
        ctx.previous = live
        ctx.release_id = live["id"] if live else None
        return run_playbook(ctx, "restore", reporter)

    with Run(config, stage, command="restore", dry_run=dry_run) as run:
        run.ctx.confirm = confirm
        return run.play(lambda: body(run.ctx), reporter)


def check(config: Config, stage: str, *, reporter: Reporter | None = None) -> RunResult:
    """Every read-only check a release makes before changing anything (deploykit check)."""
    def body(ctx) -> RunResult:
        held = takeover.holders(ctx)
        result = run_playbook(ctx, "check", reporter)
        result.data["holders"] = [{"host": h.host.name, **h.holder, "gone": h.verdict.gone, "why": h.verdict.why}
                                  for h in held]
        return result

    with Run(config, stage, command="check", dry_run=True, takeover=False) as run:
        return run.play(lambda: body(run.ctx), reporter)


def status(config: Config, stage: str, *, reporter: Reporter | None = None) -> dict:
    """What each host of the stage is like now (deploykit status): read-only, a finding is never raised.

    Returns {"run", "hosts": {host: facts, problems, warnings}}; ending.status_ending judges it.
    """
    with Run(config, stage, command="status", dry_run=True, takeover=False) as run:
        result = run.play(lambda: run_playbook(run.ctx, "status", reporter), reporter)
        if not result.ok:
            raise result.error
        found = run.ctx.state.status
        hosts = {h.name: found[h.name] for h in run.ctx.hosts if h.name in found}
        return {"run": run.ctx.run_id, "hosts": hosts}


def plan(config: Config, stage: str, tag: str | None = None, *, python: str | None = None,
         reporter: Reporter | None = None) -> dict:
    """The migrations a release of TAG (default: the newest tag) would run on the stage, each operation
    classified for a release while the old code serves (deploykit plan): read-only, nothing is refused.

    Returns the helper's `safety` answer (see remote/django_state.py) with `source` (where it was
    classified), `from` (the live release), `to` (the revision) and `run`. `python`: the controller's
    interpreter for a tag whose code is not on the stage yet (work/migration_safety).
    """
    revision = resolve(config.repo, tag)  # an unknown tag stops here, before any host
    with Run(config, stage, command="plan", dry_run=True, takeover=False,
             options={"tag": tag, "python": python}) as run:
        run.ctx.revision = revision
        result = run.play(lambda: run_playbook(run.ctx, "plan", reporter), reporter)
        if not result.ok:
            raise result.error
        return {"run": run.ctx.run_id, **(run.ctx.state.migration_safety or {})}


def host_journals(config: Config, stage: str, ref: str | None) -> tuple[str | None, list[dict], dict]:
    """A run's journal as the stage's hosts keep it (deploykit log --from-host): read-only, no run of its own.

    `ref` is a run id, a unique prefix or `last`, resolved against the primary's journal directory
    (None: every run there, each summed up from its own copy). Every host's copy is read and merged
    (each holds its own steps and the run's common events); returns (run id, events, {host: error}).
    """
    from .state import runlog
    from .transport.host import make_host

    specs = config.stage(stage)
    hosts = [make_host(spec, config, read_only=True) for spec in specs]
    hosts.sort(key=lambda h: not h.is_primary)
    errors: dict = {}
    try:
        primary = hosts[0]
        journal_dir = layout.journal_dir(primary)
        ids = sorted(n[:-len(runlog.SUFFIX)] for n in primary.listdir(journal_dir) if n.endswith(runlog.SUFFIX))
        run_id = runlog.resolve(ids, ref, f"{primary.name}:{journal_dir}")
        seen: set[str] = set()
        events: list[dict] = []
        for host in hosts:
            try:
                res = host.run(f"cat {q(layout.journal_file(host, run_id))}", check=False, read_only=True)
            except DeployError as exc:
                errors[host.name] = exc.one_line()
                continue
            if not res.ok:
                errors[host.name] = f"no copy of the journal of {run_id}"
                continue
            for line in res.stdout.splitlines():
                if line.strip() and line not in seen:
                    seen.add(line)
                    events += runlog.parse(line)
        events.sort(key=lambda e: runlog.epoch(e) or 0.0)  # stable: events of one moment keep their order
        return run_id, events, errors
    finally:
        for host in hosts:
            host.close()


def host_runs(config: Config, stage: str) -> list[dict]:
    """Every run whose journal the primary host keeps, summed up from that copy (deploykit log --from-host)."""
    from .state import runlog
    from .transport.host import make_host

    hosts = [make_host(spec, config, read_only=True) for spec in config.stage(stage)]
    host = next((h for h in hosts if h.is_primary), hosts[0])
    try:
        journal_dir = layout.journal_dir(host)
        pattern = '"event": "(' + "|".join(SUMMARY_EVENTS) + ')"'
        res = host.run(f"cd {q(journal_dir)} 2>/dev/null && grep -H -E {q(pattern)} -- *{runlog.SUFFIX}",
                       check=False, read_only=True)
        per_run: dict[str, list[dict]] = {}
        for line in res.stdout.splitlines():
            name, _, doc = line.partition(":")
            if name.endswith(runlog.SUFFIX):
                per_run.setdefault(name[:-len(runlog.SUFFIX)], []).extend(runlog.parse(doc))
        return [runlog.summary(rid, per_run[rid], local=False) for rid in sorted(per_run)]
    finally:
        for h in hosts:
            h.close()


# the events a run's one-line summary reads (state/runlog.summary): a host's copy is grepped for them only
SUMMARY_EVENTS = ("run_start", "playbook_start", "playbook_done", "playbook_failed", "on_failure", "takeover",
                  "interrupted", "run_end")


def run_procedure(config: Config, stage: str, name: str, *, dry_run: bool = True,
                  reporter: Reporter | None = None, backup_id: str | None = None) -> RunResult:
    """Run any playbook by name against the live release (for dry-runs of procedures: recover, abort, ...)."""
    def body(ctx) -> RunResult:
        registry = Registry.load(ctx.primary)
        live = registry.live()
        ctx.previous = live
        ctx.failed = live
        ctx.release_id = live["id"] if live else None
        ctx.backup_id = backup_id or (live or {}).get("backup_id")
        if live:
            ctx.revision = Revision(live.get("commit") or "", live.get("tag"), live.get("tags", []), "")
        return run_playbook(ctx, name, reporter, procedure=True)

    with Run(config, stage, command=name, dry_run=dry_run, takeover=False) as run:
        return run.play(lambda: body(run.ctx), reporter)


def list_releases(config: Config, stage: str) -> list[dict]:
    with Run(config, stage, command="releases", dry_run=True) as run:
        ctx = run.ctx
        releases = Registry.load(ctx.primary).releases
        present = set(list_backups(ctx.primary))
        for r in releases:
            if r.get("backup_id") in present:
                r["backup_bytes"] = ctx.primary.helper("files", "dir_size", {"path": ctx.backup_dir(ctx.primary, r["backup_id"])})["bytes"]
        return releases


def list_backup_sets(config: Config, stage: str) -> list[dict]:
    """Every backup on the primary with size, items and verification state."""
    rows = []
    with Run(config, stage, command="backups", dry_run=True) as run:
        ctx = run.ctx
        host = ctx.primary
        for bid in list_backups(host):
            path = layout.backup_dir(host, bid)
            ok, problems, manifest = verify(ctx, host, path)
            if manifest is None:
                manifest = host.read_json(layout.manifest(path)) or {}
            size = host.helper("files", "dir_size", {"path": path})["bytes"]
            rows.append({"id": bid, "bytes": size, "verified": ok, "problems": problems,
                         "items": [i["name"] for i in manifest.get("items", [])],
                         "release": manifest.get("release"), "for_release": manifest.get("for_release"),
                         "created": manifest.get("created")})
        return rows


def unlock(config: Config, stage: str, *, force: bool = False, dry_run: bool = False,
           reporter: Reporter | None = None) -> list[dict]:
    """Free the stage lock of a run that is provably gone and left nothing to finish.

    A live holder, a dead one whose recovery (or abort, or finish) is pending,
    or one whose long commands still run on a host is refused unless `force`:
    the next mutating command on the stage finishes a dead run's work itself.
    Returns one row per lock found (what `inspect_lock` saw, `forced` when freed by force).
    """
    with Run(config, stage, command="unlock", dry_run=dry_run, options={"force": force}, takeover=False) as run:
        result = run.play(lambda: run_playbook(run.ctx, "unlock", reporter), reporter)
        if not result.ok:
            raise result.error
        return run.ctx.state.lock_holders


def _colours(config: Config):
    """The colours: section, or the refusal that says how to write one (before any host is reached)."""
    if config.colours is None:
        raise DeployError(f"{config.path}: no 'colours:' section",
                          hint="add colours: {stages: [blue, green], router: {stage: edge, nginx: {...}}} "
                               "(see the README's Blue/green section)")
    return config.colours


def switch(config: Config, to: str, *, dry_run: bool = False, reporter: Reporter | None = None) -> RunResult:
    """Send the traffic to colour `to` at once (no data moves): refused when it is live already, not healthy,
    or the router's preflight fails; verified through the router, and switched back when that fails."""
    colours = _colours(config)
    if to not in colours.stages:
        raise DeployError(f"{to!r} is not a colour (colours: {', '.join(colours.stages)})",
                          hint=f"pass --to {colours.stages[0]} or --to {colours.stages[1]}")
    others = tuple(colours.stages)
    with Run(config, colours.router.stage, command="switch", dry_run=dry_run, options={"to": to},
             others=others) as run:
        result = run.play(lambda: run_playbook(run.ctx, "switch", reporter), reporter)
        result.data["colour"] = to
        result.data["before"] = run.ctx.state.router.get("before") or {}
        result.data["left"] = run.ctx.state.router.get("left") or {}  # colour -> its writes since it went live
        result.data["left_said"] = [colour_writes.describe(c, got) for c, got in result.data["left"].items()]
        result.data["live"] = _live_text(result, to)
        return result


def _live_text(result: RunResult, to: str) -> str:
    """What the ending line says is live: the colour the router serves now, as far as the run knows."""
    before = sorted({c for c in result.data["before"].values() if c}) or ["no colour"]
    if result.recovery is not None and not result.recovery.ok:
        return "unknown: switching back failed too (see the journal)"
    if result.ok and not result.dry_run:
        return f"colour {to} (router)"
    return f"colour {', '.join(before)} (router)"


def colours(config: Config, *, reporter: Reporter | None = None) -> dict:
    """Which colour the router serves, each colour's live release and data age (deploykit colours): read-only."""
    spec = _colours(config)
    with Run(config, spec.router.stage, command="colours", dry_run=True, takeover=False,
             others=tuple(spec.stages)) as run:
        result = run.play(lambda: run_playbook(run.ctx, "colours", reporter), reporter)
        if not result.ok:
            raise result.error
        router = run.ctx.state.router.get("before") or {}
        served = sorted({c for c in router.values() if c})
        return {"run": run.ctx.run_id, "router": router, "live": served[0] if len(served) == 1 else None,
                "colours": run.ctx.state.colours}


MODES = ("auto", "copy", "replicate")
PLAYBOOKS = {"copy": "transfer", "replicate": "transfer_replicate"}


def transfer(config: Config, source: str, target: str, *, mode: str = "auto", tag: str | None = None,
             max_freeze: float = 10.0, dry_run: bool = False, reporter: Reporter | None = None) -> RunResult:
    """Move colour `source`'s state (databases, media) to the idle colour `target`, then the traffic to it.

    Mode copy (playbooks/transfer.yml): the idle target's processes stopped; writes frozen on the source
    (reads go on) from the dump until the router serves the target: the backup set copied checked to the
    target, restored beside and swapped in there, migrated with the target's live code, verified, the router
    switched and verified. Mode replicate (playbooks/transfer_replicate.yml): the databases copied by
    PostgreSQL logical replication while the source serves, then frozen only for the rest of the lag, the
    sequences, the migrate, the check and the switch, within `max_freeze` seconds (else unfrozen, nothing
    switched). Mode auto: replicate when the source allows it, else copy. With `tag`, the tag is first
    released on the idle target (a release of its own, undone on failure), then its code migrates the data.
    """
    colours = _colours(config)
    for role, name in (("--from", source), ("--to", target)):
        if name not in colours.stages:
            raise DeployError(f"{role} {name!r} is not a colour (colours: {', '.join(colours.stages)})",
                              hint=f"pass {role} {colours.stages[0]} or {role} {colours.stages[1]}")
    if source == target:
        raise DeployError(f"--from and --to are both {source}", hint="transfer from one colour to the other")
    if mode not in MODES:
        raise DeployError(f"--mode {mode!r} is not a transfer mode", hint="use --mode copy, replicate or auto")
    if not max_freeze or max_freeze <= 0:
        raise DeployError(f"--max-freeze {max_freeze!r} is not a number of seconds above 0", hint="--max-freeze 10")
    released = _release_on_idle(config, target, tag, dry_run, reporter) if tag is not None else None
    options = {"mode": mode, "to": target, "label": "transfer", "max_freeze": float(max_freeze),
               "stages": {"source": source, "target": target, "router": colours.router.stage}}
    with Run(config, source, command="transfer", dry_run=dry_run, options=options,
             others=(target, colours.router.stage)) as run:
        ctx = run.ctx
        ctx.backup_id = new_backup_id(f"transfer-{target}")

        def body() -> RunResult:
            ctx.previous = Registry.load(ctx.primary).live()
            if ctx.options["mode"] == "auto":
                from .work.replication import blockers
                why = blockers(ctx, ctx.primary_of(source), ctx.primary_of(target))
                ctx.options["mode"] = "copy" if why else "replicate"
                ctx.journal.record("transfer_mode", mode=ctx.options["mode"], why_not_replicate=why)
            return run_playbook(ctx, PLAYBOOKS[ctx.options["mode"]], reporter)

        result = run.play(body, reporter)
        result.data.update({"source": source, "target": target, "mode": ctx.options["mode"],
                            "freeze_seconds": ctx.state.freeze_seconds,
                            "copied": {k: v for k, v in (ctx.state.transfer.get("copied") or {}).items()},
                            "migrated": ctx.state.transfer.get("migrated"),
                            "media": ctx.state.transfer.get("media") or [],
                            "replication": ctx.state.transfer.get("replication") or {},
                            "released": released})
        return result


def _release_on_idle(config: Config, target: str, tag: str, dry_run: bool, reporter) -> dict:
    """`transfer --tag T`: release T on the idle target first (a release, with its own backup and recovery),
    so that the transfer migrates the moved data with T's code. Refused while the target is live."""
    resolve(config.repo, tag)  # an unknown tag stops here, before any host
    live = colours(config)["live"]
    if live == target:
        raise DeployError(f"{target} is the live colour on the router: --tag would release onto the colour "
                          "serving traffic, and the transfer to it would be refused", hint="transfer to the idle "
                          "colour, or switch first")
    result = release(config, target, tag, dry_run=dry_run, reporter=reporter)
    if not result.ok:
        raise DeployError(f"releasing {tag} on {target} failed, so nothing was transferred: "
                          f"{result.error.one_line() if result.error else 'see its journal'}",
                          hint=f"its recovery ran ({'ok' if result.recovery and result.recovery.ok else 'see its journal'}); "
                               f"'deploykit log {result.run_id}' shows what happened")
    return {"run": result.run_id, "tag": tag, "dry_run": result.dry_run}


def refresh(config: Config, source: str, target: str, *, dry_run: bool = False,
            reporter: Reporter | None = None) -> RunResult:
    """Copy stage `source`'s database to stage `target` masked in the stream, prove it clean, swap it in.

    playbooks/refresh.yml: the rules resolved through the source's own models (a personal-looking column
    without a rule refuses the refresh before anything is copied); keyed digests of the original values kept
    in memory; a new database built beside the target's (schema, the masked rows of one snapshot, then keys);
    scanned for every original value (one found drops it); swapped in by rename, migrated with the target's
    live code, its processes restarted and checked. The source is only read.
    """
    for role, name in (("--from", source), ("--to", target)):
        if name not in config.stages:
            raise DeployError(f"{role} {name!r} is not a stage (stages: {', '.join(config.stages)})",
                              hint=f"pass {role} with one of the stages of deploykit.yaml")
    if source == target:
        raise DeployError(f"--from and --to are both {source}", hint="refresh from production to another stage")
    options = {"label": "refresh", "to": target, "stages": {"source": source, "target": target}}
    with Run(config, target, command="refresh", dry_run=dry_run, options=options, others=(source,)) as run:
        ctx = run.ctx

        def body() -> RunResult:
            ctx.previous = Registry.load(ctx.primary).live()
            return run_playbook(ctx, "refresh", reporter)

        result = run.play(body, reporter)
        rf = ctx.state.refresh
        built = next((b for b in (ctx.state.restore or {}).get("built", []) if b.get("rows")), {})
        proof = rf.get("proof") or {}
        result.data.update({"source": source, "target": target, "rows": built.get("rows"),
                            "timings": built.get("timings"), "copied": built.get("copied"),
                            "masked": (rf.get("plan") or {}).get("masked_columns"),
                            "digests": rf.get("digests"),
                            "proof": {k: proof.get(k) for k in ("checked", "originals", "found", "seconds")
                                      if k in proof}})
        return result


def init_refresh_rules(config: Config, source: str) -> dict:
    """`refresh --init-rules`: read the source (read-only), write the suggested rule of every personal-looking
    column without one to the rules file (refresh.rules_file, else refresh-rules.yaml beside deploykit.yaml).
    Refused when that file exists: it is the operator's, never replaced."""
    import os

    from .anonymize import init_rules_text, rules_file_path, write_rules_file
    from .errors import RulesFileExists
    from .work import refresh as work
    if source not in config.stages:
        raise DeployError(f"--from {source!r} is not a stage (stages: {', '.join(config.stages)})",
                          hint="pass --from with the stage whose data the rules are for")
    path = rules_file_path(config)
    if os.path.lexists(path):  # before any host is asked: the file is the operator's
        raise RulesFileExists(f"{path} already exists; --init-rules does not overwrite it")
    with Run(config, source, command="refresh", dry_run=True, options={"label": "init-rules"}) as run:
        findings = work.suggest_rules(run.ctx, run.ctx.primary, work.pg_driver(run.ctx))
    written = write_rules_file(path, init_rules_text(findings))
    return {"path": str(written), "suggested": [f.as_dict() for f in findings]}
