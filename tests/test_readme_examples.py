"""The README's example deploykit.yaml files load: each YAML block of 'Example configurations' (and the
main example of 'deploykit.yaml') goes through load_config, so an example cannot rot when a key changes."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from deploykit.config import load_config

README = Path(__file__).resolve().parent.parent / "README.rst"


def section(text: str, title: str) -> str:
    """The body of the section titled `title` (up to the next title of any level)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines[:-1])
                 if line == title and re.fullmatch(r"([=~^-])\1+", lines[i + 1]) and len(lines[i + 1]) >= len(title))
    body = []
    for i in range(start + 2, len(lines)):
        if i + 1 < len(lines) and lines[i] and re.fullmatch(r"([=~^-])\1{3,}", lines[i + 1]) \
                and not lines[i].startswith(" "):
            break
        body.append(lines[i])
    return "\n".join(body)


def yaml_blocks(text: str) -> list[str]:
    """The contents of each `.. code-block:: yaml` directive, dedented."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == ".. code-block:: yaml":
            i += 1
            body = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                body.append(lines[i])
                i += 1
            blocks.append(textwrap.dedent("\n".join(body)).strip() + "\n")
        else:
            i += 1
    return blocks


TEXT = README.read_text(encoding="utf-8")
EXAMPLES = yaml_blocks(section(TEXT, "Example configurations"))


def load(tmp_path: Path, block: str):
    path = tmp_path / "deploykit.yaml"
    path.write_text(block)
    return load_config(path)


def test_the_readme_has_the_three_examples():
    assert len(EXAMPLES) == 3, EXAMPLES


@pytest.mark.parametrize("i", range(len(EXAMPLES)))
def test_each_example_loads(tmp_path, i):
    assert load(tmp_path, EXAMPLES[i]).stages


def test_the_examples_show_what_they_say(tmp_path):
    sqlite, postgres, several = (load(tmp_path, block) for block in EXAMPLES)
    assert [d.engine for d in sqlite.databases] == ["sqlite"]
    assert [p.manager for p in sqlite.processes] == ["supervisor"]
    assert [d.engine for d in postgres.databases] == ["postgresql"]
    assert {p.manager for p in postgres.processes} == {"systemd"}
    assert [(d.alias, d.engine) for d in several.databases] == [("default", "postgresql"),
                                                               ("analytics", "postgresql")]
    for cfg in (sqlite, postgres, several):  # each health URL and Host header renders on every host
        check = next(c for c in cfg.health if c.kind == "http")
        assert "Host" in check.headers
        for hosts in cfg.stages.values():
            for host in hosts:
                assert "{" not in host.render(check.url) + host.render(check.headers["Host"])
    host = postgres.stage("prod")[0]
    assert host.render(postgres.health[0].headers["Host"]) == "library.example.com"
    assert postgres.health[0].json == {"status": "ok", "db.ok": True}


def test_the_main_example_loads(tmp_path):
    main = yaml_blocks(section(TEXT, "deploykit.yaml"))
    assert main and load(tmp_path, main[0]).stage("prod")


def test_the_readme_renders_as_restructuredtext_without_a_warning():
    """PyPI shows README.rst (twine check --strict in CI refuses it otherwise): a merge or an edit that
    breaks a literal block is caught here, in seconds."""
    import io

    import docutils.core

    warnings = io.StringIO()
    docutils.core.publish_doctree(README.read_text(), settings_overrides={
        "report_level": 2, "halt_level": 5, "warning_stream": warnings})
    assert warnings.getvalue() == ""
