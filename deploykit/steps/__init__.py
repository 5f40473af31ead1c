"""Built-in steps. `builtin()` imports (and so registers) them all; the engine calls it before loading a playbook.

Importing this package alone loads only steps.base, so that a module may
import Step without pulling in every step (and whatever imports them).
"""
from .base import STEPS, Outcome, Step, register  # noqa: F401


def builtin() -> dict:
    """Every built-in step, by name (imported on first use)."""
    from . import (checks, code, data, django, freeze, health, hooks, migration_safety, preflight,  # noqa: F401
                   pyenv, refresh, registry, replicate, rollback, rollout, router, services, status, transfer, unlock)

    return STEPS
