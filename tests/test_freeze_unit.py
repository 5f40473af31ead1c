"""The write freeze's parts on their own: the helper's flag and drain on real files and flocks, the flag's
Retry-After, the `freeze:` section's refusals."""
from __future__ import annotations

import fcntl
import json
import os
import threading

import pytest
import yaml

from deploykit.config import load_config
from deploykit.django.middleware import retry_after
from deploykit.errors import ConfigError
from deploykit.transport.bundle import load_helper, read_only_actions

helper = load_helper("freeze")


@pytest.fixture
def paths(tmp_path):
    state = tmp_path / ".deploykit"
    state.mkdir()
    return {"flag": str(state / "freeze"), "lock": str(state / "freeze.lock")}


def hold_shared(lock: str) -> int:
    """A write request in flight: the lock held shared."""
    fd = os.open(lock, os.O_RDONLY | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def test_only_the_state_is_read_only():
    assert read_only_actions("freeze") == {"freeze_state"}


def test_a_drain_that_times_out_removes_the_flag_it_made(paths):
    fd = hold_shared(paths["lock"])
    try:
        with pytest.raises(helper.DrainTimeout):
            helper.act_freeze({**paths, "drain_timeout": 0.2, "info": {"mode": "maintenance"}})
        assert not os.path.exists(paths["flag"])
        # a freeze already on (made by someone else) is kept, whatever its drain says
        with open(paths["flag"], "w") as f:
            f.write("9\n")
        with pytest.raises(helper.DrainTimeout):
            helper.act_freeze({**paths, "drain_timeout": 0.2})
        assert open(paths["flag"]).read() == "9\n"
    finally:
        os.close(fd)


def test_freeze_waits_for_the_write_in_flight_then_unfreeze_measures(paths):
    fd = hold_shared(paths["lock"])
    threading.Timer(0.2, os.close, (fd,)).start()
    doc = helper.act_freeze({**paths, "drain_timeout": 30, "info": {"mode": "maintenance", "retry_after": 3}})
    assert doc["created"] and doc["waited"] and doc["changed"]
    assert json.loads(open(paths["flag"]).read())["retry_after"] == 3
    assert helper.act_freeze_state({"flag": paths["flag"]})["frozen"]
    again = helper.act_freeze({**paths, "drain_timeout": 30})
    assert not again["created"] and again["since"] == doc["since"]  # one freeze, kept
    done = helper.act_unfreeze({"flag": paths["flag"]})
    assert done["was_frozen"] and done["seconds"] >= 0 and not os.path.exists(paths["flag"])
    assert helper.act_unfreeze({"flag": paths["flag"]}) == {"changed": False, "was_frozen": False, "seconds": None,
                                                             "flag": None}


def test_no_freeze_without_a_state_directory(tmp_path):
    with pytest.raises(helper.NoStateDir):
        helper.act_freeze({"flag": str(tmp_path / "none" / "freeze"), "lock": str(tmp_path / "none" / "lock")})
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("text, seconds", [
    ('{"retry_after": 12, "mode": "maintenance"}', 12), ("30\n", 30), ("", 5), ("soon", 5),
    ('{"retry_after": -1}', 5), ('{"retry_after": true}', 5), ("[1]", 5)])
def test_retry_after_comes_from_the_flag_else_the_default(tmp_path, text, seconds):
    flag = tmp_path / "freeze"
    flag.write_text(text)
    assert retry_after(flag, 5) == seconds
    assert retry_after(tmp_path / "gone", 4) == 4


BASE = {"deploy_to": "/srv/app", "stages": {"prod": ["local"]},
        "processes": [{"name": "web", "start": "a", "stop": "b"}, {"name": "beat", "start": "c", "stop": "d",
                                                                     "writes": False}]}


def load(tmp_path, **extra):
    path = tmp_path / "deploykit.yaml"
    path.write_text(yaml.safe_dump({**BASE, **extra}))
    return load_config(path)


def test_freeze_defaults_and_a_valid_section(tmp_path):
    assert (load(tmp_path).freeze.mode, load(tmp_path).freeze.drain_timeout) == ("stop_writers", 30.0)
    spec = load(tmp_path, freeze={"mode": "maintenance", "retry_after": 9, "drain_timeout": 5}).freeze
    assert (spec.mode, spec.retry_after, spec.drain_timeout) == ("maintenance", 9, 5.0)


@pytest.mark.parametrize("freeze, says, hint", [
    ({"mode": "pause"}, "freeze.mode: unknown value 'pause'", "use one of: stop_writers, maintenance"),
    ({"drain_timeout": 0}, "freeze.drain_timeout: must be a number more than 0", "a number more than 0"),
    ({"drain_timeout": 7200}, "freeze.drain_timeout: 7200 s is not below ssh.command_timeout", "less time"),
    ({"retry_after": "5s"}, "freeze.retry_after: expected int", "retry_after"),
    ({"drain_timeot": 3}, "freeze.drain_timeot: unknown key", "did you mean 'drain_timeout'"),
    ("on", "freeze: expected dict", "dict"),
])
def test_freeze_refusals_name_the_key_and_the_fix(tmp_path, freeze, says, hint):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, freeze=freeze)
    assert says in str(err.value) and hint in err.value.hint


def test_stop_writers_needs_a_writer(tmp_path):
    processes = [{"name": "beat", "start": "c", "stop": "d", "writes": False}]
    assert load(tmp_path, processes=processes).freeze.mode == "stop_writers"  # not asked for: not refused
    with pytest.raises(ConfigError, match="freeze.mode: stop_writers, but no process has 'writes: true'"):
        load(tmp_path, processes=processes, freeze={"mode": "stop_writers"})
    assert load(tmp_path, processes=processes, freeze={"mode": "maintenance"}).freeze.mode == "maintenance"
