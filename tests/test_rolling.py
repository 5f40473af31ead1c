"""Rolling releases on real sshd hosts (the sample project under supervisord, PostgreSQL): batches, the canary,
max_fail, the rollout undone and resumed, migrations unsafe for the old code refused; an interrupt mid-rollout.

Traffic through a real nginx balancer is in tests/test_rolling_balanced.py.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time

import yaml

from deploykit import api
from deploykit.state.releases import Registry


def configure(st, **rollout) -> None:
    """rollout: in the stage's deploykit.yaml, and a health command that fails on a host holding
    shared/fail-<commit> for the release's commit (a fault of one host, fixed by removing the file)."""
    doc = yaml.safe_load(st.config_path.read_text())
    doc["rollout"] = rollout
    doc["health"].append({"command": "test ! -e {deploy_to}/shared/fail-$(head -n 1 REVISION)"})
    st.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))


def commit_of(st, tag: str) -> str:
    return subprocess.run(["git", "rev-parse", f"{tag}^{{commit}}"], cwd=st.repo, capture_output=True, text=True,
                          check=True).stdout.strip()


def break_host(st, host, tag: str):
    path = host.deploy_to / "shared" / f"fail-{commit_of(st, tag)}"
    path.write_text("broken on purpose\n")
    return path


def tags(st) -> dict:
    return {h.name: (st.revision(h) or [None, None])[1] for h in st.hosts}


def steps(result, step: str) -> list[str]:
    return [r.host for r in result.records if r.step == step and r.status != "failed"]


def registry(st) -> Registry:
    return Registry(json.loads((st.primary.deploy_to / ".deploykit" / "releases.json").read_text()))


def applied_migrations(st) -> list:
    return st.pg.execute(st.db, "SELECT app, name, applied FROM django_migrations ORDER BY id")


def test_batches_switch_in_order_and_the_cli_shows_each_host(stage_factory):
    st = stage_factory(3)
    configure(st, batches=[1, "50%", "100%"], pause="0.2s")
    first = api.release(st.config(), st.name, "v1.1")  # a first release rolls too (no old code to refuse for)
    assert first.ok, first.error
    cp = st.cli("release", "--stage", st.name, "--tag", "v1.6-additive")
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-2000:]
    assert tags(st) == {h.name: "v1.6-additive" for h in st.hosts}
    out = cp.stdout
    # batch headers, then the canary switched and gated before the others
    assert "batch 1/2: host1" in out and "batch 2/2: host2, host3" in out, out[-3000:]
    assert out.index("batch 1/2: host1") < out.index("gate") < out.index("batch 2/2")
    # the final table: every host done, in its batch
    table = out[out.rindex("rollout"):]
    for name, batch in (("host1", "1"), ("host2", "2"), ("host3", "2")):
        assert any(name in line and batch in line and "done" in line for line in table.splitlines()), table
    entry = registry(st).live()
    assert entry["tag"] == "v1.6-additive" and set(entry["rollout"]["hosts"].values()) == {"done"}
    # the migration ran once, before any switch, while v1.1 served
    journal = [json.loads(line) for line in open(sorted((st.repo / ".deploykit" / st.db).glob("*release*.jsonl"))[-1])]
    order = [(e.get("step"), e.get("host")) for e in journal if e.get("event") == "step"]
    assert order.index(("migrate", "host1")) < order.index(("switch_current", "host1"))


def test_a_migration_removing_a_field_is_refused_when_rolling_and_allowed_all_at_once(stage_factory):
    st = stage_factory(2)
    configure(st, batches=[1, "100%"])
    first = api.release(st.config(), st.name, "v1.2")
    assert first.ok, first.error
    before = st.tree(ignore_journal=True)
    cp = st.cli("release", "--stage", st.name, "--tag", "v1.6-drop-field")
    assert cp.returncode == 2, cp.stdout[-2000:] + cp.stderr[-2000:]
    assert "Remove field isbn from book" in cp.stderr and "--all-at-once" in cp.stderr, cp.stderr[-2000:]
    assert tags(st) == {h.name: "v1.2" for h in st.hosts}
    live = {k: v for k, v in st.tree(ignore_journal=True).items() if ":releases/" not in k and ":failed/" not in k
            and ":backups/" not in k and ":.deploykit" not in k}
    assert live == {k: v for k, v in before.items() if k in live}, "nothing live changed"
    cp = st.cli("release", "--stage", st.name, "--tag", "v1.6-drop-field", "--all-at-once", "--json")
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-2000:]
    events = [json.loads(line) for line in cp.stdout.splitlines() if line.startswith("{")]
    done = [(e.get("step"), e.get("host"), e.get("status")) for e in events if e.get("event") == "step"]
    stops = [i for i, (step, _, status) in enumerate(done) if step == "stop_processes" and status == "changed"]
    migrate = done.index(("migrate", "host1", "changed"))
    assert len(stops) == 2 and max(stops) < migrate, "every writer stopped during the migrate (downtime)"
    assert tags(st) == {h.name: "v1.6-drop-field" for h in st.hosts}
    assert not st.pg.execute(st.db, "SELECT 1 FROM information_schema.columns WHERE table_name = 'library_book' AND column_name = 'isbn'"), "removed"


