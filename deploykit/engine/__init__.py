"""The engine: playbook model and loader, the runner, results, the typed run state and a run's lifecycle.

The engine imports the steps (to find them by name); steps never import the engine.
"""
from .model import Phase, Playbook, StepCall, load_playbook  # noqa: F401
from .results import Reporter, RunResult, StepRecord  # noqa: F401
from .runner import run_playbook  # noqa: F401
