"""The supervisor manager asks a real supervisord over its socket, and runs supervisorctl only when unreached.

The configured `supervisorctl` here is a stand-in that records being run and
fails: every verb that went over the socket leaves no record, and the one case
where the socket cannot be reached shows the command being run instead.
"""
from __future__ import annotations

import pytest

from deploykit.config import ProcessSpec
from deploykit.errors import DeployError, DryRunWrite
from deploykit.processes import manager_for
from tests.test_transport import local_host, ssh_host

pytestmark = pytest.mark.rig


def recording_ctl(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    ctl = bin_dir / "supervisorctl"
    record = tmp_path / "ran-supervisorctl"
    ctl.write_text(f"#!/bin/sh\necho \"$@\" >> {record}\necho 'supervisorctl stand-in' >&2\nexit 7\n")
    ctl.chmod(0o755)
    return ctl, record


def spec_for(program, conf, ctl):
    base = f"{ctl} -c {conf}"
    return ProcessSpec("web", *(f"{base} {v} {program}" for v in ("start", "stop", "restart", "status")),
                       manager="supervisor", program=program, conf=str(conf), ctl=str(ctl))


@pytest.fixture(params=["local", "ssh"])
def make_host(request, tmp_path, ssh_rig_factory):
    made = []

    def make(**kw):
        h = local_host(tmp_path, **kw) if request.param == "local" else ssh_host(ssh_rig_factory(1), tmp_path, **kw)
        made.append(h)
        return h
    yield make
    for h in made:
        h.close()


def test_every_verb_goes_over_the_socket(tmp_path, supervisor_factory, make_host):
    sv = supervisor_factory(programs={"sleeper": {"command": "sleep 300"},
                                      "crasher": {"command": "sh -c 'exit 3'", "startsecs": "1"}})
    ctl, record = recording_ctl(tmp_path)
    web = manager_for(spec_for("sleeper", sv.conf, ctl))
    host = make_host()
    assert web.check(host, live=True) == [] and web.running(host) is False
    assert web.restart(host) == "web" and sv.status("sleeper") == "RUNNING"  # restart of a stopped one starts it
    first = sv.program_pid("sleeper")
    assert web.running(host) is True
    assert web.start(host) == "web (already running)"
    assert web.restart(host) == "web" and sv.status("sleeper") == "RUNNING"
    assert sv.program_pid("sleeper") != first
    assert web.stop(host) == "web" and sv.status("sleeper") == "STOPPED"
    assert web.stop(host) == "web (was not running)"
    with pytest.raises(DeployError, match="start web failed: crasher: ERROR"):
        manager_for(spec_for("crasher", sv.conf, ctl)).start(host)
    found = manager_for(spec_for("nosuch", sv.conf, ctl)).check(host, live=True)
    assert len(found) == 1 and "has no program named as configured" in found[0]
    assert not record.exists(), record.read_text()


def test_a_dry_run_may_ask_the_socket_for_status_only(tmp_path, supervisor_factory, make_host):
    sv = supervisor_factory(programs={"sleeper": {"command": "sleep 300"}})
    ctl, record = recording_ctl(tmp_path)
    web = manager_for(spec_for("sleeper", sv.conf, ctl))
    dry = make_host(read_only=True)
    assert web.running(dry) is False
    for verb in ("start", "stop", "restart"):
        with pytest.raises(DryRunWrite):
            getattr(web, verb)(dry)
    assert sv.status("sleeper") == "STOPPED" and not record.exists()


def test_an_unreached_socket_runs_the_configured_command(tmp_path, supervisor_factory, make_host):
    sv = supervisor_factory(programs={"sleeper": {"command": "sleep 300"}})
    ctl, record = recording_ctl(tmp_path)
    gone = tmp_path / "elsewhere.conf"
    gone.write_text(sv.conf.read_text().replace(str(sv.socket), str(tmp_path / "no-such.sock")))
    web = manager_for(spec_for("sleeper", gone, ctl))
    host = make_host()
    with pytest.raises(DeployError, match="restart web failed: supervisorctl stand-in"):
        web.restart(host)
    assert record.read_text().splitlines() == [f"-c {gone} restart sleeper", f"-c {gone} start sleeper"]
    assert sv.status("sleeper") == "STOPPED"


def test_a_start_without_wait_returns_once_spawned_not_after_startsecs(tmp_path, supervisor_factory, make_host):
    """The transfer's frozen cut-over starts with wait=False: supervisord forks the program and says STARTING;
    its startsecs (5 s here) are not waited out, and the program goes on to RUNNING by itself."""
    sv = supervisor_factory(programs={"slow": {"command": "sleep 300", "startsecs": "5"}})
    ctl, record = recording_ctl(tmp_path)
    web = manager_for(spec_for("slow", sv.conf, ctl))
    host = make_host()
    assert web.start(host, wait=False) == "web"
    assert sv.status("slow") == "STARTING"  # returned before supervisord would call it started
    assert web.start(host, wait=False) == "web (already running)"
    assert not record.exists(), record.read_text()


def test_a_start_without_wait_falls_back_to_the_command_when_the_socket_is_unreached(tmp_path, make_host):
    ctl, record = recording_ctl(tmp_path)
    web = manager_for(spec_for("web", tmp_path / "no-such-supervisord.conf", ctl))
    with pytest.raises(DeployError, match="start web failed"):
        web.start(make_host(), wait=False)
    ran = [line.split()[-2:] for line in record.read_text().splitlines()]
    assert ["start", "web"] in ran and ["spawn", "web"] not in ran  # supervisorctl's own start: it has no spawn


def test_a_restart_without_wait_is_one_respawn_over_the_socket(tmp_path, supervisor_factory, make_host):
    """A rolling batch restarts with wait=False: stop, then spawn, in one call of the helper; the answer says
    how long the old process took to stop; a stopped program is simply spawned; unreached, the command runs."""
    sv = supervisor_factory(programs={"slow": {"command": "sleep 300", "startsecs": "5"}})
    ctl, record = recording_ctl(tmp_path)
    web = manager_for(spec_for("slow", sv.conf, ctl))
    host = make_host()
    assert web.restart(host, wait=False) == "web"  # was stopped: nothing to stop, spawned
    assert sv.status("slow") == "STARTING"
    first = sv.program_pid("slow")
    said = web.restart(host, wait=False)
    assert said.startswith("web (the old one stopped in ") and said.endswith(" s)"), said
    assert sv.status("slow") == "STARTING" and sv.program_pid("slow") != first
    assert not record.exists(), record.read_text()
    gone = tmp_path / "elsewhere.conf"
    gone.write_text(sv.conf.read_text().replace(str(sv.socket), str(tmp_path / "no-such.sock")))
    with pytest.raises(DeployError, match="stop web|start web"):
        manager_for(spec_for("slow", gone, ctl)).restart(host, wait=False)
    assert record.read_text().splitlines()[0] == f"-c {gone} stop slow"
