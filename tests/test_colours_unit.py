"""Blue/green pure logic: the colours: section refused at load, the router drivers with the command runner
patched (a fake Host records every command and helper call), and the on-host upstream helper on real files."""
from __future__ import annotations

import json
import posixpath

import pytest
import yaml

from deploykit.config import load_config
from deploykit.errors import ConfigError
from deploykit.routers import ROUTERS, RouterError, router_for
from deploykit.routers.command import CommandRouter
from deploykit.routers.nginx import NginxRouter
from deploykit.transport.bundle import load_helper, read_only_actions
from deploykit.transport.host import CommandResult

BASE = {
    "deploy_to": "/srv/app",
    "stages": {"blue": {"hosts": ["deploy@10.0.0.5"], "vars": {"port": 8000}},
               "green": {"hosts": ["deploy@10.0.0.6", "deploy@10.0.0.7"], "vars": {"port": 8001}},
               "edge": {"hosts": ["deploy@10.0.0.2"], "vars": {"port": 80}}},
    "colours": {"stages": ["blue", "green"], "router": {
        "stage": "edge", "nginx": {"upstream_file": "/etc/nginx/deploykit/app.conf", "upstream": "app",
                                   "command": "sudo nginx"},
        "check": "http://127.0.0.1:{port}/version/"}},
}


def load(tmp_path, edit=None):
    data = yaml.safe_load(yaml.safe_dump(BASE))
    if edit:
        edit(data)
    path = tmp_path / "deploykit.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_config(path)


def test_colours_load_with_each_app_hosts_address_by_default(tmp_path):
    cfg = load(tmp_path)
    assert cfg.colours.stages == ["blue", "green"]
    assert cfg.colours.servers == {"blue": ["10.0.0.5:8000"], "green": ["10.0.0.6:8001", "10.0.0.7:8001"]}
    r = cfg.colours.router
    assert (r.stage, r.driver, r.upstream_file, r.upstream, r.nginx) == (
        "edge", "nginx", "/etc/nginx/deploykit/app.conf", "app", "sudo nginx")
    assert isinstance(router_for(cfg), NginxRouter) and set(ROUTERS) == {"nginx", "command"}
    given = load(tmp_path, lambda d: d["colours"].update(servers={"blue": ["unix:/run/blue.sock"]}))
    assert given.colours.servers["blue"] == ["unix:/run/blue.sock"]
    assert load(tmp_path, lambda d: d.pop("colours")).colours is None


def _router(**kw):
    return lambda d: d["colours"]["router"].update(kw)


@pytest.mark.parametrize("edit, words", [
    (lambda d: d["colours"].update(stages=["blue", "purple"]), ["colours.stages[1]", "'purple' is not a stage"]),
    (lambda d: d["colours"].update(stages=["blue", "blue"]), ["colours.stages", "listed twice"]),
    (lambda d: d["colours"].update(stages=["blue"]), ["colours.stages", "exactly two"]),
    (_router(stage="router"), ["colours.router.stage", "'router' is not a stage"]),
    (_router(command={"switch": "./route {colour}", "live": "./live"}), ["colours.router", "exactly one of",
                                                                         "nginx, command"]),
    (lambda d: d["colours"]["router"].pop("nginx"), ["colours.router", "exactly one of", "found: none"]),
    (lambda d: d["colours"]["router"]["nginx"].update(upstream_file="nginx/app.conf"),
     ["colours.router.nginx.upstream_file", "absolute path"]),
    (lambda d: d["colours"]["router"]["nginx"].update(upstream="my app"), ["colours.router.nginx.upstream"]),
    (lambda d: d["colours"].update(servers={"red": ["10.0.0.9:80"]}), ["colours.servers.red", "not one of"]),
    (lambda d: d["colours"].update(servers={"blue": ["10.0.0.9:80; evil"]}), ["colours.servers.blue[0]"]),
    (lambda d: d["stages"]["green"].pop("vars"), ["colours.servers.green", "no 'port' var"]),
    (_router(check="127.0.0.1/"), ["colours.router.check", "http://"]),
    (_router(check="http://{nowhere}/"), ["colours.router.check", "{nowhere}"]),
])
def test_colour_mistakes_are_refused_at_load_with_the_key_and_the_fix(tmp_path, edit, words):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, edit)
    line = info.value.one_line()
    assert "hint:" in line
    for word in words:
        assert word in line, line


# -- drivers with the command runner patched -------------------------------------------------------------


