"""deploykit.yaml validation (pure logic): every error names the file, the key and the fix."""
from __future__ import annotations

import pytest
import yaml

from deploykit.config import load_config
from deploykit.errors import ConfigError, UnknownStage
from deploykit.engine.model import load_playbook

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
    assert [s.name for s in release.phases] == ["check", "backup", "upload", "snapshot", "migrate", "switch", "verify", "finish"]
    assert {s.name: s.on_failure for s in release.phases}["verify"] == "recover"
    books = tmp_path / "books"
    books.mkdir()
    (books / "mine.yml").write_text("stages:\n  - name: first\n    steps: [connect]\n  - include: recover\n")
    cfg = load_config(write(tmp_path, {**BASE, "playbooks_dir": "books"}))
    mine = load_playbook("mine", cfg)
    assert [s.name for s in mine.phases][:2] == ["first", "stop"] and "restore" in [s.name for s in mine.phases]
    (books / "release.yml").write_text("stages:\n  - name: only\n    steps: [connect, no_such_step]\n")
    cfg = load_config(write(tmp_path, {**BASE, "playbooks_dir": "books"}))
    with pytest.raises(ConfigError, match="unknown step 'no_such_step'"):
        load_playbook("release", cfg)


# -- every mistake is refused at load time, in one line -------------------------------------------

def _host(data, i):
    return data["stages"]["prod"]["hosts"][i]


def _set_host(i, **values):
    def edit(c):
        hosts = c["stages"]["prod"]["hosts"]
        if isinstance(hosts[i], str):
            hosts[i] = {"address": hosts[i]}
        hosts[i].update(values)
    return edit


def _hooks(hooks):
    return lambda c: c.update(hooks=hooks)


CYRILLIC_40 = "б" * 40  # 40 characters, 80 bytes in UTF-8

