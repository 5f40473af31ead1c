"""deploykit.processes with the command runner patched: each manager's commands and the verbs' rules.

The host is a recorder that answers each command from a script (exit, stdout)
the way a real one would; a read-only host refuses writes like a dry-run Host.
"""
from __future__ import annotations

import types

import pytest
import yaml

from deploykit.config import ProcessSpec, load_config
from deploykit.errors import DeployError, DryRunWrite
from deploykit.transport.host import CommandResult
from deploykit.processes import MANAGERS, ProcessManager, manager_for
from deploykit.steps import services


class FakeHost:
    """Records commands; `answers` maps a command's start to (exit, stdout) (default: exit 0, no output)."""

    def __init__(self, answers=None, read_only=False, name="web1", socket=None):
        self.answers, self.read_only, self.name = answers or {}, read_only, name
        self.ran: list[tuple[str, bool]] = []
        self.socket = socket  # verb -> supervisord's answer over its socket; None: the socket is not reached
        self.asked: list[tuple[str, str, dict]] = []

    def helper(self, module, action, args=None, *, check=True, **_):
        if self.read_only and action != "status":
            raise DryRunWrite(f"{self.name}: refused helper {module} {action} during a dry-run")
        self.asked.append((module, action, args))
        if self.socket is None:
            return {"ok": True, "reachable": False, "why": "no such file"}
        return {"ok": True, "reachable": True, **self.socket.get(action, {})}

    def render(self, text):
        return text.replace("{name}", self.name)

    def run(self, command, *, check=True, read_only=False, **_):
        if self.read_only and not read_only:
            raise DryRunWrite(f"{self.name}: refused to run {command!r} during a dry-run")
        self.ran.append((command, read_only))
        exited, out = next((a for k, a in self.answers.items() if command.startswith(k)), (0, ""))
        return CommandResult(command, exited, out, "boom" if exited else "", 0.0)

    def commands(self):
        return [c for c, _ in self.ran]


def sup(**kw):
    base = "supervisorctl -c /etc/sv.conf"
    return ProcessSpec("web", f"{base} start web", f"{base} stop web", f"{base} restart web", f"{base} status web",
                       manager="supervisor", program="web", conf="/etc/sv.conf", ctl="supervisorctl", **kw)


def unit(**extra):
    spec = ProcessSpec("web", "systemctl start app.service", "systemctl stop app.service",
                       "systemctl restart app.service", "systemctl is-active app.service",
                       manager="systemd", unit="app.service")
    for k, v in extra.items():
        setattr(spec, k, v)  # options a newer config carries (read with getattr)
    return spec


def cmds(**kw):
    return ProcessSpec("beat", "./beat start", "./beat stop", "./beat stop && ./beat start", "true",
                       manager="commands", **kw)


def test_the_mapping_picks_each_manager_by_its_config_name():
    assert set(MANAGERS) == {"supervisor", "systemd", "commands"}
    for spec, kind in ((sup(), "supervisor"), (unit(), "systemd"), (cmds(), "commands")):
        assert manager_for(spec).kind == kind and isinstance(manager_for(spec), MANAGERS[kind])
    legacy = types.SimpleNamespace(name="old", start="a", stop="b", restart="c", status="d")  # no manager field
    assert manager_for(legacy).kind == "commands" and manager_for(legacy).command("restart") == "c"
    with pytest.raises(ValueError, match="unknown manager 'runit'"):
        manager_for(types.SimpleNamespace(name="x", manager="runit"))


def test_a_new_manager_is_one_class_and_one_registration_line(monkeypatch):
    class Runit(ProcessManager):
        kind = "runit"

        def command(self, verb):
            return f"sv {verb} /etc/service/{self.spec.name}"

    monkeypatch.setitem(MANAGERS, "runit", Runit)
    host = FakeHost()
    assert manager_for(types.SimpleNamespace(name="web", manager="runit")).restart(host) == "web"
    assert host.commands() == ["sv restart /etc/service/web"]


def test_every_config_keeps_its_meaning(tmp_path):
    """The commands each manager runs are the ones today's config wrote for that process."""
    data = {"deploy_to": "/srv/app", "stages": {"prod": {"hosts": ["deploy@10.0.0.5"]}},
            "processes": [{"name": "web", "supervisor": {"program": "app-web", "conf": "/etc/sv.conf"}},
                          {"name": "bare", "supervisor": {"supervisorctl": "sudo supervisorctl"}},
                          {"name": "worker", "systemd": "app-worker.service"},
                          {"name": "beat", "start": "./bin/beat start", "stop": "./bin/beat stop"},
                          {"name": "cron", "start": "a", "stop": "b", "restart": "c", "status": "d"}]}
    path = tmp_path / "deploykit.yaml"
    path.write_text(yaml.safe_dump(data))
    for proc in load_config(path).processes:
        m = manager_for(proc)
        assert m.kind == proc.manager
        for verb in ("start", "stop", "restart", "status"):
            assert m.command(verb) == getattr(proc, verb), (proc.name, verb)


