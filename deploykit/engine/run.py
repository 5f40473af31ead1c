"""One run's lifecycle as a context manager: `with Run(...) as run: return run.play(body)`.

Entering builds the Context (config, hosts, journal); `play` handles
signals, finishes a dead run holding the lock first (unless told not to),
runs the body and sums up what the ending line needs; leaving always closes
the run (heartbeat stopped, temp files removed, the lock either freed or
kept with what is left to do), whatever happened.
"""
from __future__ import annotations

from typing import Callable

from . import signals, takeover
from .. import layout
from .context import Context
from ..errors import DeployError, HardStop
from ..state.releases import Registry
from .results import Reporter, RunResult


class Run:
    def __init__(self, config, stage: str, *, command: str, dry_run: bool = False, options: dict | None = None,
                 takeover: bool = True, others: tuple[str, ...] = ()):
        self.ctx = Context(config, stage, command=command, dry_run=dry_run, options=options, others=others)
        self.takeover = takeover
        self.result: RunResult | None = None

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *exc) -> None:
        self.ctx.close()
        if self.result is not None:
            self.result.data["lock_held"] = [h.name for h in self.ctx.locked]

    def play(self, body: Callable[[], RunResult], reporter: Reporter | None = None) -> RunResult:
        """Run `body()` with signals handled and a dead run finished first; return the summed-up result."""
        ctx = self.ctx
        with signals.handled(ctx):
            try:
                finished = takeover.take_over(ctx, reporter) if self.takeover else None
                self.result = finished if finished is not None else body()
            except HardStop:
                self.result = RunResult(ctx.command, ctx.run_id, ok=False, dry_run=ctx.dry_run,
                                        error=DeployError("stopped at once by a second signal",
                                                          hint="run the same command again: it finishes what was left"))
        return summarize(ctx, self.result)


def summarize(ctx, result: RunResult) -> RunResult:
    """What the ending line needs: what is live, the lock, the backup and the journal."""
    result.data.setdefault("release_id", ctx.release_id)
    result.data.setdefault("backup_id", ctx.backup_id)
    result.data.setdefault("previous", ctx.previous["id"] if ctx.previous else None)
    result.data["journal"] = str(ctx.journal.local_path)
    backup_dir = ctx.backup_dir(ctx.primary) if ctx.backup_id else None
    if backup_dir and not ctx.dry_run:
        try:
            if not ctx.primary.exists(layout.manifest(backup_dir)):
                backup_dir = None  # never taken, or incomplete and removed: do not point at it
        except DeployError:
            pass
    result.data["backup_dir"] = backup_dir
    result.data["interrupted"] = ctx.interrupted
    result.data["hard_stopped"] = ctx.hard_stopped
    result.data["lock_held"] = [h.name for h in ctx.locked]
    result.data["outcome"] = dict(ctx.outcome)
    if ctx.state.dead_run:
        result.data.setdefault("dead_run", ctx.state.dead_run)
    if not ctx.dry_run:
        try:
            live = Registry.load(ctx.primary).live()
            result.data["live"] = {"id": live["id"], "tag": live.get("tag")} if live else None
        except DeployError:
            result.data["live"] = "unknown (the primary host did not answer)"
    return result
