"""The check phase: nothing here changes a host except taking the lock."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from ..drivers import tools_for
from ..errors import DeployError
from ..gitrepo import resolve
from ..transport.host import q
from .. import layout
from ..state import lock as stage_lock
from .base import Outcome, Step, register
from ..state.releases import new_release_id


@register
class ResolveRevision(Step):
    """Resolve the tag to release to a commit (GitPython)."""

    name = "resolve_revision"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        if ctx.revision is None:
            ctx.revision = resolve(ctx.config.repo, ctx.options.get("tag"))
        if ctx.release_id is None:
            ctx.release_id = new_release_id(ctx.revision.commit)
        return Outcome(message=f"{ctx.revision.tag or '-'} = {ctx.revision.commit[:10]} -> release {ctx.release_id}")


@register
class Connect(Step):
    """Connect and check that the app's Python runs."""

    name = "connect"
    scope = "all"
    read_only = True

    def run(self, ctx, host):
        host.connect()
        res = host.run(f"{q(host.python)} -c 'import sys; print(sys.version.split()[0])'", check=False, read_only=True)
        if not res.ok:
            raise DeployError(f"{host.name}: the app's Python {host.python} does not run: {res.tail(1)}",
                              hint="set 'python:' in deploykit.yaml to the app's interpreter on that host")
        return Outcome(message=f"python {res.stdout.strip()}")


@register
class CheckTools(Step):
    """Check that the tools the procedure needs are installed."""

    name = "check_tools"
    scope = "all"
    read_only = True

    def run(self, ctx, host):
        tools = ["tar"]
        if host.is_primary:
            tools += tools_for(ctx.config)
        res = host.run(" ; ".join(f"command -v {q(t)} >/dev/null || echo {q(t)}" for t in tools), check=False,
                       read_only=True)
        missing = res.stdout.split()
        if missing:
            raise DeployError(f"{host.name}: missing tool(s): {', '.join(missing)}",
                              hint="install them on the host (e.g. apt-get install postgresql-client tar)")
        return Outcome(message=", ".join(tools))


@register
class CheckDisk(Step):
    """Check free disk space under deploy_to."""

    name = "check_disk"
    scope = "all"
    read_only = True

    def run(self, ctx, host):
        doc = host.helper("files", "disk_free", {"path": host.deploy_to})
        free_mb = doc["free_bytes"] // (1 << 20)
        if free_mb < ctx.config.min_free_mb:
            raise DeployError(f"{host.name}: only {free_mb} MB free under {host.deploy_to}, need {ctx.config.min_free_mb} MB",
                              hint="free some space (old backups: 'invoke backups'), or lower min_free_mb")
        return Outcome(message=f"{free_mb} MB free")


@register
class AcquireLock(Step):
    """Take the stage lock on every host, the primary first (refused if another run holds it)."""

    name = "acquire_lock"
    scope = "controller"

    def describe(self, ctx, host):
        held = []
        for h in ctx.hosts:
            holder, _ = stage_lock.read_lock(h)
            if holder and holder.get("run_id") != ctx.run_id:
                held.append(f"{h.name}: LOCKED by run {holder.get('run_id')} since {holder.get('since')}")
        if held:
            return "; ".join(held) + ": the real run would be refused or would first finish that run"
        return f"would lock {', '.join(layout.lock_file(h) for h in ctx.hosts)}"

    def run(self, ctx, host):
        info = ctx.holder_info()
        todo = [h for h in ctx.hosts if h not in ctx.locked]
        first = [h for h in todo if h.is_primary]  # the primary carries the progress: locked before the others
        for h in first:
            stage_lock.acquire(h, info)  # on refusal, the abandon playbook frees the others
            ctx.locked_on(h)
        rest = [h for h in todo if not h.is_primary]
        with ThreadPoolExecutor(max_workers=max(1, len(rest))) as pool:  # then the others at once
            futures = [pool.submit(stage_lock.acquire, h, info) for h in rest]
        for h, future in zip(rest, futures):
            if future.exception() is None:
                ctx.locked_on(h)
        refused = next((f.exception() for f in futures if f.exception() is not None), None)
        if refused is not None:
            raise refused
        ctx.record_progress()
        return Outcome(changed=True, message=f"locked for {ctx.run_id} on {', '.join(h.name for h in ctx.locked)}")


@register
class ReleaseLock(Step):
    """Free the stage lock taken by this run."""

    name = "release_lock"
    scope = "all"
    continue_on_error = True

    def run(self, ctx, host):
        with ctx.lock:  # out of the list first: the heartbeat must not mistake our own release for a takeover
            if host not in ctx.locked:
                return Outcome(message="not locked by this run")
            ctx.locked.remove(host)
        stage_lock.release(host, ctx.run_id)
        return Outcome(changed=True, message="unlocked")


@register
class PrepareDirs(Step):
    """Create releases/, shared/, backups/ (0700), failed/ and .deploykit/ (the dirs of deploykit.layout)."""

    name = "prepare_dirs"
    scope = "all"

    def run(self, ctx, host):
        d = host.deploy_to
        paths = [host.path(rel) for rel, _ in layout.DIRS]
        private = [host.path(rel) for rel, private in layout.DIRS if private]
        public = [p for p in paths if p not in private]
        res = host.run(
            f"made=0; for p in {' '.join(q(p) for p in paths)}; do [ -d \"$p\" ] || made=1; done; "
            f"mkdir -p {' '.join(q(p) for p in public)} && "
            f"mkdir -p -m 700 {' '.join(q(p) for p in private)} && chmod 700 {' '.join(q(p) for p in private)} "
            "&& echo $made")
        return Outcome(changed=res.stdout.strip() == "1", message=d)
