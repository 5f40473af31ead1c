"""The operator's own shell commands for start, stop, restart and status."""
from __future__ import annotations

from .base import ProcessManager


class Commands(ProcessManager):
    """Runs the configured commands as they are (the base class's defaults)."""

    kind = "commands"