MISTAKES = {
    # 1. YAML 1.2 booleans: yes/no/on/off are text, not booleans
    "yes-is-not-a-boolean": (lambda c: c.update(collectstatic="yes"), ["collectstatic", "expected bool, got str 'yes'"]),
    # 3. hooks
    "hook-unknown-phase": (_hooks({"before": {"migrat": ["./manage.py clearsessions"]}}),
                           ["hooks.before.migrat", "no playbook has a phase 'migrat'", "migrate"]),
    "hook-unknown-role": (_hooks({"after": {"verify": [{"run": "true", "on": "primry"}]}}),
                          ["hooks.after.verify[0].on", "'primry'", "'all'"]),
    "hook-timeout-text": (_hooks({"after": {"verify": [{"run": "true", "timeout": "soon"}]}}),
                          ["hooks.after.verify[0].timeout", "expected int or float"]),
    "hook-timeout-zero": (_hooks({"after": {"verify": [{"run": "true", "timeout": 0}]}}),
                          ["hooks.after.verify[0].timeout", "more than 0"]),
    "hook-run-null": (_hooks({"after": {"verify": [{"run": None, "on": "all"}]}}), ["hooks.after.verify[0].run", "missing"]),
    "hook-extra-key": (_hooks({"after": {"verify": [{"run": "true", "as": "root"}]}}),
                       ["hooks.after.verify[0].as", "unknown key"]),
    # 4. hosts
    "primary-without-app": (_set_host(0, roles=["primary"]), ["stages.prod.hosts[0].roles", "lacks the 'app' role"]),
    "same-host-twice": (_set_host(1, address="other@10.0.0.5:2222", name="again"),
                        ["stages.prod.hosts[1]", "same host and deploy_to as hosts[0]"]),
    "same-local-twice": (lambda c: c["stages"].update(demo={"hosts": ["local", {"address": "local", "name": "l2",
                                                                              "roles": ["app"]}]}),
                         ["stages.demo.hosts[1]", "same host and deploy_to"]),
    "ssh-port-out-of-range": (_set_host(1, address="deploy@10.0.0.6:70000"), ["stages.prod.hosts[1].address", "70000"]),
    "role-not-text": (_set_host(1, roles=[["app"]]), ["stages.prod.hosts[1].roles", "unknown role"]),
    "role-typo": (_set_host(1, roles=["app", "wroker"]),
                  ["stages.prod.hosts[1].roles", "unknown role 'wroker'", "did you mean 'worker'?", "'roles:'"]),
    "role-undeclared": (_set_host(1, roles=["app", "cron"]),
                        ["stages.prod.hosts[1].roles", "unknown role 'cron'", "declare your own in 'roles:'"]),
    "process-role-undeclared": (lambda c: c.update(roles=["cron"], processes=[
        {"name": "beat", "on": "crons", "start": "true", "stop": "true", "restart": "true", "status": "true"}]),
        ["processes[0].on", "unknown role 'crons'", "did you mean 'cron'?"]),
    # 5. ~ in paths on the host
    "tilde-deploy_to": (lambda c: c.update(deploy_to="~/app"), ["deploy_to", "'~/app'", "absolute path"]),
    "tilde-stage-deploy_to": (lambda c: c["stages"]["prod"].update(deploy_to="~/app"), ["stages.prod.deploy_to", "'~'"]),
    "tilde-host-deploy_to": (_set_host(1, deploy_to="~deploy/app"), ["stages.prod.hosts[1].deploy_to", "'~'"]),
    "tilde-python": (_set_host(0, python="~/venv/bin/python"), ["stages.prod.hosts[0].python", "'~'"]),
    "tilde-media": (lambda c: c.update(media=["~/media"]), ["media[0].path", "'~'"]),
    "tilde-paths": (lambda c: c.update(paths=[{"name": "up", "path": "~/uploads"}], backup_order=list(
        ("databases", "media", "paths"))), ["paths[0].path", "'~'"]),
    "tilde-sqlite": (lambda c: c["databases"].update(lite={"engine": "sqlite", "path": "~/db.sqlite3"}),
                     ["databases.lite.path", "'~'"]),
    "tilde-passfile": (lambda c: c["databases"]["default"].update(passfile="~/.pgpass"),
                       ["databases.default.passfile", "'~'"]),
    "tilde-through-a-var": (lambda c: (c.update(media=["{home}/media"]),
                                       c["stages"]["prod"].update(vars={"home": "~deploy"})),
                            ["media[0].path", "'~deploy/media' on host 10.0.0.5"]),
    "relative-deploy_to": (lambda c: c.update(deploy_to="srv/app"), ["deploy_to", "must be an absolute path"]),
    # 6. PostgreSQL identifiers
    "pg-name-80-bytes": (lambda c: c["databases"]["default"].update(name=CYRILLIC_40),
                         ["databases.default.name", "80 bytes", "63"]),
    "pg-owner-64-bytes": (lambda c: c["databases"]["default"].update(owner="o" * 64), ["databases.default.owner", "64 bytes"]),
    "pg-admin-64-bytes": (lambda c: c["databases"]["default"].update(admin_user="a" * 64),
                          ["databases.default.admin_user", "64 bytes"]),
    "pg-name-nul": (lambda c: c["databases"]["default"].update(name="app\0x"), ["databases.default.name", "NUL"]),
    # 7. backup_order
    "order-lacks-databases": (lambda c: c.update(backup_order=["media"]), ["backup_order", "'databases' is configured"]),
    "order-lacks-media": (lambda c: c.update(backup_order=["databases", "paths"]), ["backup_order", "'media' is configured"]),
    "order-lacks-paths": (lambda c: c.update(paths=["shared/uploads"], backup_order=["databases", "media"]),
                          ["backup_order", "'paths' is configured"]),
    "order-twice": (lambda c: c.update(backup_order=["databases", "media", "media"]), ["backup_order", "listed twice"]),
    # 8. processes
    "supervisor-null": (lambda c: c["processes"][0].update(supervisor=None), ["processes[0].supervisor", "got null"]),
    "systemd-null": (lambda c: c.update(processes=[{"name": "w", "systemd": None}]), ["processes[0].systemd", "got null"]),
    "two-managers": (lambda c: c["processes"][0].update(systemd="web.service"),
                     ["processes[0]", "exactly one of", "supervisor, systemd"]),
    "supervisor-and-restart": (lambda c: c["processes"][0].update(restart="kill -HUP 1"), ["processes[0]", "exactly one of"]),
    "no-manager": (lambda c: c.update(processes=[{"name": "w"}]), ["processes[0]", "found: none"]),
    "start-without-stop": (lambda c: c.update(processes=[{"name": "w", "start": "./run"}]), ["processes[0].stop", "missing"]),
    "process-twice": (lambda c: c["processes"].append({"name": "web", "systemd": "web.service"}),
                      ["processes", "'web'"]),
    # 9. templates
    "port-is-not-ssh-port": (lambda c: c.update(health=[{"http": "http://{hostname}:{port}/health/"}]),
                             ["health[0].http", "unknown template {port}", "{ssh_port}"]),
    "var-on-one-host-only": (lambda c: (c.update(health=[{"http": "http://{web}/health/"}]),
                                        _set_host(0, vars={"web": "10.0.0.5:8000"})(c)),
                             ["health[0].http", "unknown template {web} for host 10.0.0.6", "deploy_to"]),
    "template-in-hook": (_hooks({"before": {"migrate": [{"run": "echo {relase}", "on": "primary"}]}}),
                         ["hooks.before.migrate[0].run", "{relase}"]),
    "template-in-install": (lambda c: c.update(install=["pip install -r {reqs}"]), ["install[0]", "{reqs}"]),
    "template-in-conf": (lambda c: c["processes"][0]["supervisor"].update(conf="{supervisor_conf}"),
                         ["processes[0].supervisor.conf", "{supervisor_conf}"]),
    "template-in-start": (lambda c: c.update(processes=[{"name": "w", "start": "{bin}/start", "stop": "true"}]),
                          ["processes[0].start", "{bin}"]),
    "template-in-health-command": (lambda c: c["health"].append({"command": "curl {url}"}), ["health[1].command", "{url}"]),
    "template-in-media": (lambda c: c.update(media=["{media_root}"]), ["media[0].path", "{media_root}"]),
    "template-in-passfile": (lambda c: c["databases"]["default"].update(passfile="{home}/.pgpass"),
                             ["databases.default.passfile", "{home}"]),
    "template-in-sqlite": (lambda c: c["databases"].update(lite={"engine": "sqlite", "name": "{data}/db"}),
                           ["databases.lite.name", "{data}"]),
    "var-null": (_set_host(0, vars={"web": None}), ["stages.prod.hosts[0].vars.web", "got null"]),
    "var-name-unusable": (_set_host(0, vars={"web-port": 8000}), ["stages.prod.hosts[0].vars.web-port", "var name"]),
    # 10. shapes that used to crash
    "stage-name-not-text": (lambda c: c["stages"].update({3: {"hosts": ["local"]}}), ["stages.3", "stage name"]),
    "unknown-keys-of-mixed-types": (lambda c: c.update({1: "a", "zz": "b"}), ["unknown key"]),
    "install-null": (lambda c: c.update(install=[None]), ["install[0]", "got null"]),
    "health-two-checks": (lambda c: c["health"][0].update(manage="check"), ["health[0]", "several checks"]),
    "keep-backups-zero": (lambda c: c.update(keep_backups=0), ["keep_backups", "at least 1"]),
    "timeout-nan": (lambda c: c.update(ssh={"connect_timeout": float("nan")}), ["ssh.connect_timeout", "more than 0"]),
    "shared-outside": (lambda c: c.update(shared=["../etc"]), ["shared[0]", "inside shared/"]),
    # 11. http health checks for real apps
    "headers-not-a-mapping": (lambda c: c["health"][0].update(headers="Host: x"),
                              ["health[0].headers", "expected dict"]),
    "header-name": (lambda c: c["health"][0].update(headers={"Bad Header": "x"}),
                    ["health[0].headers.Bad Header", "not a valid header name"]),
    "header-twice": (lambda c: c["health"][0].update(headers={"Host": "a", "host": "b"}),
                     ["health[0].headers.host", "given twice", "ignore case"]),
    "header-line-break": (lambda c: c["health"][0].update(headers={"Host": "a\r\nX-Evil: 1"}),
                          ["health[0].headers.Host", "line break"]),
    "header-not-text": (lambda c: c["health"][0].update(headers={"Host": ["a"]}),
                        ["health[0].headers.Host", "expected text"]),
    "header-template": (lambda c: c["health"][0].update(headers={"Host": "{site}"}),
                        ["health[0].headers.Host", "unknown template {site}"]),
    "json-not-a-mapping": (lambda c: c["health"][0].update(json="status"), ["health[0].json", "expected dict"]),
    "json-empty": (lambda c: c["health"][0].update(json={}), ["health[0].json", "empty", "dotted path"]),
    "json-bad-path": (lambda c: c["health"][0].update(json={"db..ok": True}), ["health[0].json.db..ok", "dotted path"]),
    "follow-redirects-text": (lambda c: c["health"][0].update(follow_redirects="yes"),
                              ["health[0].follow_redirects", "expected bool"]),
    "follow-a-redirect-status": (lambda c: c["health"][0].update(follow_redirects=True, expect_status=302),
                                 ["health[0].follow_redirects", "redirect"]),
    "fail-after-zero": (lambda c: c["health"][0].update(fail_after=0), ["health[0].fail_after", "at least 1"]),
    "fail-after-float": (lambda c: c["health"][0].update(fail_after=2.5), ["health[0].fail_after", "expected int"]),
    "headers-on-manage": (lambda c: c["health"].append({"manage": "check", "headers": {"Host": "x"}}),
                          ["health[1].headers", "only applies to 'http:'"]),
    "json-on-command": (lambda c: c["health"].append({"command": "true", "json": {"a": 1}}),
                        ["health[1].json", "only applies to 'http:'"]),
    "fail-after-on-manage": (lambda c: c["health"].append({"manage": "check", "fail_after": 2}),
                             ["health[1].fail_after", "only applies to 'http:'"]),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_each_mistake_is_one_line_naming_file_key_and_fix(tmp_path, name):
    edit, words = MISTAKES[name]
    data = yaml.safe_load(yaml.safe_dump(BASE))
    edit(data)
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, yaml.safe_dump(data, sort_keys=False)))
    line = info.value.one_line()
    assert "\n" not in line
    assert str(tmp_path / "deploykit.yaml") in line and "hint:" in line, line
    for word in words:
        assert word in line, line