class FakeHost:
    name = "edge1"
    deploy_to = "/srv/app"

    def __init__(self, fail=(), upstream=None, dir_exists=True, outputs=None):
        self.fail = fail  # command endings that fail
        self.upstream = upstream  # the colour in the upstream file's header
        self.dir_exists = dir_exists
        self.outputs = outputs or {}
        self.log: list[tuple] = []

    def render(self, text):
        return text.replace("{port}", "80")

    def path(self, *parts):
        return posixpath.join(self.deploy_to, *parts)

    def run(self, command, *, check=True, read_only=False, cwd=None, **kw):
        self.log.append(("run", command, read_only))
        failed = any(command.endswith(end) for end in self.fail)
        out = next((v for k, v in self.outputs.items() if command.startswith(k)), "")
        return CommandResult(command, 1 if failed else 0, out, "nginx: [emerg] bad" if failed else "", 0.0)

    def helper(self, module, action, args=None, **kw):
        self.log.append((module, action, args))
        if action == "read_upstream":
            return {"ok": True, "exists": self.upstream is not None, "colour": self.upstream,
                    "dir_exists": self.dir_exists}
        if action == "install_upstream":
            return {"ok": True, "changed": True, "had_previous": self.upstream is not None}
        return {"ok": True, "changed": True}

    def write_json(self, path, data):
        self.log.append(("write_json", path, data))


class Ctx:
    run_id = "20260101T000000Z-switch-1-abcd"


def nginx(tmp_path) -> NginxRouter:
    return router_for(load(tmp_path))


def steps(host):
    return [(e[0], e[1]) if e[0] != "run" else ("run", e[1].split(" ", 2)[-1]) for e in host.log]


def test_nginx_switch_writes_beside_then_tests_then_reloads_then_records(tmp_path):
    host = FakeHost(upstream="blue")
    said = nginx(tmp_path).switch(Ctx(), host, "green", ["10.0.0.6:8001", "10.0.0.7:8001"])
    assert said == "blue -> green (10.0.0.6:8001, 10.0.0.7:8001)"
    assert steps(host) == [("router", "read_upstream"), ("router", "install_upstream"), ("run", "-t"),
                           ("run", "-s reload"), ("write_json", "/srv/app/.deploykit/router.json")]
    install = host.log[1][2]
    assert install["path"] == "/etc/nginx/deploykit/app.conf"
    assert install["previous"] == "/etc/nginx/deploykit/app.conf.deploykit-previous"
    assert install["text"].splitlines()[0] == "# deploykit colour: green"
    assert "upstream app {\n    server 10.0.0.6:8001;\n    server 10.0.0.7:8001;\n}\n" in install["text"]
    assert host.log[2][1] == "sudo nginx -t" and host.log[3][1] == "sudo nginx -s reload"
    assert host.log[4][2]["colour"] == "green" and host.log[4][2]["run_id"] == Ctx.run_id


@pytest.mark.parametrize("failing", ["-t", "-s reload"])
def test_nginx_refusing_the_new_file_puts_the_old_one_back_and_reloads_nothing(tmp_path, failing):
    host = FakeHost(upstream="blue", fail=(failing,))
    with pytest.raises(RouterError) as info:
        nginx(tmp_path).switch(Ctx(), host, "green", ["10.0.0.6:8001"])
    message = info.value.one_line()
    assert "put back" in message and "not reloaded" in message and "serves blue as before" in message
    done = steps(host)
    assert done[-1] == ("router", "put_back") and host.log[-1][2]["had_previous"] is True
    assert ("write_json", "/srv/app/.deploykit/router.json") not in done
    if failing == "-t":
        assert ("run", "-s reload") not in done


def test_nginx_live_and_check_are_read_only(tmp_path):
    router = nginx(tmp_path)
    assert router.live(Ctx(), FakeHost(upstream="green")) == "green"
    assert router.live(Ctx(), FakeHost()) is None
    ok = FakeHost()
    assert router.check(Ctx(), ok) == []
    assert [e for e in ok.log if e[0] == "run"] == [("run", "sudo nginx -t", True)]
    problems = router.check(Ctx(), FakeHost(dir_exists=False, fail=("-t",)))
    assert len(problems) == 2 and "no directory" in problems[0] and "nginx -t fails" in problems[1]


def command_router(tmp_path) -> CommandRouter:
    return router_for(load(tmp_path, _router(nginx=None, command={
        "switch": "./bin/route {colour} {servers}", "live": "./bin/which-colour"})))


def test_command_driver_runs_the_operators_commands_with_quoted_words(tmp_path):
    router = command_router(tmp_path)
    host = FakeHost(outputs={"./bin/which-colour": "blue\n"})
    assert router.live(Ctx(), host) == "blue"
    assert router.switch(Ctx(), host, "green", ["10.0.0.6:8001", "unix:/run/a b.sock"]).startswith("blue -> green")
    assert host.log[-1] == ("run", "./bin/route green 10.0.0.6:8001 'unix:/run/a b.sock'", False)
    assert all(read_only for kind, cmd, read_only in host.log if cmd.startswith("./bin/which-colour"))
    assert router.check(Ctx(), FakeHost(outputs={"./bin/which-colour": "purple\n"}))[0].endswith(
        "not one of blue, green")
    with pytest.raises(RouterError, match="switch command failed.*serves blue"):
        router.switch(Ctx(), FakeHost(fail=("a b.sock'",), outputs={"./bin/which-colour": "blue"}), "green",
                      ["unix:/run/a b.sock"])


