"""Code on the hosts: upload a commit, link shared paths, switch `current`."""
from __future__ import annotations

import posixpath

from .. import layout
from ..errors import DeployError
from ..transport.host import q
from .base import Outcome, Step, register
from ..pyenv import prune_envs
from ..work.code import built_here, link_shared, move_aside, run_install, switch_current, upload_commit
from ..work.rollout import mark


@register
class UploadCode(Step):
    """Upload `git archive` of the commit into releases/<id>/ and write REVISION."""

    name = "upload_code"
    scope = "app"

    def describe(self, ctx, host):
        rev = ctx.revision
        return f"would upload {rev.tag or rev.commit[:10]} into {ctx.release_dir(host)}" if rev else "would upload code"

    def run(self, ctx, host):
        rev, dest = ctx.revision, ctx.release_dir(host)
        if (ctx.state.rollout or {}).get("resumed_from") and built_here(host, dest, rev.commit):
            return Outcome(message=f"{dest}: built by run {ctx.state.rollout['resumed_from']}, kept (resumed)")
        if host.exists(dest):
            raise DeployError(f"{host.name}: {dest} already exists", hint="each release id is new; remove the stray directory")
        size_kb = upload_commit(ctx, host, rev.commit, rev.tag, dest) // 1024
        return Outcome(changed=True, message=f"{rev.tag or rev.commit[:10]} -> {dest} ({size_kb} KB)")


@register
class LinkShared(Step):
    """Link shared paths (media, .env, ...) from shared/ into the release."""

    name = "link_shared"
    scope = "app"

    def run(self, ctx, host):
        linked = link_shared(ctx, host, ctx.release_dir(host))
        return Outcome(changed=bool(linked), message=", ".join(linked) or "nothing to link")


@register
class Install(Step):
    """Run the configured install commands in the release (e.g. pip install)."""

    name = "install"
    scope = "app"

    def run(self, ctx, host):
        count = run_install(ctx, host, ctx.release_dir(host))
        return Outcome(changed=bool(count), message=f"{count} command(s)")


@register
class SwitchCurrent(Step):
    """Point `current` at the new release (symlink + rename: atomic)."""

    name = "switch_current"
    scope = "app"

    def describe(self, ctx, host):
        return f"would switch {layout.current(host)} -> {ctx.release_dir(host)}"

    def run(self, ctx, host):
        if ctx.state.rollout:  # kept in the lock before the switch: a run dying now still puts this host back
            with ctx.lock:
                mark(ctx.state.rollout, host.name, "switched")
            ctx.record_progress()
        previous = switch_current(host, ctx.release_dir(host))
        ctx.state.switched[host.name] = previous
        return Outcome(changed=True, message=f"current -> {ctx.release_id}",
                       diff=f"- {previous}\n+ {ctx.release_dir(host)}")


@register
class DiscardRelease(Step):
    """Move a release that never went live into failed/<id>/ (kept, not deleted)."""

    name = "discard_release"
    scope = "app"
    continue_on_error = True

    def run(self, ctx, host):
        if not ctx.release_id:
            return Outcome(message="no release was started")
        dest = move_aside(ctx, host, ctx.release_id)
        return Outcome(changed=bool(dest), message=f"kept in {dest}" if dest else "nothing uploaded")


@register
class MoveFailedRelease(Step):
    """Move the failed release's code into failed/<id>/code."""

    name = "move_failed_release"
    scope = "app"

    def run(self, ctx, host):
        dest = move_aside(ctx, host, ctx.release_id)
        return Outcome(changed=bool(dest), message=f"-> {dest}" if dest else "already moved")


@register
class RestorePreviousCode(Step):
    """Point `current` back at the previous release (re-extracted from the backup if pruned)."""

    name = "restore_previous_code"
    scope = "app"

    def describe(self, ctx, host):
        prev = ctx.previous["id"] if ctx.previous else None
        return f"would switch current back to {prev}" if prev else "no previous release: would remove current"

    def run(self, ctx, host):
        if not ctx.previous:
            res = host.run(f"test -L {q(layout.current(host))} && rm -f {q(layout.current(host))} && echo removed",
                           check=False)
            return Outcome(changed="removed" in res.stdout, message="no previous release: current removed")
        prev_dir = ctx.release_dir(host, ctx.previous["id"])
        note = ""
        if not host.exists(prev_dir):
            tarball = layout.code_archive(ctx.backup_dir(host))
            if not host.exists(tarball):
                raise DeployError(f"{host.name}: {prev_dir} is gone and {tarball} is missing",
                                  hint="re-release the previous tag with 'invoke release --tag'")
            part = f"{prev_dir}.part-{ctx.run_id}"  # built beside, renamed into place: never a partial release
            host.run(f"rm -rf {q(part)}")
            host.helper("archives", "extract", {"archive": tarball, "dest": part, "links_within": host.deploy_to},
                        track="extract release")
            host.run(f"mv -T {q(part)} {q(prev_dir)}")
            if ctx.config.venv is not None:  # its environment may have been pruned since
                from ..pyenv import ensure_recorded_env

                ensure_recorded_env(ctx, host, prev_dir, ctx.previous)
            note = " (re-extracted from the code backup)"
        before = switch_current(host, prev_dir)
        return Outcome(changed=before != prev_dir, message=f"current -> {ctx.previous['id']}{note}",
                       diff=f"- {before}\n+ {prev_dir}")


@register
class Prune(Step):
    """Remove releases and backups beyond keep_releases/keep_backups (never live or previous)."""

    name = "prune"
    scope = "app"
    continue_on_error = True

    def run(self, ctx, host):
        keep_ids = {ctx.release_id}
        if ctx.previous:
            keep_ids.add(ctx.previous["id"])
        current = host.realpath(layout.current(host))
        if current:
            keep_ids.add(posixpath.basename(current))
        removed = []
        res = host.run(f"ls -1 {q(layout.releases_dir(host))}", check=False, read_only=True)
        releases = sorted(x for x in res.stdout.split() if not x.endswith(".tar") and ".part" not in x)
        for rid in releases[:-ctx.config.keep_releases] if len(releases) > ctx.config.keep_releases else []:
            if rid not in keep_ids:
                host.run(f"rm -rf {q(layout.release_dir(host, rid))}")
                removed.append(rid)
        res = host.run(f"ls -1 {q(layout.backups_dir(host))}", check=False, read_only=True)
        backups = sorted(res.stdout.split())
        keep_backups = {ctx.backup_id} | {r.get("backup_id") for r in [ctx.previous or {}]}
        extra = len(backups) - ctx.config.keep_backups
        for bid in backups[:extra] if extra > 0 else []:
            if bid not in keep_backups:
                host.run(f"rm -rf {q(layout.backup_dir(host, bid))}")
                removed.append(f"backup {bid}")
        removed += [f"env {key}" for key in prune_envs(host)]  # those no release left here links to
        return Outcome(changed=bool(removed), message=", ".join(removed) or "nothing to prune")