BASE_TEXT = """\
deploy_to: /srv/app
stages:
  prod:
    hosts:
      - {address: deploy@10.0.0.5, roles: [app, primary]}
      - address: deploy@10.0.0.6
        roles: [app]
databases:
  default: {engine: postgresql, name: app, owner: app}
"""


@pytest.mark.parametrize("text, words", [
    (BASE_TEXT + "stages:\n  qa: [local]\n", ["deploykit.yaml: stages: duplicate key 'stages' at line 10 (first at line 2)"]),
    (BASE_TEXT.replace("        roles: [app]\n", "        roles: [app]\n        roles: [db]\n"),
     ["stages.prod.hosts[1].roles: duplicate key 'roles' at line 8 (first at line 7)"]),
    (BASE_TEXT + "hooks:\n  after:\n    verify: [true]\n    verify: [false]\n", ["hooks.after.verify: duplicate key"]),
    (BASE_TEXT + "hooks:\n  after: {verify: [{run: a, on: all, on: app}]}\n", ["hooks.after.verify[0].on: duplicate key"]),
])
def test_duplicate_keys_name_the_key_and_both_lines(tmp_path, text, words):
    load_config(write(tmp_path, BASE_TEXT))  # the base is fine
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    line = info.value.one_line()
    assert str(tmp_path) in line and "hint:" in line, line
    for word in words:
        assert word in line, line


