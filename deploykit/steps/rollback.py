"""Rollback to any release: migrations unapplied with the newer code, then the code switch.

Every step here can run again after an interruption and does only what is
left: the migration targets are recomputed from the database each time, the
switch is atomic, and a pending-rollback file on the primary tells a rerun
which rollback it is finishing.
"""
from __future__ import annotations

import posixpath

from .. import layout
from ..state.backups import require_verified
from ..errors import DeployError
from ..transport.host import q
from ..djangoapp import django_helper, warm_up
from ..planning import applied_then, describe_target, forbidden_unapplies, unexplained_noop
from ..pyenv import describe as describe_env, ensure_recorded_env
from .base import Outcome, Step, register
from ..state.releases import Registry
from ..work.registry import save_registry
from ..work.code import link_shared, run_install, switch_current, upload_commit
from ..work.django import applied_message, collectstatic, migrate_in
from ..work.rollback import current_targets, data_backup_for, from_dir, name_of, resuming


@register
class PlanRollback(Step):
    """Compute each app's migration target and the backward plan; find irreversible migrations."""

    name = "plan_rollback"
    scope = "primary"
    read_only = True

    def run(self, ctx, host):
        if not host.exists(from_dir(ctx, host)):
            if ctx.options.get("with_data"):
                return Outcome(message=f"code of {ctx.failed['id']} is gone: the data comes back from the backup")
            raise DeployError(f"{host.name}: the code of {ctx.failed['id']} is gone; it is needed to unapply its migrations",
                              hint=f"re-release {ctx.failed.get('tag') or ctx.failed.get('commit')} or roll back with --with-data")
        state, targets = current_targets(ctx, host)
        doc = django_helper(ctx, host, from_dir(ctx, host), "plan", {"targets": [list(t) for t in targets]})
        if not ctx.options.get("with_data"):
            forbidden = forbidden_unapplies(doc["steps"], state, ctx.previous)
            if forbidden:
                raise DeployError(f"rolling back to {name_of(ctx.previous)} would unapply migrations it had when it was live: "
                                  f"{', '.join(forbidden)}",
                                  hint="roll back to a release in between first (its code has the migrations a squash "
                                       "replaced), or use --with-data to restore that release's backup")
            missing = unexplained_noop(doc["steps"], state, ctx.failed, ctx.previous)
            if missing and not resuming(ctx, host):
                raise DeployError(f"nothing to unapply, yet {name_of(ctx.failed)} recorded migrations {name_of(ctx.previous)} "
                                  f"did not have: {', '.join(missing)}; the database manage.py sees does not have them",
                                  hint="check which database the app uses on the primary (.env, DATABASE_URL, settings) "
                                       "against deploykit.yaml's databases:")
        ctx.state.plan = {"targets": targets, "steps": doc["steps"], "irreversible": doc["irreversible"],
                             "from_state": state["applied"]}
        lines = []
        for app, name in targets:
            now = state["applied"].get(app, [])
            lines.append(f"{app}: {now[-1] if now else 'zero'} -> {name or 'zero'}")
        sql = []
        for step in doc["steps"]:
            head = f"-- {'unapply' if step['backwards'] else 'apply'} {step['app']}.{step['name']}"
            sql.append(head + (" (IRREVERSIBLE: " + "; ".join(step["irreversible"]) + ")" if step["irreversible"] else ""))
            sql.extend(line for line in step.get("sql", []) if line.strip())
        if doc["irreversible"] and not ctx.options.get("with_data"):
            raise DeployError(f"irreversible migration(s) between {ctx.failed.get('tag') or ctx.failed['id']} and "
                              f"{ctx.previous.get('tag') or ctx.previous['id']}: {'; '.join(doc['irreversible'])}",
                              hint="roll back with --with-data to restore that release's backup instead (rows written since are lost)")
        return Outcome(message="; ".join(lines) or f"no migration to unapply: the database has only migrations "
                                                   f"{name_of(ctx.previous)} had",
                       diff="\n".join(sql))


@register
class EnsureTargetCode(Step):
    """Make sure the target release's code is on the host (re-deployed from git if pruned)."""

    name = "ensure_target_code"
    scope = "app"

    def describe(self, ctx, host):
        return (f"would check {ctx.release_dir(host, ctx.previous['id'])} and its Python environment "
                "(re-deploying from git, rebuilding from the recorded freeze, what was pruned)")

    def run(self, ctx, host):
        outcome = self._ensure(ctx, host)
        if host.is_primary:  # migrate_target asks it: it boots while the processes stop and the unapply runs
            warm_up(ctx, host, ctx.release_dir(host, ctx.previous["id"]))
        return outcome

    def _ensure(self, ctx, host):
        dest = ctx.release_dir(host, ctx.previous["id"])
        if host.exists(posixpath.join(dest, "manage.py")):
            if ctx.config.venv is None:
                return Outcome(message=f"{dest} present")
            env = ensure_recorded_env(ctx, host, dest, ctx.previous)  # rebuilt from its recorded freeze if pruned
            return Outcome(changed=env["changed"], message=f"{dest} present; {describe_env(env)}")
        commit = ctx.previous["commit"]
        host.run(f"rm -rf {q(dest)}")
        upload_commit(ctx, host, commit, ctx.previous.get("tag"), dest)
        link_shared(ctx, host, dest)
        env_note = ""
        if ctx.config.venv is not None:
            env_note = f"; {describe_env(ensure_recorded_env(ctx, host, dest, ctx.previous))}"
        run_install(ctx, host, dest)
        if ctx.config.collectstatic:
            collectstatic(ctx, host, dest)
        return Outcome(changed=True, message=f"re-deployed {commit[:10]} into {dest}{env_note}")


