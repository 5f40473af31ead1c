"""Built-in steps; importing this package registers them all."""
from . import checks, code, data, django, health, hooks, preflight, pyenv, registry, rollback, services  # noqa: F401