def test_readme_hooks_with_on_and_timeout_load(tmp_path):
    text = BASE_TEXT + (
        "hooks:\n"
        "  before: {migrate: [\"{python} manage.py clearsessions\"]}\n"
        "  after: {verify: [{run: \"curl -fsS https://example.org/ping\", on: primary},\n"
        "                   {run: ./bin/warm-cache, on: all, timeout: 90}]}\n")
    cfg = load_config(write(tmp_path, text))
    assert cfg.hooks["before"]["migrate"] == [{"run": "{python} manage.py clearsessions", "on": "app", "timeout": None}]
    assert cfg.hooks["after"]["verify"] == [
        {"run": "curl -fsS https://example.org/ping", "on": "primary", "timeout": None},
        {"run": "./bin/warm-cache", "on": "all", "timeout": 90.0}]


def test_yaml_1_2_scalars(tmp_path):
    text = BASE_TEXT.replace("deploy_to: /srv/app\n", "deploy_to: /srv/app\ncollectstatic: false\n").replace(
        "roles: [app]\n", "roles: [app]\n        vars: {a: yes, b: no, c: on, d: off, e: 1:30, f: 2024-01-31, g: 0777}\n")
    cfg = load_config(write(tmp_path, text))
    assert cfg.collectstatic is False
    assert cfg.stage("prod")[1].vars == {"a": "yes", "b": "no", "c": "on", "d": "off", "e": "1:30",
                                         "f": "2024-01-31", "g": 777}


