"""The old home of the engine, kept so that existing imports keep working.

The engine lives in deploykit/engine/ (model, runner, results, run state)
and what a step is in deploykit/steps/base.py. Engine names are looked up
lazily: a step module importing Step from here must not pull the engine in
(the engine imports the steps).
"""
from __future__ import annotations

from .steps.base import STEPS, Outcome, Step, register  # noqa: F401

_ENGINE = {"BUILTIN_DIR": "model", "SCOPES": "model", "Phase": "model", "Playbook": "model",
           "StepCall": "model", "load_playbook": "model", "Reporter": "results", "RunResult": "results",
           "StepRecord": "results", "run_playbook": "runner"}


def __getattr__(name: str):
    if name in _ENGINE:
        import importlib

        return getattr(importlib.import_module(f".engine.{_ENGINE[name]}", __package__), name)
    raise AttributeError(name)
