"""Each release's own Python environment (see deploykit/pyenv.py)."""
from __future__ import annotations

from .base import Outcome, Step, register
from ..pyenv import VENVS, describe, ensure_env


@register
class ReleaseEnv(Step):
    """Give the release its Python environment: reused when its requirements are unchanged, else built."""

    name = "release_env"
    scope = "app"

    def applies(self, ctx, host):
        return ctx.config.venv is not None

    def describe(self, ctx, host):
        return (f"would link {ctx.release_dir(host)}/.venv to {host.path(VENVS)}/<key of "
                f"{ctx.config.venv.requirements}>, building it if new")

    def run(self, ctx, host):
        doc = ensure_env(ctx, host, ctx.release_dir(host))
        return Outcome(changed=doc["changed"], message=describe(doc))