def test_the_readme_example_loads(tmp_path):
    """The deploykit.yaml shown in the README (its hook says 'on: primary') is a valid config."""
    import textwrap
    from pathlib import Path

    lines = (Path(__file__).parent.parent / "README.rst").read_text().splitlines()
    blocks = []
    for i, line in enumerate(lines):
        if line.strip() == ".. code-block:: yaml":
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and not nxt.startswith(" "):
                    break
                body.append(nxt)
            blocks.append(textwrap.dedent("\n".join(body)))
    example = next(b for b in blocks if "\nstages:" in "\n" + b)
    cfg = load_config(write(tmp_path, example))
    assert cfg.hooks["after"]["verify"][0]["on"] == "primary"
    assert {h.render(cfg.health[0].url) for h in cfg.stage("prod")} == {
        "http://10.0.0.5:8000/health/", "http://10.0.0.6:8001/health/"}


def test_process_specs_say_how_each_process_is_managed(tmp_path):
    data = {**BASE, "processes": [
        {"name": "web", "supervisor": {"program": "app-web", "conf": "/etc/sv.conf"}},
        {"name": "bare", "supervisor": {}},
        {"name": "worker", "systemd": "app-worker.service", "writes": False},
        {"name": "beat", "start": "./bin/beat start", "stop": "./bin/beat stop"}]}
    web, bare, worker, beat = load_config(write(tmp_path, data)).processes
    assert (web.manager, web.program, web.conf, web.ctl, web.unit) == ("supervisor", "app-web", "/etc/sv.conf",
                                                                       "supervisorctl", None)
    assert web.status == "supervisorctl -c /etc/sv.conf status app-web"
    assert (bare.program, bare.conf, bare.start) == ("bare", None, "supervisorctl start bare")
    assert (worker.manager, worker.unit, worker.status, worker.writes) == (
        "systemd", "app-worker.service", "systemctl is-active app-worker.service", False)
    assert (beat.manager, beat.restart, beat.status, beat.program) == (
        "commands", "./bin/beat stop && ./bin/beat start", "true", None)


def test_a_systemd_process_may_name_its_manager_and_systemctl(tmp_path):
    """systemd: UNIT, or {unit, user, systemctl}: what tests/test_systemd.py drives through processes/."""
    from deploykit.processes import manager_for

    data = {**BASE, "processes": [
        {"name": "web", "systemd": {"unit": "app-web.service", "user": True,
                                    "systemctl": "env XDG_RUNTIME_DIR=/run/user/1000 systemctl"}},
        {"name": "worker", "systemd": {"unit": "app-worker.service"}}]}
    web, worker = load_config(write(tmp_path, data)).processes
    assert (web.manager, web.unit, web.user) == ("systemd", "app-web.service", True)
    assert web.restart == "env XDG_RUNTIME_DIR=/run/user/1000 systemctl --user restart app-web.service"
    assert manager_for(web).command("restart") == web.restart
    assert manager_for(web).command("status") == web.status
    assert (worker.user, worker.status) == (False, "systemctl is-active app-worker.service")
    for bad, words in (({"user": True}, ["processes[0].systemd", "unit"]),
                       ({"unit": "a.service", "usr": True}, ["systemd.usr", "unknown key"]),
                       ({"unit": "a.service", "user": "yes"}, ["user", "expected bool"])):
        with pytest.raises(ConfigError) as err:
            load_config(write(tmp_path, {**BASE, "processes": [{"name": "web", "systemd": bad}]}))
        assert all(w in str(err.value) for w in words), str(err.value)