@register
class WritePending(Step):
    """Record on the primary that this rollback is under way (a rerun finishes it)."""

    name = "write_pending"
    scope = "primary"

    def run(self, ctx, host):
        host.write_json(layout.pending_rollback(host), {
            "run_id": ctx.run_id, "command": ctx.command, "from": ctx.failed["id"], "to": ctx.previous["id"],
            "with_data": bool(ctx.options.get("with_data")), "backup_id": ctx.backup_id})
        return Outcome(changed=True, message=f"{ctx.failed['id']} -> {ctx.previous['id']}")


@register
class ClearPending(Step):
    """The rollback is complete: remove the pending-rollback record."""

    name = "clear_pending"
    scope = "primary"

    def run(self, ctx, host):
        host.run(f"rm -f {q(layout.pending_rollback(host))}")
        return Outcome(changed=True, message="done")


@register
class UnapplyMigrations(Step):
    """Unapply, with the newer code, the migrations the target release did not have."""

    name = "unapply_migrations"
    scope = "primary"

    def applies(self, ctx, host):
        return not ctx.options.get("with_data")

    def describe(self, ctx, host):
        plan = ctx.state.plan or {}
        return "would migrate " + (", ".join(describe_target(a, n) for a, n in plan.get("targets", [])) or "nothing")

    def run(self, ctx, host):
        state, targets = current_targets(ctx, host)  # from the database now: never unapply twice
        if not targets:
            return Outcome(message="nothing left to unapply")
        forbid = sorted(list(k) for k in applied_then(state, ctx.previous))  # the helper refuses to touch these
        doc = django_helper(ctx, host, from_dir(ctx, host), "migrate",
                            {"targets": [list(t) for t in targets], "forbid": forbid}, track="unapply",
                            progress=lambda line: ctx.progress(host, line, kind="output", command="unapply"))
        return Outcome(changed=True, message=f"unapplied {len(doc['unapplied'])}: {', '.join(doc['unapplied'])}")


@register
class SwitchToTarget(Step):
    """Point `current` at the target release."""

    name = "switch_to_target"
    scope = "app"

    def describe(self, ctx, host):
        return f"would switch {layout.current(host)} -> {ctx.release_dir(host, ctx.previous['id'])}"

    def run(self, ctx, host):
        dest = ctx.release_dir(host, ctx.previous["id"])
        before = switch_current(host, dest)
        return Outcome(changed=before != dest, message=f"current -> {ctx.previous['id']}", diff=f"- {before}\n+ {dest}")


@register
class MigrateTarget(Step):
    """Run `migrate` with the target code: applies what the target had and the database lacks (usually nothing)."""

    name = "migrate_target"
    scope = "primary"

    def run(self, ctx, host):
        applied = migrate_in(ctx, host, ctx.release_dir(host, ctx.previous["id"]))
        return Outcome(changed=bool(applied), message=applied_message(applied, "schema matches the target code"))


@register
class RecordRollback(Step):
    """Mark the release rolled back from as rolled-back and the target as live."""

    name = "record_rollback"
    scope = "controller"

    def run(self, ctx, host):
        registry = Registry.load(ctx.primary)
        for entry in registry.releases:
            if entry["status"] == "live" and entry["id"] != ctx.previous["id"]:
                entry.update(status="rolled-back", undone_by=ctx.run_id)
        registry.make_live(ctx.previous["id"])
        save_registry(ctx, registry)
        return Outcome(changed=True, message=f"{ctx.failed['id']} rolled-back; {ctx.previous['id']} live")


@register
class ChooseDataBackup(Step):
    """Find and verify the backup holding the target release's data."""

    name = "choose_data_backup"
    scope = "primary"
    read_only = True

    def applies(self, ctx, host):
        return bool(ctx.options.get("with_data"))

    def run(self, ctx, host):
        bid = data_backup_for(ctx, host, ctx.previous)
        if not bid:
            raise DeployError(f"no backup taken while {ctx.previous.get('tag') or ctx.previous['id']} was live",
                              hint="restore an older backup with 'invoke restore --backup ID'")
        ctx.backup_id = bid
        manifest = require_verified(ctx, host, ctx.backup_dir(host))
        ctx.state.manifests[host.name] = manifest
        # the snapshot taken with that backup, if it is still there, makes the restore a rename
        successor = Registry.load(host).get(manifest.get("for_release") or "") or {}
        ctx.state.use_snapshots_of(successor if ctx.config.snapshots else None)
        snaps = ", ".join(ctx.state.snapshots.values())
        return Outcome(message=f"{bid} (taken {manifest.get('created')}) verified" + (f"; snapshot {snaps}" if snaps else ""))


@register
class LossReport(Step):
    """Count, per table, the rows written since the backup that restoring it would lose."""

    name = "loss_report"
    scope = "primary"

    def describe(self, ctx, host):
        return "would count, per table, the rows written since the backup (the real run counts them, then asks)"

    def applies(self, ctx, host):
        return bool(ctx.options.get("with_data"))

    def run(self, ctx, host):
        from ..drivers import driver_for_item

        manifest = ctx.state.manifests[host.name]
        report = {}
        for item in manifest["items"]:
            if item["kind"] != "databases":
                continue
            driver = driver_for_item(ctx.config, item)
            snap = driver.usable_snapshot(ctx, host, ctx.state.snapshots)
            report[item["name"]] = (driver.rows_lost_vs(ctx, host, snap) if snap
                                    else driver.rows_lost(ctx, host, ctx.backup_dir(host), item))
        ctx.state.loss = report
        lines = [f"{db}.{table}: {n} row(s)" for db, tables in report.items() for table, n in tables.items() if n]
        total = sum(n for tables in report.values() for n in tables.values())
        return Outcome(message=f"{total} row(s) written since the backup would be lost",
                       diff="\n".join(lines) or "no row written since the backup")
