"""What a step is, and the registry playbooks name steps by.

Steps depend on this module, drivers and work/, never on the engine: the
engine imports the steps (to find them by name), not the other way round.
"""
from __future__ import annotations

from dataclasses import dataclass

STEPS: dict[str, type["Step"]] = {}


def register(cls):
    """Class decorator: make a step available to playbooks by its `name`."""
    STEPS[cls.name] = cls
    return cls


def _workers_around_migrate(ctx, host) -> bool:
    """rollout.workers: around_migrate, and a host that only runs workers."""
    from ..work.rollout import worker_only

    return (ctx.config.rollout is not None and ctx.config.rollout.workers == "around_migrate" and host is not None
            and worker_only(host))


#: conditions a playbook can put on any step (`with: {when: NAME}`)
WHEN = {"workers_around_migrate": _workers_around_migrate}


@dataclass
class Outcome:
    changed: bool = False
    message: str = ""
    diff: str = ""


class Step:
    """One small unit of work. `run` acts; `describe` says what it would do.

    `read_only` steps run for real under --dry-run (checks that change
    nothing); the others are only described, and their Host refuses any
    command that is not read-only anyway.
    """

    name = ""
    scope = "app"
    read_only = False
    continue_on_error = False

    def __init__(self, options: dict | None = None):
        self.options = options or {}

    def applies(self, ctx, host) -> bool:
        return True

    def wanted(self, ctx, host) -> bool:
        """The playbook's `with: {when: CONDITION}` (WHEN), for any step: false skips the host."""
        cond = self.options.get("when")
        return cond is None or WHEN[cond](ctx, host)

    def describe(self, ctx, host) -> str:
        return self.__doc__.strip().splitlines()[0] if self.__doc__ else self.name

    def run(self, ctx, host) -> Outcome | None:
        raise NotImplementedError
