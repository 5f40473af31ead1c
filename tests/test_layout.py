"""On-host paths come from deploykit.layout: one module knows where things live on a host."""
from __future__ import annotations

import ast
import pathlib

from deploykit import layout

ROOT = pathlib.Path(__file__).resolve().parent.parent / "deploykit"
# modules other work moves right now (their literals are listed in the drivers branch's report)
NOT_YET = {"config/models.py"}  # journal_dir's default (.deploykit/journal) is a path on the controller, not a host
NOT_YET_DIRS = {"remote", "drivers"}  # drivers may name their own files; helpers get every path as an argument
ON_HOST = {layout.RELEASES, layout.CURRENT, layout.SHARED, layout.VENVS, layout.BACKUPS, layout.FAILED,
           layout.STATE_DIR, layout.MANIFEST, layout.CODE_ARCHIVE, "run", "journal", "lock", "pending.json",
           "releases.json"}


class Host:
    deploy_to = "/srv/app"

    def path(self, *parts):
        return "/".join((self.deploy_to,) + parts)


def test_the_layout_of_a_host():
    h = Host()
    assert layout.current(h) == "/srv/app/current"
    assert layout.release_dir(h, "r1") == "/srv/app/releases/r1"
    assert layout.backup_dir(h, "b1") == "/srv/app/backups/b1"
    assert layout.manifest(layout.backup_dir(h, "b1")) == "/srv/app/backups/b1/manifest.json"
    assert layout.registry_file(h) == "/srv/app/.deploykit/releases.json"
    assert layout.lock_file(h) == "/srv/app/.deploykit/lock"
    assert layout.pid_file(h, "x") == "/srv/app/.deploykit/run/x.pids"
    assert layout.journal_file(h, "x") == "/srv/app/.deploykit/journal/x.jsonl"
    assert layout.journal_dir(h) == "/srv/app/.deploykit/journal"
    assert layout.pending_rollback(h) == "/srv/app/.deploykit/pending.json"
    assert layout.under_deploy_to(h, "/abs") == "/abs" and layout.under_deploy_to(h, "db") == "/srv/app/db"
    assert [p for p, private in layout.DIRS if private] == [layout.BACKUPS]


def _docstrings(tree) -> set[int]:
    return {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}


def _literal_paths(tree) -> list[tuple[int, str]]:
    """String literals given to X.path(...) or that name an on-host state file (docstrings aside)."""
    docs = _docstrings(tree)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "path":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    hits.append((node.lineno, arg.value))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if any(part in node.value for part in (".deploykit", "releases.json", "pending.json", "manifest.json",
                                                     "code.tar.gz", ".pids")):
                hits.append((node.lineno, node.value))
    return hits


def test_no_on_host_path_literal_outside_layout_and_drivers():
    found = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.as_posix() in NOT_YET | {"layout.py"} or rel.parts[0] in NOT_YET_DIRS:
            continue
        found += [f"{rel}:{line}: {text[:40]!r}" for line, text in _literal_paths(ast.parse(path.read_text()))]
    assert found == [], found
