"""gunicorn as a unit of a real systemd (PID 1 of its own namespaces, see deploykit_testing.systemd).

The sshd test host runs inside that systemd's namespaces, so deploykit's plain
`systemctl` on the host reaches it as on a machine booted with systemd.
"""
from __future__ import annotations

import subprocess

import pytest
import yaml

from deploykit import api
from deploykit.config import ProcessSpec, parse_config
from deploykit.errors import DryRunWrite
from deploykit.transport.host import make_host
from deploykit.processes import manager_for
from deploykit_testing._proc import alive
from deploykit_testing.systemd import SystemdMachine, systemd_factory  # noqa: F401 (fixture)

UNIT = "library-web.service"


def web_unit(host, http: str) -> str:
    current = host.deploy_to / "current"
    return (f"[Unit]\nDescription=library web on {host.name} (gunicorn)\n\n"
            f"[Service]\nWorkingDirectory={host.deploy_to}\n"
            f"ExecStart={current}/.venv/bin/python -m gunicorn --chdir {current} --bind {http} --workers 1 libsite.wsgi\n"
            f"StandardOutput=append:{host.root}/web.log\nStandardError=append:{host.root}/web.log\n\n"
            "[Install]\nWantedBy=multi-user.target\n")


def systemd_stage(stage_factory, systemd_factory, n: int = 1, **kwargs):
    """A stage whose web process is a systemd unit on each host (its supervisord shut down)."""
    st = stage_factory(n, **kwargs)
    st.stop()
    st.supervisors.clear()
    machines = {}
    for h in st.hosts:
        machine = systemd_factory(h.root / "systemd")
        machine.add_unit(UNIT, web_unit(h, st.http[h.name]))
        machine.adopt(h)
        machines[h.name] = machine
    data = yaml.safe_load(st.config_path.read_text())
    data["processes"] = [{"name": "web", "systemd": UNIT}]
    st.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    return st, machines


def started(machine) -> tuple[int, str]:
    """(MainPID, when systemd started it): both change on a real restart."""
    return machine.main_pid(UNIT), machine.show(UNIT, "ExecMainStartTimestampMonotonic")


def messages(result, step: str) -> list[str]:
    return [r.message for r in result.records if r.step == step]


def test_release_restarts_the_unit_a_dry_run_does_not_and_a_failed_release_is_recovered(stage_factory,
                                                                                          systemd_factory):
    st, machines = systemd_stage(stage_factory, systemd_factory)
    host, machine = st.primary, machines[st.primary.name]
    cfg = st.config()
    assert [(p.manager, p.unit) for p in cfg.processes] == [("systemd", UNIT)]
    assert machine.show(UNIT, "ActiveState") == "inactive"  # nothing released yet

    first = api.release(cfg, st.name, "v1.0")
    assert first.ok, first.error
    assert messages(first, "restart_processes") == ["web"]
    assert machine.show(UNIT, "ActiveState") == "active"
    v10 = started(machine)
    assert v10[0] > 0 and st.get(host, "/")[1]["version"] == "1.0"

    second = api.release(cfg, st.name, "v1.2")
    assert second.ok, second.error
    v12 = started(machine)
    assert v12[0] > 0 and v12 != v10, (v10, v12)  # a new main process, started anew
    status, body = st.get(host, "/health/")
    assert status == 200, body
    assert st.get(host, "/")[1]["version"] == "1.2"
    assert machine.systemctl("is-active", UNIT).stdout.strip() == "active"

    tree = st.tree(ignore_journal=True)
    dry = api.release(cfg, st.name, "v1.1", dry_run=True)
    assert dry.ok, dry.error
    assert messages(dry, "restart_processes") == ["would restart web"]
    assert started(machine) == v12  # the unit was not touched
    assert st.tree(ignore_journal=True) == tree and st.get(host, "/")[1]["version"] == "1.2"

    broken = api.release(cfg, st.name, "v1.3-broken-health")
    assert not broken.ok and broken.recovered, (broken.error, broken.recovery and broken.recovery.error)
    assert broken.failed_phase == "verify"
    back = started(machine)
    assert back[0] > 0 and back != v12  # restarted onto the release it came back to
    assert machine.show(UNIT, "ActiveState") == "active"
    status, body = st.get(host, "/")
    assert status == 200 and body["version"] == "1.2"


