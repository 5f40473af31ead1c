"""The migrations a release would run, each operation classified for a release while the old code serves.

`deploykit plan` runs this step (playbooks/plan.yml); a rolling release can
run it before anything changes and refuse what work.migration_safety
.unsafe_operations finds. Read-only: it asks Django, and reads the registry.
"""
from __future__ import annotations

from ..gitrepo import resolve
from ..work.migration_safety import counts_text, migration_plan, plan_lines, source_text
from .base import Outcome, Step, register


@register
class ClassifyMigrations(Step):
    """Read the plan of the migrations to the revision with Django's executor; classify each operation."""

    name = "classify_migrations"
    scope = "primary"
    read_only = True

    def run(self, ctx, host):
        revision = ctx.revision or resolve(ctx.config.repo, ctx.options.get("tag"))
        plan = migration_plan(ctx, host, revision, python=ctx.options.get("python"))
        ctx.state.migration_safety = plan
        return Outcome(message=f"{counts_text(plan)}; {source_text(plan)}", diff="\n".join(plan_lines(plan)))
