"""Pure logic of a rollback plan: which release to go back to, and each app's
migration target, from the states recorded in the registry.

No I/O and no third-party imports: the optional Django app uses it on a host.
"""
from __future__ import annotations

ROLLBACK_TARGET_STATUSES = ("live", "superseded", "rolled-back")


class PlanError(Exception):
    """A rollback target that cannot be chosen; `hint` says what to do."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def find_target(releases: list[dict], live: dict | None, *, tag: str | None = None, commit: str | None = None,
                release_id: str | None = None, tag_commit: str | None = None) -> dict:
    """The registry entry to roll back to.

    tag: matched against the tags recorded per release, or `tag_commit` (what
    the tag resolves to now); commit: a unique prefix among released commits;
    release_id: exact; none: the release that was live before the live one.
    """
    usable = [r for r in releases if r.get("status") in ROLLBACK_TARGET_STATUSES
              and (live is None or r["id"] != live["id"])]
    if release_id:
        found = [r for r in releases if r["id"] == release_id]
        if not found:
            raise PlanError(f"no release {release_id!r} recorded on this stage",
                            "see the ids with 'invoke releases --host STAGE'")
        if live and found[0]["id"] == live["id"]:
            raise PlanError(f"release {release_id} is the live release", "pick an earlier one")
        if found[0] not in usable:
            raise PlanError(f"release {release_id} has status {found[0].get('status')}: it never went live",
                            "pick a release that was live")
        return found[0]
    if tag:
        found = [r for r in usable if tag in (r.get("tags") or []) or (tag_commit and r.get("commit") == tag_commit)]
        if not found:
            raise PlanError(f"tag {tag!r} was never released on this stage (or is the live release)",
                            "see the released tags with 'invoke releases --host STAGE'")
        return found[-1]
    if commit:
        prefix = commit.lower()
        commits = sorted({r["commit"] for r in releases if (r.get("commit") or "").startswith(prefix)})
        if len(commits) > 1:
            raise PlanError(f"commit prefix {commit!r} is ambiguous: {', '.join(c[:10] for c in commits)}",
                            "give more characters of the sha")
        found = [r for r in usable if commits and r.get("commit") == commits[0]]
        if not found:
            raise PlanError(f"no release of a commit starting with {commit!r} on this stage (or it is the live release)",
                            "see the released commits with 'invoke releases --host STAGE'")
        return found[-1]
    if live and live.get("previous"):
        found = [r for r in releases if r["id"] == live["previous"]]
        if found:
            return found[0]
    if usable:
        return usable[-1]
    raise PlanError("no earlier release to roll back to", "restore a backup with 'invoke restore --backup ID'")


def migration_targets(current: dict[str, list[str]], target: dict[str, list[str]]) -> list[tuple[str, str | None]]:
    """(app, migration name, or None for zero) for every app that must go back, by names only.

    Right for linear histories without squashes; rollbacks use graph_targets
    (a squash is not a name the target recorded). `current` and `target` map
    app -> applied migration names in graph order
    (as recorded from Django's recorder and loader). An app goes back to the
    last migration applied both now and then; migrations the target had that
    are not applied now are left to a forward `migrate` with the target's code.
    """
    out = []
    for app in sorted(set(current) | set(target)):
        now, then = current.get(app, []), target.get(app, [])
        if not [m for m in now if m not in then]:
            continue
        common = [m for m in then if m in now]
        out.append((app, common[-1] if common else None))
    return out


# -- plans that follow Django's migration graph (squashes included) ---------------------
#
# `graph` is what remote/django_state.py's `graph` action reads with the code
# being rolled back from (the newer code: it has the migration files):
#   nodes:    {app: [name, ...]}              every graph node, in graph order
#   replaces: {app: {name: [[app, name], ...]}}  what each squash node replaces
#   applied:  {app: [name, ...]}              the nodes applied now, in graph order
# A recorded state (a registry entry, or a state read earlier) names applied
# migrations under "migrations" (registry) or "applied", plus "replaced" and
# "unmatched" (applied rows that were not graph nodes when recorded). Entries
# written before squashes were understood list everything under "migrations",
# in any order: only the set of names is used here.

Key = tuple  # (app, name)


def recorded_keys(state: dict | None) -> set[Key]:
    """Every (app, name) a recorded state says was applied, graph node or not."""
    out: set[Key] = set()
    for field in ("applied", "migrations", "replaced", "unmatched"):
        for app, names in ((state or {}).get(field) or {}).items():
            out.update((app, n) for n in names)
    return out


def _replaces(graph: dict, app: str, name: str) -> list[Key]:
    return [tuple(k) for k in (graph.get("replaces") or {}).get(app, {}).get(name) or []]


def nodes_applied_in(graph: dict, keys: set[Key]) -> set[Key]:
    """The nodes of `graph` that recorded keys say were applied.

    A node was applied when its name is recorded, or, for a squash, when all
    the migrations it replaces are (Django marks a squash applied exactly then).
    """
    out = set()
    for app, names in (graph.get("nodes") or {}).items():
        for name in names:
            rep = _replaces(graph, app, name)
            if (app, name) in keys or (rep and all(k in keys for k in rep)):
                out.add((app, name))
    return out


def graph_targets(graph: dict, target: dict) -> list[tuple[str, str | None]]:
    """(app, name or None for zero) for every app with nodes applied now that the target did not have.

    The target of an app is its latest node (graph order) applied both now
    and when the target release was live. Migrations the target had that are
    not applied now are left to a forward `migrate` with the target's code.
    """
    then = nodes_applied_in(graph, recorded_keys(target))
    now = {(app, n) for app, names in (graph.get("applied") or {}).items() for n in names}
    nodes = graph.get("nodes") or {}
    out = []
    for app in sorted(set(nodes) | {a for a, _ in now}):
        order = nodes.get(app) or sorted(n for a, n in now if a == app)
        if not [n for n in order if (app, n) in now and (app, n) not in then]:
            continue
        common = [n for n in order if (app, n) in now and (app, n) in then]
        out.append((app, common[-1] if common else None))
    return out


def unknown_target_state(graph: dict, target: dict) -> bool:
    """The target has no recorded migration while the database has some: planning would unapply everything.

    (A release recorded against another database than the app's, or a
    registry entry without migration state: nothing to plan with.)
    """
    return not recorded_keys(target) and any(graph.get("applied") or {})


def applied_then(graph: dict, target: dict) -> set[Key]:
    """Everything applied when the target was live: recorded names, and the graph nodes they make applied."""
    keys = recorded_keys(target)
    return keys | nodes_applied_in(graph, keys)


def forbidden_unapplies(steps: list[dict], graph: dict, target: dict) -> list[str]:
    """Backward steps that would unapply a migration applied when the target was live.

    A rollback only takes back what was added since; unapplying a squash
    unapplies every migration it replaces, so one replacing any migration
    the target had is refused too.
    """
    then = applied_then(graph, target)
    bad = []
    for step in steps:
        if not step.get("backwards"):
            continue
        key = (step["app"], step["name"])
        covered = {key} | {tuple(k) for k in step.get("replaces") or []} | set(_replaces(graph, *key))
        hit = sorted(covered & then)
        if hit:
            replaced = [k for k in hit if k != key]
            why = f" (replaces {', '.join(f'{a}.{n}' for a, n in replaced)})" if replaced else ""
            bad.append(f"{key[0]}.{key[1]}{why}")
    return bad


def unexplained_noop(steps: list[dict], graph: dict, live: dict, target: dict) -> list[str]:
    """When the plan unapplies nothing: the migrations the live release recorded that the target did not.

    Non-empty means the database the helper sees is not the one the
    releases were recorded against (or was changed by hand): a rollback must
    not claim the schema already matches.
    """
    if any(s.get("backwards") for s in steps):
        return []
    live_nodes = nodes_applied_in(graph, recorded_keys(live))
    then_nodes = nodes_applied_in(graph, recorded_keys(target))
    return sorted(f"{a}.{n}" for a, n in live_nodes - then_nodes)


def describe_target(app: str, name: str | None) -> str:
    return f"{app} {name or 'zero'}"
