"""Each release's own Python environment, end to end: real sshd hosts, PostgreSQL, gunicorn from current/.venv.

A recovery and a rollback bring back the environment with the code: `pip
freeze` of `current/.venv/bin/python` is what it was when that release was
live, and the app serves with that release's dk-sample-extra.
"""
from __future__ import annotations

import json

from deploykit import api


def registry(host) -> list[dict]:
    return json.loads((host.deploy_to / ".deploykit" / "releases.json").read_text())["releases"]


def env_steps(result) -> dict[str, tuple[float, str]]:
    return {r.host: (r.seconds, r.message) for r in result.records if r.step == "release_env"}


def serves(st, host) -> tuple[str, str]:
    status, body = st.get(host, "/env/")
    assert status == 200, body
    return st.get(host, "/")[1]["version"], body["packages"]["dk-sample-extra"]


def test_freeze_follows_recovery_and_rollback(stage_factory, capsys):
    st = stage_factory(2, keep_releases=2)
    cfg = st.config()
    freezes, timings = {}, {}
    for tag in ("v1.0", "v1.1"):
        result = api.release(cfg, st.name, tag)
        assert result.ok, result.error
        timings[tag] = env_steps(result)
        freezes[tag] = {h.name: st.freeze(h) for h in st.hosts}
        for h in st.hosts:
            assert serves(st, h) == (tag[1:], tag[1:])
            status, body = st.get(h, "/env/")
            assert body["prefix"] == str(h.deploy_to / "current" / ".venv")  # gunicorn runs in the release's env
    assert all("built" in msg for _, msg in timings["v1.1"].values())
    assert freezes["v1.0"] != freezes["v1.1"]
    assert "dk-sample-extra==1.1" in freezes["v1.1"]["host1"] and "Django==" in " ".join(freezes["v1.1"]["host1"])
    # the registry keeps, per host, the key and both freezes (the full one is exactly what pip freeze says)
    v10, v11 = registry(st.primary)
    for h in st.hosts:
        rec = v11["env"][h.name]
        assert rec["own_freeze"] == ["dk-sample-extra==1.1"] and rec["freeze"] == freezes["v1.1"][h.name]
        assert rec["key"] != v10["env"][h.name]["key"] and len(rec["key"]) == 64
        assert (h.deploy_to / "releases" / v11["id"] / ".venv").readlink() == h.deploy_to / "venvs" / rec["key"]
        assert (h.deploy_to / "venvs" / rec["key"] / ".deploykit-complete").is_file()

    broken = api.release(cfg, st.name, "v1.3-broken-health")  # pins dk-sample-extra 1.3; its health check fails

    assert not broken.ok and broken.recovered and broken.failed_phase == "verify"
    failed = registry(st.primary)[-1]
    assert failed["status"] == "failed" and failed["env"]["host1"]["own_freeze"] == ["dk-sample-extra==1.3"]
    for h in st.hosts:
        assert st.freeze(h) == freezes["v1.1"][h.name]
        assert serves(st, h) == ("1.1", "1.1")

    # v1.2 has v1.1's requirements: the same environment, reused; keep_releases prunes v1.0 and its env
    result = api.release(cfg, st.name, "v1.2")
    assert result.ok, result.error
    timings["v1.2 (unchanged requirements)"] = env_steps(result)
    v12 = registry(st.primary)[-1]
    for h in st.hosts:
        seconds, message = timings["v1.2 (unchanged requirements)"][h.name]  # printed below, never asserted
        assert "reused" in message, message
        assert v12["env"][h.name]["key"] == v11["env"][h.name]["key"]  # the same environment, not a new one
        assert (h.deploy_to / "releases" / v12["id"] / ".venv").readlink() == h.deploy_to / "venvs" / v11["env"][h.name]["key"]
        assert not (h.deploy_to / "venvs" / v10["env"][h.name]["key"]).exists()
        assert not (h.deploy_to / "venvs" / failed["env"][h.name]["key"]).exists()
        assert serves(st, h) == ("1.2", "1.1")

    cp = st.cli("rollback", "--host", st.name, "--to-tag", "v1.0")

    assert cp.returncode == 0, cp.stdout + cp.stderr
    rollback_env = [line for line in cp.stdout.splitlines() if "ensure_target_code" in line]
    for h in st.hosts:
        assert st.freeze(h) == freezes["v1.0"][h.name]
        assert serves(st, h) == ("1.0", "1.0")
        # rebuilt from its recorded freeze, at the same key
        assert (h.deploy_to / "current" / ".venv").resolve() == h.deploy_to / "venvs" / v10["env"][h.name]["key"]
    with capsys.disabled():
        for what, per_host in timings.items():
            print(f"\nrelease_env {what}: " + "; ".join(f"{h} {s:.2f} s ({m})" for h, (s, m) in per_host.items()))
        print("rollback to v1.0 (env pruned, rebuilt):", " | ".join(" ".join(line.split()) for line in rollback_env))