def test_a_canary_that_fails_its_health_check_is_put_back_and_no_other_host_changes(stage_factory):
    st = stage_factory(3)
    configure(st, batches=[1, "100%"])
    first = api.release(st.config(), st.name, "v1.1")
    assert first.ok, first.error
    break_host(st, st.hosts[0], "v1.6-additive")  # the new release fails its health check on the canary
    others = {h.name: st.current_target(h) for h in st.hosts[1:]}
    pids = {h.name: st.supervisors[i].program_pid("web") for i, h in enumerate(st.hosts)}
    data = st.snapshot()
    res = api.release(st.config(), st.name, "v1.6-additive")
    assert not res.ok and res.failed_phase == "rollout", res.error
    assert res.recovery is not None and res.recovery.ok, res.recovery and res.recovery.error
    assert tags(st) == {h.name: "v1.1" for h in st.hosts}
    assert {h.name: st.current_target(h) for h in st.hosts[1:]} == others
    assert steps(res, "switch_current") == ["host1"], "only the canary was switched"
    assert [st.supervisors[i].program_pid("web") for i in (1, 2)] == [pids["host2"], pids["host3"]], "never restarted"
    assert res.data["rollout"]["hosts"] == {"host1": "back", "host2": "built", "host3": "built"}
    # the data is kept (the old code served it throughout); the additive migration stays applied (with the
    # content types and permissions of its new model): the rerun does not repeat it
    migration_rows = {"django_migrations", "auth_permission", "django_content_type"}
    rows = st.snapshot()["rows"]
    assert {t: v for t, v in rows.items() if t in data["rows"] and t not in migration_rows} == \
        {t: v for t, v in data["rows"].items() if t not in migration_rows}
    for h in st.hosts:
        assert st.get(h, "/health/")[0] == 200


def test_a_host_failing_in_the_second_batch_undoes_the_rollout_and_the_rerun_resumes(stage_factory):
    st = stage_factory(4)
    configure(st, batches=[1, "50%", "100%"], max_fail=0)
    first = api.release(st.config(), st.name, "v1.1")
    assert first.ok, first.error
    broken = break_host(st, st.hosts[2], "v1.6-additive")  # host3: batch 2
    res = api.release(st.config(), st.name, "v1.6-additive")
    assert not res.ok and res.failed_phase == "rollout", res.error
    assert "host3" in res.error.one_line()
    assert res.recovery.ok, res.recovery.error
    assert tags(st) == {h.name: "v1.1" for h in st.hosts}, "every switched host is back"
    assert res.data["rollout"]["hosts"] == {"host1": "back", "host2": "back", "host3": "back", "host4": "built"}
    assert steps(res, "switch_current") == ["host1", "host2", "host3"]
    for h in st.hosts:
        assert st.get(h, "/health/")[0] == 200
    # the data: kept as the old code left it, with the additive migration applied (the old code ignores it)
    migrations = applied_migrations(st)
    assert any(name == "0004_book_subtitle_loan" for _, name, _ in migrations)
    entry = registry(st).get(res.data["release_id"])
    assert entry["status"] == "failed" and entry["rollout"]["resumable"]
    broken.unlink()  # the host is fixed
    again = api.release(st.config(), st.name, "v1.6-additive")
    assert again.ok, again.error
    assert again.data["release_id"] == res.data["release_id"], "the same release, resumed"
    assert again.data["rollout"]["resumed_from"] == res.run_id
    kept = [r for r in again.records if r.step == "upload_code"]
    assert kept and all("kept (resumed)" in r.message for r in kept), [r.message for r in kept]
    migrate = [r for r in again.records if r.step == "migrate"]
    assert migrate and migrate[0].status == "ok" and "no migrations to apply" in migrate[0].message
    assert applied_migrations(st) == migrations, "no migration repeated"
    assert tags(st) == {h.name: "v1.6-additive" for h in st.hosts}


def test_within_max_fail_the_rollout_goes_on_and_the_rerun_resumes_only_the_failed_host(stage_factory):
    st = stage_factory(3)
    configure(st, batches=[1], max_fail=1)
    first = api.release(st.config(), st.name, "v1.1")
    assert first.ok, first.error
    broken = break_host(st, st.hosts[1], "v1.6-additive")
    cp = st.cli("release", "--stage", st.name, "--tag", "v1.6-additive")
    assert cp.returncode == 1, cp.stdout[-3000:] + cp.stderr[-2000:]
    assert "partly done" in cp.stderr and "host2" in cp.stderr, cp.stderr[-2000:]
    assert tags(st) == {"host1": "v1.6-additive", "host2": "v1.1", "host3": "v1.6-additive"}
    assert any("host2" in line and "back" in line for line in cp.stdout.splitlines()), cp.stdout[-2000:]
    broken.unlink()
    again = api.release(st.config(), st.name, "v1.6-additive")
    assert again.ok, again.error
    assert again.data["rollout"]["batches"] == [["host2"]], "only the unfinished host"
    assert steps(again, "switch_current") == ["host2"]
    assert tags(st) == {h.name: "v1.6-additive" for h in st.hosts}
    assert registry(st).live()["id"] == again.data["release_id"]


