"""deploykit.yaml validation (pure logic): every error names the file, the key and the fix."""
from __future__ import annotations

import pytest
import yaml

from deploykit.config import load_config
from deploykit.errors import ConfigError, UnknownStage
from deploykit.playbook import load_playbook

BASE = {
    "deploy_to": "/srv/app",
    "stages": {"prod": {"hosts": [{"address": "deploy@10.0.0.5:2222", "roles": ["app", "primary"]},
                                  "deploy@10.0.0.6"]}},
    "processes": [{"name": "web", "supervisor": {"program": "app-web", "conf": "/etc/sv.conf"}}],
    "databases": {"default": {"engine": "postgresql", "name": "app", "owner": "app", "password_env": "PW"}},
    "media": ["shared/media"],
    "health": [{"http": "http://{hostname}:8000/health/"}],
}


def write(tmp_path, data) -> str:
    path = tmp_path / "deploykit.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_a_full_config_loads(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    hosts = cfg.stage("prod")
    assert [(h.user, h.hostname, h.port, sorted(h.roles)) for h in hosts] == [
        ("deploy", "10.0.0.5", 2222, ["app", "primary"]), ("deploy", "10.0.0.6", 22, ["app"])]
    assert cfg.processes[0].restart == "supervisorctl -c /etc/sv.conf restart app-web"
    assert cfg.data_paths[0].name == "shared-media" and cfg.backup_order == ["databases", "media", "paths"]
    assert hosts[1].render(cfg.health[0].url) == "http://10.0.0.6:8000/health/"
    assert hosts[0].render("echo ${HOME} {deploy_to}") == "echo ${HOME} /srv/app"
    with pytest.raises(UnknownStage, match="unknown stage 'qa'.*known: prod"):
        cfg.stage("qa")


@pytest.mark.parametrize("edit, words", [
    (lambda c: c.pop("deploy_to"), ["deploy_to: missing", "add 'deploy_to:'"]),
    (lambda c: c.update(keep_releases=1), ["keep_releases: must be at least 2"]),
    (lambda c: c.update(colour="red"), ["colour: unknown key"]),
    (lambda c: c["databases"]["default"].update(engine="mysql"), ["databases.default.engine", "unsupported"]),
    (lambda c: c["stages"]["prod"]["hosts"][0].update(roles=["app"]), ["exactly one host with role 'primary'"]),
    (lambda c: c["stages"]["prod"]["hosts"][0].update(address="deploy@@x:y"), ["address", "user@host:port"]),
    (lambda c: c["health"].append({"ping": 1}), ["health[1]", "unknown key"]),
    (lambda c: c.update(backup_order=["media", "logs"]), ["backup_order", "unknown item 'logs'"]),
])
def test_mistakes_are_named(tmp_path, edit, words):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    edit(data)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, data))
    line = info.value.one_line()
    assert str(tmp_path / "deploykit.yaml") in line and "hint:" in line
    for word in words:
        assert word in line


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+, column \d+"):
        load_config(write(tmp_path, "deploy_to: /srv\nstages:\n  prod: [oops\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no configuration file"):
        load_config(tmp_path / "nope.yaml")


def test_builtin_playbooks_load_and_user_playbooks_override(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    release = load_playbook("release", cfg)
    assert [s.name for s in release.stages] == ["check", "backup", "upload", "snapshot", "migrate", "switch", "verify", "finish"]
    assert {s.name: s.on_failure for s in release.stages}["verify"] == "recover"
    books = tmp_path / "books"
    books.mkdir()
    (books / "mine.yml").write_text("stages:\n  - name: first\n    steps: [connect]\n  - include: recover\n")
    cfg = load_config(write(tmp_path, {**BASE, "playbooks_dir": "books"}))
    mine = load_playbook("mine", cfg)
    assert [s.name for s in mine.stages][:2] == ["first", "stop"] and "restore" in [s.name for s in mine.stages]
    (books / "release.yml").write_text("stages:\n  - name: only\n    steps: [connect, no_such_step]\n")
    cfg = load_config(write(tmp_path, {**BASE, "playbooks_dir": "books"}))
    with pytest.raises(ConfigError, match="unknown step 'no_such_step'"):
        load_playbook("release", cfg)
