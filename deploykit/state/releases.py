"""The on-host release registry: `.deploykit/releases.json`.

Each entry: id, commit, tag, tags, created, status (live, superseded, failed,
rolled-back), previous (the release that was live before), backup id, and the
applied migrations per app with their leaves. The primary host's copy is the
reference; every app host keeps the same document.
"""
from __future__ import annotations

import copy

from .. import layout
from .journal import utc_now, utc_stamp

REGISTRY_FILE = layout.REGISTRY_FILE
STATUSES = ("pending", "live", "superseded", "failed", "rolled-back")


def new_release_id(commit: str) -> str:
    """Sortable and names its commit: UTC time + short sha."""
    return f"{utc_stamp()}-{commit[:7]}"


def registry_hosts(ctx) -> list:
    """Every app host (and the primary) keeps the same registry."""
    return [h for h in ctx.hosts if "app" in h.roles or h.is_primary]


class Registry:
    def __init__(self, data: dict | None = None):
        data = data or {}
        self.releases: list[dict] = list(data.get("releases", []))
        # derived names (snapshots, set-aside copies, restores) -> what they are; pruning drops only these
        self.derived: dict[str, dict] = dict(data.get("derived", {}))

    @classmethod
    def load(cls, host) -> "Registry":
        return cls(host.read_json(layout.registry_file(host)))

    def to_dict(self) -> dict:
        return {"version": 1, "releases": self.releases, "derived": self.derived}

    def save(self, hosts) -> None:
        for host in hosts:
            host.write_json(layout.registry_file(host), self.to_dict())

    def copy(self) -> "Registry":
        return Registry(copy.deepcopy(self.to_dict()))

    def get(self, release_id: str) -> dict | None:
        return next((r for r in self.releases if r["id"] == release_id), None)

    def live(self) -> dict | None:
        live = [r for r in self.releases if r["status"] == "live"]
        return live[-1] if live else None

    def add(self, entry: dict) -> dict:
        entry = {"created": utc_now(), "status": "pending", **entry}
        self.releases = [r for r in self.releases if r["id"] != entry["id"]] + [entry]
        return entry

    def update(self, release_id: str, **fields) -> dict:
        entry = self.get(release_id)
        if entry is None:
            raise KeyError(release_id)
        entry.update(fields)
        return entry

    def make_live(self, release_id: str) -> None:
        """`release_id` becomes live; the one that was live is superseded."""
        for r in self.releases:
            if r["status"] == "live" and r["id"] != release_id:
                r["status"] = "superseded"
        self.update(release_id, status="live", live_since=utc_now())
