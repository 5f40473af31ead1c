"""What steps hand on to later steps of the same run, typed (instead of a free dict).

The fields in RESUMABLE are exported to the primary's lock before each phase
and imported by the run that finishes this one if it dies; the others only
live as long as the run.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass
class RunState:
    # handed on to the run that finishes this one (kept in the primary's lock)
    snapshots: dict[str, str] = field(default_factory=dict)  # driver snapshot key -> snapshot name
    migrations: dict = field(default_factory=dict)  # migration state after migrate (applied, leaves, ...)
    plan: dict | None = None  # a rollback's migration plan
    restore: dict | None = None  # {backup_id, label, built: [...]}: what a restore built and swapped
    derived: list[str] = field(default_factory=list)  # names this run recorded in the registry
    router: dict = field(default_factory=dict)  # switch: {target, before: {host: colour}, switched: [host]}
    transfer: dict = field(default_factory=dict)  # transfer: {copied: {...}, migrated: [...]} (steps/transfer)
    refresh: dict = field(default_factory=dict)  # refresh: {plan: {...}, proof: {...}, media: [...]} (work/refresh)
    # for this run only
    backup_items: dict[str, list] = field(default_factory=dict)  # host -> manifest items taken so far
    manifests: dict[str, dict] = field(default_factory=dict)  # host -> verified manifest
    sealed: dict[str, dict] = field(default_factory=dict)  # host -> the manifest seal_backup wrote and verified
    unverified: dict[str, list] = field(default_factory=dict)  # host -> items not read (a snapshot replaces them)
    loss: dict | None = None  # rows a data rollback would lose, per database and table
    switched: dict[str, str | None] = field(default_factory=dict)  # host -> where current pointed before
    env: dict[str, dict] = field(default_factory=dict)  # host -> the release's Python environment record
    dead_run: dict | None = None  # a dead run whose lock this one took over
    snapshot_plan: dict | None = None  # driver snapshot key -> None (take it) or why not (choose_snapshots)
    snapshot_sizes: dict[str, int] = field(default_factory=dict)  # driver snapshot key -> bytes, when chosen
    clone_speed: dict | None = None  # {"bytes", "seconds"} of this run's slowest clone (kept in the registry)
    lock_holders: list[dict] = field(default_factory=list)  # unlock: other runs' locks found (inspect_lock)
    status: dict[str, dict] = field(default_factory=dict)  # status: host -> what the status steps found
    freeze: dict[str, dict] = field(default_factory=dict)  # host -> the freeze this run started there (work/freeze)
    freeze_seconds: float | None = None  # how long writes were frozen (the longest host), for the ending line
    colours: dict = field(default_factory=dict)  # colours: colour -> its live release and data age
    migration_safety: dict | None = None  # the migrations' plan, each operation classified (classify_migrations)
    rollout: dict = field(default_factory=dict)  # a rolling release: batches, each host's state (work/rollout.py)

    RESUMABLE = ("snapshots", "migrations", "plan", "restore", "derived", "router", "transfer", "refresh",
                 "rollout")

    def export(self) -> dict:
        """The resumable fields that hold something (JSON)."""
        return {k: getattr(self, k) for k in self.RESUMABLE if getattr(self, k)}

    def update(self, doc: dict) -> None:
        """Take over what a dead run exported (unknown keys of older versions are ignored)."""
        known = {f.name for f in fields(self)}
        for key, value in (doc or {}).items():
            if key in self.RESUMABLE and key in known and value is not None:
                setattr(self, key, value)

    # -- snapshots: every change goes through here ------------------------------------
    def add_snapshot(self, key: str, name: str) -> None:
        self.snapshots[key] = name

    def use_snapshots_of(self, entry: dict | None) -> None:
        """The snapshots a registry entry recorded become the ones a restore may swap in."""
        self.snapshots = dict((entry or {}).get("snapshots") or {})

    def drop_snapshots(self, names: set[str] | None = None) -> None:
        """Forget the given snapshot names (all without names): swapped in or dropped."""
        self.snapshots = {} if names is None else {k: v for k, v in self.snapshots.items() if v not in names}

    # -- restores ------------------------------------------------------------------------
    def restore_state(self, backup_id: str | None, label: str) -> dict:
        if self.restore is None:
            self.restore = {"backup_id": backup_id, "label": label, "built": []}
        return self.restore
