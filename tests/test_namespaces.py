"""The runtime package stands alone: no test rig, no demo, no developer task in a user's namespace.

`deploykit` is what users install and import; the test rig (`deploykit_testing`,
with the sample project) and the demo (`deploykit_demo`) are top-level packages
of the checkout. A user's tasks.py (`from deploykit.tasks import ns`) and the
`deploykit` program offer operator tasks only; the repository's own tasks.py
adds `demo` and `test` (which may run apt-get as root).
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ROOT / "deploykit"
APART = ("deploykit_testing", "deploykit_demo")
OPERATOR_TASKS = {"release", "rollback", "backup", "backups", "restore", "releases", "check", "unlock", "init",
                  "status", "log", "switch", "colours", "transfer", "refresh", "plan"}
DEVELOPER_TASKS = {"demo", "test", "bench", "faults"}


def _imported_modules(path: Path) -> list[str]:
    """Absolute names of the modules a file imports (relative ones resolved against its package)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


def _listed_tasks(out: str) -> set[str]:
    """Task names of `invoke --list` output (the indented first words after the header)."""
    tasks = set()
    for line in out.splitlines():
        if line.startswith("  ") and not line.startswith("   "):
            tasks.add(line.split()[0])
    return tasks


def _clean_env() -> dict:
    """The environment without PYTHONPATH: a user's shell does not have the checkout on it."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_the_runtime_never_imports_the_rig_or_the_demo():
    """No file under deploykit/ imports deploykit_testing or deploykit_demo (nor an old deploykit.testing/demo)."""
    files = sorted(RUNTIME.rglob("*.py"))
    assert len(files) > 20
    bad = []
    for path in files:
        for name in _imported_modules(path):
            root = name.split(".")[0]
            if root in APART or name.startswith(("deploykit.testing", "deploykit.demo")):
                bad.append(f"{path.relative_to(ROOT)}: {name}")
    assert not bad, bad


def test_the_rig_and_the_demo_are_not_in_the_deploykit_namespace():
    assert not (RUNTIME / "testing").exists() and not (RUNTIME / "demo").exists()
    code = (
        "import importlib, sys\n"
        "import deploykit.api, deploykit.cli, deploykit.tasks\n"
        "for gone in ('deploykit.testing', 'deploykit.demo'):\n"
        "    try:\n"
        "        importlib.import_module(gone)\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
        "    else:\n"
        "        sys.exit(gone + ' is importable')\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {APART!r})\n"
        "sys.exit(f'loaded {loaded}' if loaded else 0)\n"
    )
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                        cwd="/", env=_clean_env())
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_a_users_tasks_list_operator_tasks_only(tmp_path):
    """A project whose tasks.py imports deploykit's ns: `invoke --list` shows no demo, no test."""
    (tmp_path / "tasks.py").write_text("from deploykit.tasks import ns\n")
    cp = subprocess.run([sys.executable, "-m", "invoke", "--list"], capture_output=True, text=True,
                        timeout=60, cwd=tmp_path, env=_clean_env())
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert _listed_tasks(cp.stdout) == OPERATOR_TASKS, cp.stdout
    cp = subprocess.run([sys.executable, "-m", "invoke", "demo"], capture_output=True, text=True,
                        timeout=60, cwd=tmp_path, env=_clean_env())
    assert cp.returncode != 0 and "No idea what 'demo' is" in cp.stderr, cp.stdout + cp.stderr


def test_the_deploykit_program_offers_operator_tasks_only(tmp_path):
    cp = subprocess.run([sys.executable, "-m", "deploykit.cli", "--list"], capture_output=True, text=True,
                        timeout=60, cwd=tmp_path, env=_clean_env())
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert _listed_tasks(cp.stdout) == OPERATOR_TASKS, cp.stdout
    for name in ("demo", "test"):
        cp = subprocess.run([sys.executable, "-m", "deploykit.cli", name], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, env=_clean_env())
        assert cp.returncode != 0 and f"No idea what '{name}' is" in cp.stderr, cp.stdout + cp.stderr


def test_the_checkout_offers_the_developer_tasks_too():
    cp = subprocess.run([sys.executable, "-m", "invoke", "--list"], capture_output=True, text=True,
                        timeout=60, cwd=ROOT, env=_clean_env())
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert _listed_tasks(cp.stdout) == OPERATOR_TASKS | DEVELOPER_TASKS, cp.stdout


def _readme_commands() -> list[str]:
    lines = (ROOT / "README.rst").read_text().splitlines()
    start = lines.index("Quickstart")
    end = next(i for i in range(start + 2, len(lines)) if lines[i].startswith("===="))
    return [line.strip() for line in lines[start:end - 1] if line.startswith("    ") and line.strip()]


def test_the_readme_quickstart_commands_are_the_ones_ci_runs():
    """README's two commands stay `.venv/bin/invoke demo` / `.venv/bin/invoke test`; .ci/run runs the latter."""
    commands = _readme_commands()
    assert commands[0].endswith("&& .venv/bin/invoke demo"), commands
    assert commands[1] == ".venv/bin/invoke test", commands
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == commands[1], ci[-1]


@pytest.mark.skipif(os.environ.get("DEPLOYKIT_NESTED_TEST") == "1", reason="already inside `invoke test`")
def test_invoke_test_runs_the_checkouts_suite():
    """`invoke test` from the checkout finds tests/ (a pure test selected, so it is quick and not recursive)."""
    env = {**_clean_env(), "DEPLOYKIT_NESTED_TEST": "1"}
    cp = subprocess.run([sys.executable, "-m", "invoke", "test", "-k", "test_identifiers_and_literals_are_quoted"],
                        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-3000:]
    assert "1 passed" in cp.stdout, cp.stdout[-3000:]


@pytest.mark.parametrize("task", sorted(OPERATOR_TASKS))
def test_every_option_of_every_task_says_what_it_does_and_json_and_stage_are_everywhere(task):
    """`deploykit --help TASK`, as the console script runs it: no option without its help line."""
    cp = subprocess.run([sys.executable, "-c", "import sys; from deploykit.cli import main; "
                         f"sys.argv = ['deploykit', '--help', {task!r}]; main()"],
                        capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    options = cp.stdout.split("Options:", 1)[1].splitlines()
    flags = [line.split()[0] for line in options if line.startswith("  --")]
    assert {"--json", "--stage=STRING", "--host=STRING"} <= set(flags)
    bare = [line.strip() for line in options if line.startswith("  --") and len(line.split()) == 1]
    assert bare == [], f"options of {task} without help: {bare}"
