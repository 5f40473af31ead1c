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
    """(app, migration name, or None for zero) for every app that must go back.

    `current` and `target` map app -> applied migration names in graph order
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


def describe_target(app: str, name: str | None) -> str:
    return f"{app} {name or 'zero'}"
