"""Blue/green traffic: which colour the router serves, switching it, verifying it, switching back.

The run's stage is the router's stage (its lock is the one taken); the two
colours are further stages of the same run (Context `others`). Switching
moves no data.
"""
from __future__ import annotations

from ..errors import DeployError, PreflightFailed
from ..routers import router_for
from ..state.backups import newest_verified
from ..state.releases import Registry
from ..work.health import check_health
from ..work import colour_writes
from ..work.router import serves
from .base import Outcome, Step, register


class AlreadyLive(PreflightFailed):
    """The colour asked for is the one the router serves: nothing to switch."""


NOT_CONFIGURED = "no 'colours:' section: nothing to do"


def _target(ctx) -> str | None:
    """The colour a switch sends the traffic to (None: not a switch, or no colours configured)."""
    return ctx.options.get("to") if ctx.config.colours is not None else None


def _servers(ctx, colour: str) -> list[str]:
    return ctx.config.colours.servers[colour]


@register
class RouterLive(Step):
    """Ask each router host which colour it serves; a switch to the colour already served is refused."""

    name = "router_live"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        if ctx.config.colours is None:  # a playbook run by name on any stage (a dry-run of every procedure)
            return Outcome(message=NOT_CONFIGURED)
        router = router_for(ctx.config)
        before = {h.name: router.live(ctx, h) for h in ctx.hosts}
        target = _target(ctx)
        ctx.state.router.update({"before": before, "target": target})
        first = next(iter(before.values()))
        ctx.previous = {"id": first} if first else None
        shown = ", ".join(f"{name}: {colour or 'no colour'}" for name, colour in before.items())
        if target and all(colour == target for colour in before.values()):
            raise AlreadyLive(f"{target} is already live on the router ({shown}): nothing to switch",
                              hint="'deploykit colours' shows what is live; switch to the other colour instead")
        return Outcome(message=shown)


@register
class ColourHealth(Step):
    """Check the target colour's app hosts are healthy (read-only health checks) before any traffic moves."""

    name = "colour_health"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        target = _target(ctx)
        if target is None:
            return Outcome(message="no colour to switch to")
        notes = []
        for h in [h for h in ctx.stages[target] if "app" in h.roles]:
            live = Registry.load(h).live()
            if live is None:
                raise PreflightFailed(f"{h.name}: colour {target} has no live release",
                                      hint=f"release one first: 'deploykit release --stage {target}'")
            try:
                notes += [f"{h.name}: {n}" for n in check_health(ctx, h, read_only=True)]
            except DeployError as exc:
                raise PreflightFailed(f"colour {target} is not healthy: {exc.one_line()}",
                                      hint=f"fix {target} first ('deploykit status --stage {target}'); the router "
                                           "still serves what it served") from None
        return Outcome(message="; ".join(notes) or "no health check configured")


@register
class RouterCheck(Step):
    """The router's own preflight on each router host (nginx -t, the upstream file's directory, the live command)."""

    name = "router_check"
    scope = "all"
    read_only = True

    def run(self, ctx, host):
        if ctx.config.colours is None:
            return Outcome(message=NOT_CONFIGURED)
        problems = router_for(ctx.config).check(ctx, host)
        if problems:
            raise PreflightFailed("; ".join(problems), hint="fix the router first; nothing was changed")
        return Outcome(message=f"{router_for(ctx.config).kind} router ready")


def _switch(ctx, host, colour: str, **journaled) -> str:
    """Point one router host at a colour's servers; journaled (a switch back says back=True)."""
    servers = _servers(ctx, colour)
    message = router_for(ctx.config).switch(ctx, host, colour, servers)
    ctx.journal.record("router_switch", host=host, colour=colour, servers=servers, **journaled)
    return message


@register
class SwitchRouter(Step):
    """Point the router at the target colour (nginx: upstream file replaced, nginx -t, reload)."""

    name = "switch_router"
    scope = "all"

    def describe(self, ctx, host):
        target = _target(ctx)
        if target is None:
            return "no colour to switch to"
        return f"would send {host.name}'s traffic to {target} ({', '.join(_servers(ctx, target))})"

    def run(self, ctx, host):
        return Outcome(changed=True, message=_switch(ctx, host, _target(ctx)))


@register
class VerifyRouter(Step):
    """Ask the app through the router: it must answer as the target colour does (else the switch is undone)."""

    name = "verify_router"
    scope = "all"

    def run(self, ctx, host):
        spec = ctx.config.colours.router
        if spec.check is None:
            return Outcome(message="not verified: colours.router.check is not set")
        target = _target(ctx)
        return Outcome(message=serves(ctx, host, target, _servers(ctx, target), host.render(spec.check),
                                      spec.check_timeout))


@register
class SwitchBack(Step):
    """Point each router host back at the colour it served before the switch (no data moves)."""

    name = "switch_back"
    scope = "all"

    def run(self, ctx, host):
        router = router_for(ctx.config)
        before = (ctx.state.router.get("before") or {}).get(host.name)
        now = router.live(ctx, host)
        if before is None:
            return Outcome(message=f"served no colour before; left on {now or 'no colour'}")
        if now == before:
            return Outcome(message=f"serves {before}, as before")
        return Outcome(changed=True, message=f"back: {_switch(ctx, host, before, back=True)}")


@register
class ColourReleases(Step):
    """Each colour's live release (its registry) and data age (its newest verified backup)."""

    name = "colour_releases"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        if ctx.config.colours is None:
            return Outcome(message=NOT_CONFIGURED)
        for colour in ctx.config.colours.stages:
            primary = ctx.primary_of(colour)
            doc = {"stage": colour, "host": primary.name, "release": None, "backup": None, "error": None}
            try:
                live = Registry.load(primary).live()
                if live:
                    doc["release"] = {k: live.get(k) for k in ("id", "tag", "commit", "live_since")}
                doc["backup"] = newest_verified(ctx, primary)
            except DeployError as exc:
                doc["error"] = exc.one_line()
            ctx.state.colours[colour] = doc
        return Outcome(message="; ".join(
            f"{c}: {(d['release'] or {}).get('tag') or (d['release'] or {}).get('id') or 'no release'}"
            for c, d in ctx.state.colours.items()))


@register
class WritesLeft(Step):
    """Say what the colour the traffic leaves took since it went live: those writes stay in it (none moves)."""

    name = "writes_left"
    scope = "controller"
    read_only = True

    def run(self, ctx, host):
        if ctx.config.colours is None:
            return Outcome(message=NOT_CONFIGURED)
        target = _target(ctx)
        left = sorted({c for c in (ctx.state.router.get("before") or {}).values() if c and c != target})
        notes = []
        for colour in left:
            got = colour_writes.since_live(ctx, ctx.primary_of(colour), colour)
            ctx.state.router.setdefault("left", {})[colour] = got
            ctx.journal.record("writes_since_live", colour=colour, **(got or {"since": None}))
            notes.append(colour_writes.describe(colour, got))
        return Outcome(message="; ".join(notes) or "no colour left behind")


@register
class RecordLive(Step):
    """Keep the target colour's write counters on its primary right before the router sends it traffic: the
    next switch away from it says what it took while live."""

    name = "record_live"
    scope = "controller"

    def describe(self, ctx, host):
        return f"would record {_target(ctx) or 'the target'}'s write counters on its primary"

    def run(self, ctx, host):
        target = _target(ctx)
        if target is None:
            return Outcome(message=NOT_CONFIGURED)
        colour_writes.record_live(ctx, ctx.primary_of(target), target)
        return Outcome(changed=True, message=f"{target}'s write counters kept: it takes the traffic from now")