def test_http_health_keys_load(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["stages"]["prod"]["vars"] = {"site": "shop.example.com"}
    data["health"] = [{"http": "http://{hostname}:8000/health/", "headers": {"Host": "{site}", "X-Port": 8000},
                       "json": {"status": "ok", "db.ok": True, "checks": [1, None]}, "follow_redirects": True,
                       "fail_after": 1},
                      {"http": "https://{hostname}/"}]
    cfg = load_config(write(tmp_path, data))
    first, plain = cfg.health
    assert (first.headers, first.json, first.follow_redirects, first.fail_after) == (
        {"Host": "{site}", "X-Port": "8000"}, {"status": "ok", "db.ok": True, "checks": [1, None]}, True, 1)
    assert cfg.stage("prod")[0].render(first.headers["Host"]) == "shop.example.com"
    assert (plain.headers, plain.json, plain.follow_redirects, plain.fail_after, plain.timeout) == ({}, None, False, 3,
                                                                                                    30.0)


def test_port_is_a_var_only_and_its_refusal_says_how_to_write_either(tmp_path):
    """{port} once meant the SSH port; now it is only a var, and a template using it without one is refused."""
    for where, edit in [("health[0].http", lambda c: c.update(health=[{"http": "http://{hostname}:{port}/"}])),
                        ("hooks.after.verify[0].run",
                         lambda c: c.update(hooks={"after": {"verify": ["curl localhost:{port}"]}})),
                        ("processes[0].start",
                         lambda c: c.update(processes=[{"name": "w", "start": "./run {port}", "stop": "true"}]))]:
        data = yaml.safe_load(yaml.safe_dump(BASE))
        edit(data)
        with pytest.raises(ConfigError) as info:
            load_config(write(tmp_path, data))
        line = info.value.one_line()
        assert f"{where}: unknown template {{port}}" in line, line
        assert "write {ssh_port} for the SSH port, or set vars: {port: 8000}" in line, line
        data["stages"]["prod"]["vars"] = {"port": 8000}
        assert load_config(write(tmp_path, data))


def test_templates_ssh_port_vars_and_shell_syntax(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["stages"]["prod"]["vars"] = {"port": 8000}
    data["health"] = [{"http": "http://{hostname}:{port}/health/"},
                      {"command": "echo ${HOME} {{name}} {ssh_port} awk '{ print }' {name}"}]
    cfg = load_config(write(tmp_path, data))
    first = cfg.stage("prod")[0]
    assert first.render(cfg.health[0].url) == "http://10.0.0.5:8000/health/"
    assert first.render(cfg.health[1].command) == "echo ${HOME} {{name}} 2222 awk '{ print }' 10.0.0.5"
    assert (first.template_vars()["port"], first.template_vars()["ssh_port"]) == (8000, 2222)
    plain = load_config(write(tmp_path, BASE)).stage("prod")[0]
    assert "port" not in plain.template_vars() and plain.render("{port}:{ssh_port}") == "{port}:2222"


def test_hooks_may_name_phases_of_user_playbooks(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    (books / "warm.yml").write_text("stages:\n  - name: warm_up\n    steps: [connect]\n")
    cfg = load_config(write(tmp_path, {**BASE, "playbooks_dir": "books", "hooks": {"after": {"warm_up": ["true"]}}}))
    assert cfg.hooks["after"]["warm_up"][0]["run"] == "true"
    (books / "warm.yml").write_text("stages:\n  - name: a\n    steps: [connect]\n    name: b\n")
    with pytest.raises(ConfigError, match=r"warm.yml: stages\[0\].name: duplicate key 'name' at line 4"):
        load_config(write(tmp_path, {**BASE, "playbooks_dir": "books", "hooks": {"after": {"warm_up": ["true"]}}}))
    with pytest.raises(ConfigError, match="duplicate key 'name'"):
        load_playbook("warm", cfg)
    with pytest.raises(ConfigError, match="playbooks_dir: no directory"):
        load_config(write(tmp_path, {**BASE, "playbooks_dir": "nope"}))


@pytest.mark.parametrize("content, words", [
    (b"deploy_to: /srv\xff\n", ["not UTF-8 text (byte 16)"]),
    (("shared: " + "[" * 1500 + "]" * 1500 + "\n").encode(), ["nested too deeply"]),
    (b"deploy_to: /srv\nstages: {p: [local]}\nssh: {connect_timeout: 1" + b"0" * 400 + b"}\n",
     ["ssh.connect_timeout", "more than 0"]),
    (b"deploy_to: /srv\nstages: {p: [local]}\nkeep_releases: " + b"9" * 5000 + b"\n", ["malformed YAML at line 3"]),
    (b"deploy_to: /srv\n\x07\n", ["malformed YAML at line 2, column 1", "#x0007"]),
    (b"deploy_to: /srv\nstages: {p: [local]}\nplaybooks_dir: " + b"x" * 300 + b"\n", ["playbooks_dir: no directory"]),
    (b"- deploy_to\n", ["expected a mapping of settings"]),
])
def test_hostile_files_give_one_line(tmp_path, content, words):
    path = tmp_path / "deploykit.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    line = info.value.one_line()
    assert str(path) in line and "hint:" in line, line
    for word in words:
        assert word in line, line


# -- no input makes load_config crash ----------------------------------------------------------

import copy  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from deploykit import config as config_module  # noqa: E402

FUZZ_BASE = yaml.safe_load(yaml.safe_dump({
    **BASE,
    "paths": [{"name": "up", "path": "shared/uploads"}],
    "databases": {**BASE["databases"], "lite": {"engine": "sqlite", "path": "shared/db.sqlite3"}},
    "processes": BASE["processes"] + [{"name": "w", "systemd": "w.service"},
                                      {"name": "b", "start": "./b start", "stop": "./b stop", "status": "./b st"}],
    "hooks": {"before": {"migrate": ["echo {name}"]}, "after": {"verify": [{"run": "true", "on": "primary", "timeout": 5}]}},
    "ssh": {"known_hosts": "~/.ssh/known_hosts", "connect_timeout": 5},
    "venv": {"requirements": "requirements.txt", "pip_args": ["--no-index"]},
    "lock": {"heartbeat": 5, "stale_after": 60},
    "install": ["echo {deploy_to}"],
    "shared": [".env"],
    "settings_module": "site.settings",
}))

WORDS = sorted(config_module.TOP_KEYS | {
    "hosts", "address", "roles", "vars", "name", "path", "engine", "owner", "supervisor", "systemd", "start",
    "stop", "program", "conf", "before", "after", "run", "on", "timeout", "http", "manage", "command", "migrate",
    "verify", "prod", "local", "app", "primary", "all", "postgresql", "sqlite", "databases", "media", "paths",
    "~/x", "/srv/x", "{port}", "{ssh_port}", "${HOME}", "deploy@10.0.0.5:22", "x" * 70, "\0"})
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=12), st.sampled_from(WORDS),
                    st.binary(max_size=3))  # !!binary: bytes
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=6), st.integers(), st.none(), st.booleans(), st.floats(),
                 st.binary(max_size=3))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4)
                      | st.sets(st.sampled_from(WORDS), max_size=3),  # !!set
                      max_leaves=25)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