def test_the_test_systemd_is_pid_1_of_its_own_namespaces_and_leaves_nothing(tmp_path):
    machine = SystemdMachine.start(tmp_path / "m")
    try:
        comm = machine.inside("cat", "/proc/1/comm")
        assert subprocess.run(comm, capture_output=True, text=True, check=True).stdout.strip() == "systemd"
        machine.add_unit("sleeper.service", "[Service]\nExecStart=/bin/sleep 600\n")
        machine.systemctl("start", "sleeper.service")
        assert machine.systemctl("is-active", "sleeper.service").stdout.strip() == "active"
        procs = (machine.cgroup / "system.slice" / "sleeper.service" / "cgroup.procs").read_text().split()
        assert len(procs) == 1 and alive(int(procs[0]))  # in its own cgroup, under the machine's
    finally:
        machine.stop()
    assert not alive(int(procs[0])) and not alive(machine.pid) and not machine.cgroup.exists()


def user_manager(machine, units) -> str:
    """Start `systemd --user` (root's) as a unit of the machine, with units only from `units`; its systemctl."""
    for target in ("basic.target", "shutdown.target", "dk.target"):
        (units / target).write_text(f"[Unit]\nDescription={target}\n")
    machine.add_unit("user-manager.service", "[Service]\nType=notify\nDelegate=yes\nRuntimeDirectory=user/0\n"
                     f"Environment=XDG_RUNTIME_DIR=/run/user/0 SYSTEMD_UNIT_PATH={units}\n"
                     "ExecStart=/lib/systemd/systemd --user --unit=dk.target\n")
    machine.systemctl("start", "user-manager.service")
    return "env XDG_RUNTIME_DIR=/run/user/0 systemctl"


def test_a_user_unit_over_ssh_through_the_processes_interface(ssh_rig_factory, systemd_factory):
    rig = ssh_rig_factory(1)
    h = rig.hosts[0]
    machine = systemd_factory(h.root / "systemd")
    machine.adopt(h)
    units = h.root / "user-units"
    units.mkdir()
    (units / "sleeper.service").write_text("[Service]\nExecStart=/bin/sleep 600\n")
    systemctl = user_manager(machine, units)
    cfg = parse_config({"deploy_to": str(h.deploy_to), "stages": {"s": {"hosts": [{"name": h.name, "address": f"{rig.user}@{h.address}:{h.port}"}]}},
                        "ssh": {"known_hosts": str(rig.known_hosts), "identity": str(rig.client_key)}},
                       h.root / "deploykit.yaml")
    spec = ProcessSpec("sleeper", "", "", "", "", manager="systemd", unit="sleeper.service")
    spec.user, spec.systemctl = True, systemctl  # the options a config gives as systemd: {unit, user, systemctl}
    web = manager_for(spec)

    def main_pid() -> int:
        cp = subprocess.run(machine.inside(*systemctl.split(), "--user", "show", "-p", "MainPID", "--value",
                                           "sleeper.service"), capture_output=True, text=True, check=True)
        return int(cp.stdout)

    host, dry = make_host(cfg.stages["s"][0], cfg), make_host(cfg.stages["s"][0], cfg, read_only=True)
    try:
        assert web.check(host, live=False) == [] and not web.running(host)
        assert web.restart(host) == "sleeper" and web.running(host)  # a restart of a stopped unit starts it
        first = main_pid()
        assert web.restart(host) == "sleeper" and main_pid() not in (0, first)
        running = main_pid()
        assert web.running(dry)
        for verb in ("start", "stop", "restart"):
            with pytest.raises(DryRunWrite):
                getattr(web, verb)(dry)
        assert main_pid() == running
        assert web.stop(host) == "sleeper" and not web.running(host) and main_pid() == 0
        spec.unit = "missing.service"
        assert web.check(host, live=True) == ["sleeper: systemd unit missing.service is not-found on host1"]
    finally:
        host.close()
        dry.close()
