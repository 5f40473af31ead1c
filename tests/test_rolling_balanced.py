"""Rolling releases behind a real nginx balancer, under traffic: four sshd app hosts of the sample project
(one PostgreSQL database), nginx on a fifth balancing over them; a bounded loop of reads and writes through
nginx during the release. Zero failed requests, and every write answered 2xx is in the database after.
"""
from __future__ import annotations

import time

import yaml

from deploykit import api
from deploykit_testing.load import LoadLoop, accepted_writes, summary

from .test_rolling import break_host


def configure(fleet, **rollout) -> None:
    doc = yaml.safe_load(fleet.config_path.read_text())
    doc["rollout"].update(rollout)
    doc["health"].append({"command": "test ! -e {deploy_to}/shared/fail-$(head -n 1 REVISION)"})
    fleet.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))


def tags(fleet) -> dict:
    return {h.name: (fleet.stage.revision(h) or [None, None])[1] for h in fleet.app_hosts}


def first_release(fleet, tag: str = "v1.1") -> None:
    result = api.release(fleet.config(), "prod", tag, all_at_once=True)
    assert result.ok, result.error


def under_load(fleet, release):
    """Run release() with the load loop going through nginx before, during and after it."""
    loop = LoadLoop(fleet.nginx.url(), limit=100_000, timeout=10).start()
    try:
        loop.wait_for(20, timeout=120)
        result = release()
        n = len(loop.records)
        loop.wait_for(n + 20, timeout=120)
    finally:
        records = loop.stop()
    return result, records


def no_failed_request(fleet, records) -> None:
    failed = [r for r in records if not r.ok]
    assert not failed, (summary(records), failed[:5])
    accepted = accepted_writes(records)
    assert accepted and set(accepted) <= fleet.titles(), "every write answered 2xx is in the database"


def test_four_hosts_in_batches_behind_nginx_under_load_fail_no_request(balanced_fleet_factory):
    fleet = balanced_fleet_factory(4)
    configure(fleet, batches=[1, "50%", "100%"], pause="0.5s", max_error_rate="0%")
    first_release(fleet)
    result, records = under_load(fleet, lambda: api.release(fleet.config(), "prod", "v1.6-additive"))
    assert result.ok, result.error
    assert tags(fleet) == {h.name: "v1.6-additive" for h in fleet.app_hosts}
    assert result.data["rollout"]["batches"] == [["host1"], ["host2", "host3"], ["host4"]]
    no_failed_request(fleet, records)
    gates = [r for r in result.records if r.step == "gate"]
    assert len(gates) == 3 and all("0 error(s) in" in g.message for g in gates), [g.message for g in gates]
    assert sum(int(g.message.split(" error(s) in ")[1].split()[0]) for g in gates) > 0, "the gate saw traffic"
    drains = [r for r in result.records if r.step == "drain"]  # one change of the balancer per batch
    assert len(drains) == 3, [r.message for r in drains]
    for drain, batch in zip(drains, result.data["rollout"]["batches"]):
        assert all(fleet.stage.http[name] in drain.message for name in batch), (drain.message, batch)
    assert fleet.balancer_state()["drained"] == {}, "every server is back in the balancer"
    assert " down;" not in fleet.nginx.upstream_file.read_text()


def test_a_canary_failing_behind_nginx_is_put_back_and_no_request_fails(balanced_fleet_factory):
    fleet = balanced_fleet_factory(4)
    configure(fleet, batches=[1, "50%", "100%"])
    first_release(fleet)
    canary = fleet.app_hosts[0]
    break_host(fleet.stage, canary, "v1.6-additive")
    others = {h.name: fleet.stage.current_target(h) for h in fleet.app_hosts[1:]}
    result, records = under_load(fleet, lambda: api.release(fleet.config(), "prod", "v1.6-additive"))
    assert not result.ok and result.failed_phase == "rollout", result.error
    assert result.recovery.ok, result.recovery.error
    assert [r.host for r in result.records if r.step == "switch_current" and r.status != "failed"] == ["host1"]
    assert tags(fleet) == {h.name: "v1.1" for h in fleet.app_hosts}
    assert {h.name: fleet.stage.current_target(h) for h in fleet.app_hosts[1:]} == others, "never changed"
    no_failed_request(fleet, records)
    assert fleet.balancer_state()["drained"] == {}
    time.sleep(0.5)
    assert fleet.stage.get(canary, "/health/")[0] == 200
