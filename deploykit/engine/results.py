"""What a run did, per host and step, kept even when a step fails (Fabric's GroupResult idea)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import DeployError


@dataclass
class StepRecord:
    playbook: str
    phase: str
    step: str
    host: str
    status: str  # ok, changed, failed, skipped, planned
    seconds: float
    message: str = ""
    diff: str = ""
    started: float = 0.0  # epoch seconds: a phase's wall time, gaps between its steps included

    @property
    def stage(self) -> str:
        """The old name of `phase`."""
        return self.phase


@dataclass
class RunResult:
    playbook: str
    run_id: str
    ok: bool = True
    dry_run: bool = False
    records: list[StepRecord] = field(default_factory=list)
    error: DeployError | None = None
    failed_phase: str | None = None
    refused: bool = False  # it failed before anything of the app changed (a before_changes phase)
    recovery: "RunResult | None" = None
    ends: str | None = None  # what the playbook declares, as a procedure (see engine.model)
    says: str = ""
    data: dict = field(default_factory=dict)

    @property
    def recovered(self) -> bool:
        return self.recovery is not None and self.recovery.ok


Reporter = Callable[[StepRecord], None]