FUZZ_PATHS = [p for p in _paths(FUZZ_BASE) if p]


DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


def _load_or_refuse(path, document) -> None:
    text = document if isinstance(document, str) else yaml.dump(document, Dumper=DUMPER, sort_keys=False)
    path.write_text(text)
    try:
        load_config(path)
    except (ConfigError, UnknownStage) as exc:
        line = exc.one_line()
        assert "\n" not in line and "hint:" in line, line


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz") / "deploykit.yaml"


def test_the_fuzz_base_loads(fuzz_file):
    fuzz_file.write_text(yaml.safe_dump(FUZZ_BASE))
    load_config(fuzz_file)


FUZZ = settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@FUZZ
@given(edits=st.lists(st.tuples(st.sampled_from(FUZZ_PATHS), st.one_of(values, st.just(KeyError))), min_size=1, max_size=3))
def test_no_traceback_when_a_valid_config_is_mutated(fuzz_file, edits):
    data = copy.deepcopy(FUZZ_BASE)
    for path, value in edits:
        node = data
        try:
            for part in path[:-1]:
                node = node[part]
            if value is KeyError:
                del node[path[-1]]
            else:
                node[path[-1]] = value
        except (KeyError, IndexError, TypeError):
            continue  # an earlier edit removed or replaced this path
    _load_or_refuse(fuzz_file, data)


@FUZZ
@given(document=st.one_of(values, st.dictionaries(keys, values, min_size=1, max_size=8)))
def test_no_traceback_for_any_document(fuzz_file, document):
    _load_or_refuse(fuzz_file, document)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(text=st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"#%@`,?\n \t~0.\\<=") + ["\x07", "\ufeff", "é"]),
                    max_size=40))
def test_no_traceback_for_any_text(fuzz_file, text):
    _load_or_refuse(fuzz_file, "deploy_to: /srv/app\n" + text)


def test_a_role_declared_in_roles_is_a_role_hosts_and_processes_may_name(tmp_path):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["roles"] = ["cron"]
    _set_host(1, roles=["app", "cron"])(data)
    data["processes"].append({"name": "beat", "on": "cron", "start": "true", "stop": "true", "restart": "true",
                              "status": "true"})
    cfg = load_config(write(tmp_path, yaml.safe_dump(data, sort_keys=False)))
    assert [sorted(h.roles) for h in cfg.stage("prod")] == [["app", "primary"], ["app", "cron"]]
    assert [p.on for p in cfg.processes] == ["app", "cron"]
