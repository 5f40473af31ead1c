"""The typed config models (pure logic): defaults, types, examples, and the README's generated key reference."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deploykit.config import yamlload
from deploykit.config import Document, LockSpec, VenvSpec, load_config, parse_config, reference
from deploykit.config.fields import engine_names
from deploykit.config.models import Section
from deploykit.drivers import ENGINES
from deploykit.errors import ConfigError

README = Path(__file__).resolve().parent.parent / "README.rst"
MINIMAL = {"deploy_to": "/srv/app", "stages": {"prod": ["deploy@10.0.0.5"]}}


def test_defaults_of_a_minimal_document(tmp_path):
    doc = Document.model_validate(MINIMAL)
    assert (doc.python, doc.repo, doc.keep_releases, doc.keep_backups, doc.min_free_mb) == (
        "python3", ".", 5, None, 100)
    assert (doc.collectstatic, doc.snapshots, doc.backup_order) == (True, True, ["databases", "media", "paths"])
    assert doc.venv == VenvSpec() and (doc.venv.requirements, doc.venv.pip_args) == ("requirements.txt", [])
    assert (doc.lock.heartbeat, doc.lock.stale_after) == (10.0, 120.0)
    assert (doc.ssh.connect_timeout, doc.ssh.command_timeout, doc.ssh.known_hosts) == (10.0, 3600.0,
                                                                                      "~/.ssh/known_hosts")
    cfg = parse_config(MINIMAL, tmp_path / "deploykit.yaml")
    host, = cfg.stage("prod")
    assert (host.user, host.hostname, host.port, host.roles, host.deploy_to) == (
        "deploy", "10.0.0.5", 22, {"app", "primary"}, "/srv/app")
    assert (cfg.keep_backups, cfg.app, cfg.journal_dir) == (5, tmp_path.name, tmp_path / ".deploykit/journal")


def test_values_are_typed_and_never_coerced():
    doc = Document.model_validate({**MINIMAL, "keep_releases": 3, "lock": {"heartbeat": 2, "stale_after": 6},
                                   "venv": {"pip_args": ["--no-index", 3]}})
    assert isinstance(doc.lock, LockSpec) and doc.lock.heartbeat == 2.0 and isinstance(doc.lock.heartbeat, float)
    assert doc.venv.pip_args == ["--no-index", "3"]
    assert Document.model_validate({**MINIMAL, "venv": False}).venv is None
    assert Document.model_validate({**MINIMAL, "venv": None}).venv == VenvSpec()  # null: the default
    for key, value in [("keep_releases", "3"), ("keep_releases", 3.0), ("collectstatic", "yes"),
                       ("collectstatic", 1), ("min_free_mb", True)]:
        with pytest.raises(Exception, match="expected"):
            Document.model_validate({**MINIMAL, key: value})


@pytest.mark.parametrize("edit, words", [
    ({"deploy_too": "/srv"}, ["deploy_too: unknown key", "did you mean 'deploy_to'?"]),
    ({"ssh": {"conect_timeout": 3}}, ["ssh.conect_timeout: unknown key", "did you mean 'connect_timeout'?"]),
    ({"zzz": 1}, ["zzz: unknown key", "remove it or use one of: app, backup_order"]),
    ({"databases": {"d": {"engine": "sqlite", "path": "db.sqlite3", "owner": "x"}}},
     ["databases.d.owner: unknown key", "engine, name, path"]),
    ({"databases": {"d": {"engine": "postgresql", "name": "a", "owner": "b", "path": "x"}}},
     ["databases.d.path: unknown key"]),
    ({"databases": {"d": {"engine": "oracle", "name": "a"}}}, ["databases.d.engine: unsupported engine 'oracle'"]),
    ({"lock": {"heartbeat": 10, "stale_after": 20}}, ["lock.stale_after: must be at least 3 heartbeats (30 s)"]),
    ({"venv": "yes"}, ["venv: expected false or a mapping, got str 'yes'"]),
    ({"stages": {}}, ["stages: no stage defined"]),
    ({"health": [{"http": "ftp://x"}]}, ["health[0].http: 'ftp://x' is not an http:// or https:// URL"]),
    ({"shared": [".env", "./.env"]}, ["shared: two entries share the path name '.env'"]),
])
def test_refusals_name_the_key_path_and_a_hint(tmp_path, edit, words):
    with pytest.raises(ConfigError) as info:
        parse_config({**MINIMAL, **edit}, tmp_path / "deploykit.yaml")
    line = info.value.one_line()
    assert line.startswith(f"{tmp_path / 'deploykit.yaml'}: ") and "hint:" in line and "\n" not in line, line
    for word in words:
        assert word in line, line


def test_the_engines_are_the_drivers_registry():
    assert engine_names() == sorted(ENGINES)
    assert f"one of {', '.join(sorted(ENGINES))}" in reference.render()


def test_every_key_has_a_description_an_example_and_a_type():
    found = reference.entries()
    keys = [e["key"] for e in found]
    assert len(keys) == len(set(keys))
    for e in found:
        assert e["description"] and e["type"] and e["default"], e
        name = e["key"].rsplit(".", 1)[-1].split("[")[0]
        assert e["example"].startswith(f"{name}: "), e
    assert {"stages.<name>.hosts[].address", "databases.<name>.admin_user", "hooks.after.<name>[].on",
            "venv.pip_args", "lock.stale_after"} <= set(keys)
    assert next(e for e in found if e["key"] == "keep_backups")["default"] == "keep_releases"
    assert next(e for e in found if e["key"] == "deploy_to")["default"] == "required"


def _sections(model=Document, seen=None):
    seen = set() if seen is None else seen
    seen.add(model)
    for info in model.model_fields.values():
        inner, _ = reference._section_in(info.annotation)
        if inner is not None and inner not in seen:
            _sections(inner, seen)
    return seen


@pytest.mark.parametrize("model", sorted(_sections(), key=lambda m: m.__name__), ids=lambda m: m.__name__)
def test_each_example_is_valid_for_its_key(model: type[Section]):
    """Each field's example, read as YAML, passes that field's own validation."""
    for name, info in model.model_fields.items():
        value = yamlload.load(info.examples[0])[info.alias or name]  # YAML 1.2: "on:" is a key, not true
        inner, suffix = reference._section_in(info.annotation)
        if inner is not None and not suffix:
            inner.model_validate(value)


def test_the_readme_key_reference_is_up_to_date():
    text = README.read_text(encoding="utf-8")
    assert text.count(reference.BEGIN) == 1 and text.count(reference.END) == 1
    assert reference.rewrite(text) == text, "run: python -m deploykit.config.reference --write README.rst"


def test_write_rewrites_only_the_marked_section(tmp_path, capsys):
    path = tmp_path / "README.rst"
    path.write_text(f"before\n\n{reference.BEGIN}\nOLD-TEXT\n{reference.END}\n\nafter\n")
    assert reference.main(["--write", str(path)]) == 0
    text = path.read_text()
    assert text.startswith("before\n\n") and text.endswith("\n\nafter\n") and "OLD-TEXT" not in text
    assert "``deploy_to`` (absolute path on the host; default: required)" in text
    assert reference.main([]) == 0 and capsys.readouterr().out.strip() == reference.render()
    path.write_text("no markers\n")
    assert reference.main(["--write", str(path)]) == 1


def test_a_config_file_round_trip(tmp_path):
    path = tmp_path / "deploykit.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "databases": {"lite": {"engine": "sqlite", "path": "{x}/db"}},
                                    "stages": {"prod": {"vars": {"x": "/data"}, "hosts": ["local"]}}}))
    cfg = load_config(path)
    assert (cfg.databases[0].name, cfg.databases[0].admin_user) == ("{x}/db", None)
    assert cfg.stage("prod")[0].render(cfg.databases[0].name) == "/data/db"
