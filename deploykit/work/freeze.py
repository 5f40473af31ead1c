"""The write freeze on one host: the flag and drain (remote helper freeze.py), and in stop_writers mode the writers.

Both modes make the flag `.deploykit/freeze` first: it is what says, on the
host, that writes are frozen and since when, so that unfreeze knows what to
undo whichever run does it (the one that froze, or the next one, finishing a
run that died) and measures the freeze from the flag's own start. In
`maintenance` mode the app's WriteFreezeMiddleware refuses writes from the
flag on and the drain waits for the ones in flight (the ordering argument is
in deploykit/django/middleware.py). In `stop_writers` mode the processes
with `writes: true` are then stopped, the reverse of their configured order
(workers before web, web being listed first), and started again in order.
"""
from __future__ import annotations

import json

from .. import layout
from ..errors import DeployError
from ..processes import manager_for
from ..transport.host import q

MIDDLEWARE = "deploykit.django.middleware.WriteFreezeMiddleware"
HELPER_MARGIN = 30.0  # seconds a freeze helper may take beyond its drain (the flag, the agent's fork)
_READ_MIDDLEWARE = "import json; from django.conf import settings; print(json.dumps(list(settings.MIDDLEWARE)))"


def writers(ctx) -> list:
    """The processes that write, in the order they are stopped (the reverse of processes:)."""
    return [p for p in reversed(ctx.config.processes) if p.writes]


def state(host) -> dict | None:
    """The flag's content while a freeze is on, else None (read-only: a dry-run may ask)."""
    doc = host.helper("freeze", "freeze_state", {"flag": layout.freeze_flag(host)})
    return doc["flag"] if doc["frozen"] else None


def check_middleware(ctx, host) -> None:
    """maintenance mode: the live release's settings have the middleware, else the freeze would freeze nothing."""
    res = ctx.manage(host, f"shell -c {q(_READ_MIDDLEWARE)}", check=False, read_only=True)
    try:
        installed = MIDDLEWARE in json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise DeployError(f"{host.name}: cannot read the app's MIDDLEWARE: {res.tail(1)}",
                          hint="check that 'manage.py shell' runs in the live release") from None
    if not installed:
        raise DeployError(f"{host.name}: freeze mode maintenance, but the live release's MIDDLEWARE lacks "
                          f"{MIDDLEWARE}: writes would not be refused",
                          hint=f"add 'MIDDLEWARE += [\"{MIDDLEWARE}\"]' to the settings and release, "
                               "or set 'freeze: {mode: stop_writers}'")


def freeze(ctx, host) -> dict:
    """Freeze writes on the host; what the helper said (since, created, waited, drain_seconds), plus `stopped`."""
    spec = ctx.config.freeze
    if spec.mode == "maintenance":
        check_middleware(ctx, host)  # before the flag: the check is not part of the freeze
    elif not writers(ctx):
        raise DeployError(f"{host.name}: freeze mode stop_writers, but no process has 'writes: true'",
                          hint="mark the processes that write 'writes: true', or use 'freeze: {mode: maintenance}'")
    info = {"mode": spec.mode, "retry_after": spec.retry_after, "run_id": ctx.run_id}
    ctx.progress(host, f"freezing writes ({spec.mode}): waiting up to {spec.drain_timeout:g} s for writes in flight",
                 kind="freeze")
    doc = host.helper("freeze", "freeze", {"flag": layout.freeze_flag(host), "lock": layout.freeze_lock(host),
                                           "drain_timeout": spec.drain_timeout, "info": info},
                      timeout=spec.drain_timeout + HELPER_MARGIN)
    mode = (doc.get("flag") or {}).get("mode") or spec.mode
    doc["stopped"] = [manager_for(p).stop(host) for p in writers(ctx)] if mode == "stop_writers" else []
    doc["mode"] = mode
    return doc


def unfreeze(ctx, host) -> dict | None:
    """End the freeze on the host (as its flag says it was made); None when no freeze is on."""
    flag = state(host)
    if flag is None:
        return None
    started = []
    if flag.get("mode") == "stop_writers":  # writers first, then the flag: a rerun after a failure starts them
        started = [manager_for(p).start(host) for p in reversed(writers(ctx))]
    doc = host.helper("freeze", "unfreeze", {"flag": layout.freeze_flag(host)})
    doc["started"] = started
    doc["mode"] = flag.get("mode")
    return doc