def test_systemd_commands_system_or_user_and_a_configured_systemctl():
    assert [manager_for(unit()).command(v) for v in ("start", "stop", "restart", "status")] == [
        "systemctl start app.service", "systemctl stop app.service", "systemctl restart app.service",
        "systemctl is-active app.service"]
    assert manager_for(unit(user=True)).command("restart") == "systemctl --user restart app.service"
    assert manager_for(unit(systemctl="sudo -n systemctl")).command("stop") == "sudo -n systemctl stop app.service"


@pytest.mark.parametrize("spec, out, running", [
    (unit(), "active\n", True), (unit(), "activating\n", False), (unit(), "inactive\n", False),
    (sup(), "web                              RUNNING   pid 12, uptime 0:01:02\n", True),
    (sup(), "web                              STOPPED   Nov 22 07:00 AM\n", False),
    (cmds(), "", False), (cmds(), "RUNNING\n", True), (cmds(), "active\n", True)])
def test_running_reads_each_managers_status(spec, out, running):
    host = FakeHost({manager_for(spec).command("status"): (0 if out.strip() in ("active", "") or "RUNNING" in out
                                                           else 3, out)})
    assert manager_for(spec).running(host) is running
    assert host.ran == [(manager_for(spec).command("status"), True)]  # read-only


def test_restart_of_a_stopped_process_is_a_start():
    host = FakeHost({"systemctl restart": (5, "")})
    assert manager_for(unit()).restart(host) == "web"
    assert host.commands() == ["systemctl restart app.service", "systemctl start app.service"]


def test_start_of_a_running_process_and_stop_of_a_stopped_one_are_done():
    running = FakeHost({"supervisorctl -c /etc/sv.conf start": (1, "web: ERROR (already started)"),
                        "supervisorctl -c /etc/sv.conf status": (0, "web RUNNING pid 1")})
    assert manager_for(sup()).start(running) == "web (already running)"
    stopped = FakeHost({"systemctl stop": (1, ""), "systemctl is-active": (3, "inactive")})
    assert manager_for(unit()).stop(stopped) == "web (was not running)"
    assert stopped.ran[-1] == ("systemctl is-active app.service", True)


def test_failures_say_which_process_on_which_host_and_how_to_see_why():
    stuck = FakeHost({"systemctl stop": (1, ""), "systemctl is-active": (0, "active")})
    with pytest.raises(DeployError, match="web1: could not stop web: boom"):
        manager_for(unit()).stop(stuck)
    broken = FakeHost({"./beat start": (2, ""), "./beat stop": (2, "")})
    with pytest.raises(DeployError, match="web1: restart beat failed: boom") as exc:
        manager_for(cmds()).restart(broken)
    assert "run './beat stop && ./beat start' on web1" in str(exc.value.hint)


def test_templates_are_rendered_per_host():
    spec = cmds()
    spec.restart = "touch /run/{name}.restart"
    host = FakeHost(name="web2")
    manager_for(spec).restart(host)
    assert host.commands() == ["touch /run/web2.restart"]


def test_a_dry_run_host_may_ask_status_and_nothing_else():
    for spec in (sup(), unit(), cmds()):
        host = FakeHost({manager_for(spec).command("status"): (0, "active")}, read_only=True)
        manager_for(spec).running(host)
        for verb in ("start", "stop", "restart"):
            with pytest.raises(DryRunWrite):
                getattr(manager_for(spec), verb)(host)
        assert all(ro for _, ro in host.ran)


def test_the_steps_go_through_the_managers_and_skip_readers_when_asked():
    ctx = types.SimpleNamespace(config=types.SimpleNamespace(processes=[sup(), cmds(writes=False), unit()]))
    host = FakeHost({"systemctl restart": (5, "")})
    assert services._each(ctx, "restart", host) == ["web", "beat", "web"]
    assert host.commands() == ["supervisorctl -c /etc/sv.conf restart web", "./beat stop && ./beat start",
                               "systemctl restart app.service", "systemctl start app.service"]
    host = FakeHost()
    assert services._each(ctx, "stop", host, writers_only=True) == ["web", "web"]
    assert host.commands() == ["supervisorctl -c /etc/sv.conf stop web", "systemctl stop app.service"]


