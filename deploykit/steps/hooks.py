"""User hooks from deploykit.yaml, run before/after any phase."""
from __future__ import annotations

from .. import layout
from .base import Outcome, Step, register
from ..pyenv import render_app


@register
class Hook(Step):
    """Run a user command in the release directory."""

    name = "hook"
    scope = "app"

    def describe(self, ctx, host):
        return f"hook {self.options.get('label')}: would run {self.options['run']!r}"

    def run(self, ctx, host):
        cwd = ctx.release_dir(host) if ctx.release_id and host.exists(ctx.release_dir(host)) else host.deploy_to
        code = cwd if cwd != host.deploy_to else layout.current(host)  # {python}: that release's environment
        res = host.run(render_app(ctx, host, self.options["run"], code), cwd=cwd, timeout=self.options.get("timeout"))
        return Outcome(changed=True, message=f"{self.options.get('label')}: {res.stdout.strip()[-200:]}")
