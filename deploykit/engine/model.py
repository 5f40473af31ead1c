"""Playbooks: procedures as data, an ordered list of named phases of steps.

Phases are stable hook points: deploykit.yaml's `hooks.before` and
`hooks.after` attach commands to them. A phase's `on_failure` names the
procedure (another playbook) that runs when one of its steps fails; a phase
marked `before_changes: true` runs before anything of the app changes, so a
failure there is a refusal. A phase with `runs_with: NEXT` runs at the same
time as the phase after it (the upload builds beside while the backup reads
the live state): both must have the same on_failure, and the first failure
in either stops the other. A procedure declares how a run it handled ends
(`ends: undone | finished | refused`) and what to tell the operator
(`says:`): exit codes follow these declarations, never the names. A phase
with `stage: ROLE` runs its steps on the stage the run's option `stages`
names for that role (a transfer: `source`, `target`), as if it were the
run's own stage. A phase with `batches: rollout` runs its steps once per
batch of a rolling release, on that batch's hosts only; `batches: back`
once per host to put back on the previous release, one host at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import yamlload
from ..errors import ConfigError

BUILTIN_DIR = Path(__file__).resolve().parent.parent / "playbooks"
SCOPES = ("app", "primary", "all", "controller")
BATCHES = ("rollout", "back")  # a phase run per batch of a rolling release (engine/batches.py)
ENDS = ("undone", "finished", "refused")
# the list of phases; "stages" is the old key, still read in playbooks written before the rename
PHASES_KEYS = ("phases", "stages")


@dataclass
class StepCall:
    step: str
    scope: str | None
    options: dict


@dataclass
class Phase:
    name: str
    steps: list[StepCall]
    on_failure: str | None = None
    before_changes: bool = False  # a failure here changed nothing of the app: a refusal (exit 2)
    runs_with: str | None = None  # the next phase, run at the same time as this one
    stage: str | None = None  # a role (source, target) of the run's option `stages`: the phase's steps run there
    batches: str | None = None  # "rollout": the steps run per batch of ctx.state.rollout; "back": per host to put back


def overlapping(phases: list[Phase]) -> list[list[Phase]]:
    """The phases in run order, those joined by runs_with in one group (a group runs at the same time)."""
    groups: list[list[Phase]] = []
    joined = False
    for ph in phases:
        if joined:
            groups[-1].append(ph)
        else:
            groups.append([ph])
        joined = ph.runs_with is not None
    return groups


@dataclass
class Playbook:
    name: str
    description: str
    phases: list[Phase]
    path: Path
    ends: str | None = None  # as a procedure: "undone" (the run is undone), "finished", "refused"
    says: str = ""  # as a procedure that undoes a run: what the operator is told ({previous} is filled in)


def _playbook_file(name: str, config) -> Path:
    for base in ([config.playbooks_dir] if config.playbooks_dir else []) + [BUILTIN_DIR]:
        path = base / f"{name}.yml"
        if path.is_file():
            return path
    raise ConfigError(f"no playbook named {name!r}",
                      hint=f"add {name}.yml to playbooks_dir or use one of the built-in playbooks")


def load_playbook(name: str, config, _seen: tuple = ()) -> Playbook:
    from ..steps import builtin
    from ..steps.base import WHEN

    STEPS = builtin()  # the built-in steps register themselves on first use

    path = _playbook_file(name, config)
    try:
        raw = yamlload.load(path.read_text())  # YAML 1.2 booleans, no duplicate keys
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML: {exc}".splitlines()[0], hint="fix the playbook's YAML") from None
    key = next((k for k in PHASES_KEYS if isinstance(raw, dict) and k in raw), PHASES_KEYS[0])
    if not isinstance(raw, dict) or not isinstance(raw.get(key), list):
        raise ConfigError(f"{path}: a playbook needs a 'phases:' list", hint="see the built-in playbooks for the shape")
    ends = raw.get("ends")
    if ends is not None and ends not in ENDS:
        raise ConfigError(f"{path}: ends: {ends!r} is not one of {', '.join(ENDS)}",
                          hint="say how a run this procedure handled ends")
    phases: list[Phase] = []
    for i, ph in enumerate(raw[key]):
        where = f"{path}: {key}[{i}]"
        if isinstance(ph, dict) and "include" in ph:
            if ph["include"] in _seen + (name,):
                raise ConfigError(f"{where}: include loop through {ph['include']!r}", hint="remove the loop")
            phases.extend(load_playbook(ph["include"], config, _seen + (name,)).phases)
            continue
        if not isinstance(ph, dict) or "name" not in ph or not isinstance(ph.get("steps"), list):
            raise ConfigError(f"{where}: needs 'name:' and a 'steps:' list", hint="see the built-in playbooks")
        calls = []
        for j, s in enumerate(ph["steps"]):
            if isinstance(s, str):
                s = {"step": s}
            step = s.get("step") if isinstance(s, dict) else None
            if step not in STEPS:
                raise ConfigError(f"{where}.steps[{j}]: unknown step {step!r}",
                                  hint=f"use one of: {', '.join(sorted(STEPS))}")
            scope = s.get("on")
            if scope is not None and scope not in SCOPES and scope not in _roles(config):
                raise ConfigError(f"{where}.steps[{j}].on: unknown scope {scope!r}",
                                  hint=f"use one of {', '.join(SCOPES)} or a role of the stages' hosts "
                                       f"({', '.join(sorted(_roles(config)))})")
            options = s.get("with") or {}
            if options.get("when") is not None and options["when"] not in WHEN:
                raise ConfigError(f"{where}.steps[{j}].with.when: unknown condition {options['when']!r}",
                                  hint=f"use one of {', '.join(sorted(WHEN))}")
            calls.append(StepCall(step, scope, options))
        batches = ph.get("batches")
        if batches is not None and batches not in BATCHES:
            raise ConfigError(f"{where}.batches: unknown value {batches!r}", hint=f"use one of {', '.join(BATCHES)}")
        if batches is not None and ph.get("runs_with"):
            raise ConfigError(f"{where}: a phase run in batches cannot run at the same time as another (runs_with)",
                              hint="remove runs_with or batches")
        phases.append(Phase(ph["name"], calls, ph.get("on_failure", raw.get("on_failure")),
                            bool(ph.get("before_changes", False)), ph.get("runs_with"), ph.get("stage"), batches))
    _check_overlaps(path, phases)
    return Playbook(raw.get("name", name), raw.get("description", ""), phases, path, ends, raw.get("says") or "")


def _roles(config) -> set[str]:
    """The roles a step may be scoped to: the built-in ones and every role a host of a stage has."""
    from ..config.fields import ROLES

    stages = getattr(config, "stages", None) or {}
    return set(ROLES) | {r for hosts in stages.values() for h in hosts for r in (getattr(h, "roles", None) or ())}


def _check_overlaps(path: Path, phases: list[Phase]) -> None:
    """runs_with names the next phase, which fails the same way (one procedure undoes both)."""
    for i, ph in enumerate(phases):
        if ph.runs_with is None:
            continue
        nxt = phases[i + 1] if i + 1 < len(phases) else None
        if nxt is None or nxt.name != ph.runs_with:
            raise ConfigError(f"{path}: phase {ph.name!r}: runs_with: {ph.runs_with!r} is not the next phase",
                              hint=f"name the phase right after {ph.name!r}, or remove runs_with")
        if nxt.stage != ph.stage:
            raise ConfigError(f"{path}: phases {ph.name!r} and {nxt.name!r} run at the same time on different "
                              f"stages ({ph.stage or 'the run'}'s, {nxt.stage or 'the run'}'s)",
                              hint="give both the same stage:, or remove runs_with")
        if (nxt.on_failure, nxt.before_changes) != (ph.on_failure, ph.before_changes):
            raise ConfigError(f"{path}: phases {ph.name!r} and {nxt.name!r} run at the same time but fail "
                              "differently (on_failure, before_changes)",
                              hint="give both the same on_failure and before_changes, or remove runs_with")