def test_supervisor_is_asked_over_its_socket_first_and_its_command_only_when_unreached():
    host = FakeHost({"supervisorctl -c /etc/sv.conf restart": (0, "web: started")})
    assert manager_for(sup()).restart(host) == "web"
    assert host.asked == [("supervisor", "restart", {"conf": "/etc/sv.conf", "program": "web"})]
    assert host.commands() == ["supervisorctl -c /etc/sv.conf restart web"]
    reached = FakeHost(socket={"restart": {"state": "RUNNING"}, "status": {"state": "STOPPED"}})
    assert manager_for(sup()).restart(reached) == "web" and reached.commands() == []
    assert manager_for(sup()).running(reached) is False and reached.commands() == []


def test_over_the_socket_the_verbs_keep_their_rules():
    def faulted(verb, fault):
        return FakeHost(socket={verb: {"ok": False, "fault": fault, "error": f"web: ERROR ({fault})"}})
    assert manager_for(sup()).start(faulted("start", "ALREADY_STARTED")) == "web (already running)"
    assert manager_for(sup()).stop(faulted("stop", "NOT_RUNNING")) == "web (was not running)"
    with pytest.raises(DeployError, match="web1: start web failed: web: ERROR \\(SPAWN_ERROR\\)"):
        manager_for(sup()).start(faulted("start", "SPAWN_ERROR"))
    found = manager_for(sup()).check(faulted("status", "BAD_NAME"), live=True)
    assert len(found) == 1 and "has no program named as configured" in found[0]


def test_a_group_is_left_to_supervisorctl_which_expands_it():
    host = FakeHost(socket={"restart": {"state": "RUNNING"}})
    spec = sup()
    spec.program = "workers:*"
    manager_for(spec).restart(host)
    assert host.asked == [] and host.commands() == ["supervisorctl -c /etc/sv.conf restart workers:*"]


@pytest.mark.parametrize("ctl", ["sudo supervisorctl", "/opt/bin/my-wrapper", "supervisorctl --extra"])
def test_a_wrapped_supervisorctl_is_always_run_as_configured(ctl):
    host = FakeHost(socket={"restart": {"state": "RUNNING"}})
    spec = sup()
    spec.ctl = ctl
    manager_for(spec).restart(host)
    assert host.asked == [] and host.commands() == [f"{ctl} -c /etc/sv.conf restart web"]


# what preflight finds, per manager: the same messages as steps/preflight.check_processes
CHECK_CASES = [
    (sup(), {"supervisorctl": (1, "web: ERROR (no such process)")}, "has no program named as configured"),
    (sup(), {"supervisorctl": (2, "unix:///tmp/sv.sock refused connection\nFor help, use supervisorctl -h")},
     "supervisor does not answer on web1: boom | unix:///tmp/sv.sock refused connection"),
    (sup(), {"supervisorctl": (3, "web STOPPED")}, None),
    (unit(), {"systemctl show": (0, "loaded\n")}, None),
    (unit(), {"systemctl show": (0, "not-found\n")}, "systemd unit app.service is not-found on web1"),
    (unit(), {"systemctl show": (1, "Failed to connect to bus")}, "systemd does not answer on web1"),
    (cmds(), {}, None),
    (ProcessSpec("cron", "a", "b", "c", "./cron-status", manager="commands"), {"./cron-status": (4, "")},
     "its status command failed on web1"),
]


@pytest.mark.parametrize("spec, answers, problem", CHECK_CASES)
def test_check_finds_what_preflight_finds_read_only(spec, answers, problem):
    host = FakeHost(answers, read_only=True)
    found = manager_for(spec).check(host, live=True)
    assert (found == []) if problem is None else (len(found) == 1 and problem in found[0]), found
    from deploykit.steps.preflight import check_processes
    ctx = types.SimpleNamespace(config=types.SimpleNamespace(processes=[spec]), previous="r1")
    assert check_processes(ctx, FakeHost(answers, read_only=True)) == found


def test_a_failing_status_command_is_no_problem_before_the_first_release():
    spec = ProcessSpec("cron", "a", "b", "c", "./cron-status", manager="commands")
    assert manager_for(spec).check(FakeHost({"./cron-status": (4, "")}), live=False) == []
    assert manager_for(unit(user=True)).check(FakeHost({"systemctl --user show": (0, "loaded")}), live=False) == []
