"""The app's processes behind one interface, whatever manages them.

Each manager is a module here with one class (see `base.ProcessManager`);
`MANAGERS` maps the config's `manager` name to it. Adding a process manager
is its module and one line in `MANAGERS`. Steps call `manager_for(proc)` and
never look at which manager it is.
"""
from __future__ import annotations

from .base import ProcessManager
from .commands import Commands
from .supervisor import Supervisor
from .systemd import Systemd

#: config `manager` name -> class (the one registration line per manager)
MANAGERS: dict[str, type[ProcessManager]] = {
    "supervisor": Supervisor,
    "systemd": Systemd,
    "commands": Commands,
}


def manager_for(proc) -> ProcessManager:
    """The manager of one configured process (`ProcessSpec`); unknown names are a config bug."""
    name = getattr(proc, "manager", None) or "commands"  # a spec without a manager: its own commands
    try:
        cls = MANAGERS[name]
    except KeyError:
        raise ValueError(f"process {proc.name}: unknown manager {name!r} (known: {', '.join(MANAGERS)})") from None
    return cls(proc)


__all__ = ["MANAGERS", "ProcessManager", "manager_for"]