def test_an_interrupt_mid_rollout_puts_the_switched_hosts_back(stage_factory):
    st = stage_factory(2)
    configure(st, batches=[1, "100%"], pause="60s")
    first = api.release(st.config(), st.name, "v1.1")
    assert first.ok, first.error
    proc = subprocess.Popen(st.cli_argv("release", "--stage", st.name, "--tag", "v1.6-additive"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=st.env())
    deadline = time.monotonic() + 300
    while tags(st)["host1"] != "v1.6-additive" and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # in the pause after the canary
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-3000:] + err[-2000:]
    assert "ROLLED BACK" in err, err[-2000:]
    assert tags(st) == {h.name: "v1.1" for h in st.hosts}
    for h in st.hosts:
        assert st.get(h, "/health/")[0] == 200
    assert not (st.primary.deploy_to / ".deploykit" / "lock").exists()


def test_a_dry_run_of_a_rolling_release_shows_the_batches_and_changes_nothing(stage_factory):
    st = stage_factory(3)
    configure(st, batches=[1, "100%"])
    first = api.release(st.config(), st.name, "v1.1")
    assert first.ok, first.error
    before = st.tree(ignore_journal=True)
    cp = st.cli("release", "--stage", st.name, "--tag", "v1.6-additive", "--dry-run", "--batch", "2")
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr[-2000:]
    assert "batch 1/2: host1, host2" in cp.stdout and "batch 2/2: host3" in cp.stdout, cp.stdout[-3000:]
    assert st.tree(ignore_journal=True) == before
    bad = st.cli("release", "--stage", st.name, "--tag", "v1.6-additive", "--batch", "0")
    assert bad.returncode == 2 and "--batch 0" in bad.stderr, bad.stderr[-2000:]
    assert st.tree(ignore_journal=True) == before


def test_a_controller_killed_mid_rollout_is_finished_by_the_next_command_then_resumed(stage_factory):
    st = stage_factory(2)
    configure(st, batches=[1, "100%"], pause="60s")
    first = api.release(st.config(), st.name, "v1.1")
    assert first.ok, first.error
    proc = subprocess.Popen(st.cli_argv("release", "--stage", st.name, "--tag", "v1.6-additive"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=st.env())
    deadline = time.monotonic() + 300
    while tags(st)["host1"] != "v1.6-additive" and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    proc.kill()  # SIGKILL: nothing of the controller runs any more
    proc.communicate(timeout=60)
    assert tags(st)["host1"] == "v1.6-additive"
    again = st.cli("release", "--stage", st.name, "--tag", "v1.6-additive")
    # the dead run's procedure (rollout_undo) is run first: host1 back; then this run asks to be run again
    assert again.returncode == 1 and "rollout_undo" in again.stderr, again.stdout[-3000:] + again.stderr[-2000:]
    assert tags(st) == {h.name: "v1.1" for h in st.hosts}
    configure(st, batches=[1, "100%"])  # no pause
    last = api.release(st.config(), st.name, "v1.6-additive")
    assert last.ok, last.error
    assert last.data["rollout"]["resumed_from"] is not None
    assert tags(st) == {h.name: "v1.6-additive" for h in st.hosts}


def test_workers_around_the_migrate_stop_before_it_and_run_the_new_code_before_the_first_batch(stage_factory):
    st = stage_factory(3)
    doc = yaml.safe_load(st.config_path.read_text())
    doc["stages"][st.name]["hosts"][2]["roles"] = ["app", "worker"]  # the app's code, only its workers
    doc["processes"].append({"name": "worker", "on": "worker", "writes": True,
                             "start": "echo start $(head -n 1 {deploy_to}/current/REVISION) >> {deploy_to}/worker.log",
                             "stop": "echo stop >> {deploy_to}/worker.log"})
    st.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    configure(st, batches=[1], workers="around_migrate")
    first = api.release(st.config(), st.name, "v1.1")
    assert first.ok, first.error
    log = st.hosts[2].deploy_to / "worker.log"
    log.write_text("")
    res = api.release(st.config(), st.name, "v1.6-additive")
    assert res.ok, res.error
    assert res.data["rollout"]["batches"] == [["host1"], ["host2"]], "the worker host is not in a batch"
    order = [(r.step, r.host) for r in res.records if r.status != "skipped"]
    stop, migrate = order.index(("stop_processes", "host3")), order.index(("migrate", "host1"))
    switch, start = order.index(("switch_current", "host3")), order.index(("start_processes", "host3"))
    assert stop < migrate < switch < start < order.index(("switch_current", "host1"))
    assert log.read_text().split("\n")[:2] == ["stop", f"start {commit_of(st, 'v1.6-additive')}"], log.read_text()
    assert ("restart_processes", "host3") not in order
    assert tags(st)["host3"] == "v1.6-additive"