# -- the on-host helper, on real files ----------------------------------------------------------------------

def test_the_upstream_helper_replaces_by_rename_and_puts_back(tmp_path):
    helper = load_helper("router")
    assert read_only_actions("router") == {"read_upstream"}
    path, previous = tmp_path / "app.conf", tmp_path / "app.conf.deploykit-previous"
    assert helper.act_read_upstream({"path": str(path)}) == {"exists": False, "colour": None, "text": None,
                                                             "dir_exists": True}
    first = helper.act_install_upstream({"path": str(path), "previous": str(previous),
                                         "text": "# deploykit colour: blue\nupstream app {}\n"})
    assert first["had_previous"] is False and not previous.exists()
    assert helper.act_read_upstream({"path": str(path)})["colour"] == "blue"
    second = helper.act_install_upstream({"path": str(path), "previous": str(previous),
                                          "text": "# deploykit colour: green\nupstream app {}\n"})
    assert second["had_previous"] is True and previous.read_text().startswith("# deploykit colour: blue")
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    helper.act_put_back({"path": str(path), "previous": str(previous), "had_previous": True})
    assert path.read_text().startswith("# deploykit colour: blue") and not previous.exists()
    helper.act_put_back({"path": str(path), "previous": str(previous), "had_previous": False})
    assert not path.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing half-written left beside
    with pytest.raises(FileNotFoundError):
        helper.act_install_upstream({"path": str(tmp_path / "no" / "app.conf"), "previous": str(previous),
                                     "text": "x"})


def test_switch_and_colours_refuse_bad_input_before_any_host(tmp_path):
    """No host is reachable here (10.0.0.x): each refusal comes before a connection, exit 2, one line."""
    import subprocess
    import sys

    load(tmp_path)  # writes deploykit.yaml
    plain = tmp_path / "plain.yaml"
    plain.write_text(yaml.safe_dump({k: v for k, v in BASE.items() if k != "colours"}))

    def cli(*args, config=tmp_path / "deploykit.yaml"):
        return subprocess.run([sys.executable, "-m", "deploykit.cli", *args, "--config", str(config)],
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)

    cases = [(("switch", "--to", "purple"), "'purple' is not a colour"),
             (("switch",), "no colour given"),
             (("switch", "--to", "green", "--stage", "blue"), "run on the router's stage (edge)"),
             (("colours", "--stage", "green"), "run on the router's stage (edge)")]
    for args, words in cases:
        cp = cli(*args)
        assert cp.returncode == 2 and words in cp.stderr, (args, cp.stdout + cp.stderr)
    for args in (("switch", "--to", "green"), ("colours",)):
        cp = cli(*args, "--json", config=plain)
        assert cp.returncode == 2 and "no 'colours:' section" in cp.stderr, cp.stdout + cp.stderr
        assert json.loads(cp.stdout.splitlines()[-1])["ok"] is False


class WorkersHost(FakeHost):
    """A router host whose nginx reloads: its workers before, then new ones (or none, or old ones lingering)."""

    def __init__(self, answer, **kw):
        super().__init__(**kw)
        self.answer = answer

    def helper(self, module, action, args=None, **kw):
        if action == "workers":
            self.log.append((module, action, args))
            return {"ok": True, "master": 10, "workers": [[11, 500]]}
        if action == "wait_reloaded":
            self.log.append((module, action, args))
            return {"ok": True, **self.answer}
        return super().helper(module, action, args, **kw)


@pytest.mark.parametrize("answer, ends", [
    ({"done": True, "new": [12], "left": []}, "(10.0.0.6:8001)"),
    ({"done": False, "new": [12], "left": [11]}, "old workers still finish requests after 10 s"),
    ({"done": False, "new": [], "left": [11]}, "nginx started no new worker within 10 s: see its error log"),
])
def test_with_its_pid_file_a_switch_returns_once_nginx_serves_the_new_file(tmp_path, answer, ends):
    router = router_for(load(tmp_path, lambda d: d["colours"]["router"]["nginx"].update(pid_file="/run/ngx.pid")))
    host = WorkersHost(answer, upstream="blue")
    said = router.switch(Ctx(), host, "green", ["10.0.0.6:8001"])
    assert said.startswith("blue -> green (10.0.0.6:8001)") and said.endswith(ends), said
    assert steps(host) == [("router", "read_upstream"), ("balancer", "workers"), ("router", "install_upstream"),
                           ("run", "-t"), ("run", "-s reload"), ("write_json", "/srv/app/.deploykit/router.json"),
                           ("balancer", "wait_reloaded")]
    wait = host.log[-1][2]
    assert wait["pid_file"] == "/run/ngx.pid" and wait["before"] == [[11, 500]] and wait["old_gone"] is True
