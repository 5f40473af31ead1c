"""The stage lock: one run at a time; `unlock` frees a stale one and says whose it was."""
from __future__ import annotations

import threading
import time

from deploykit import api
from deploykit.transport.host import make_host


def test_second_release_refused_while_locked_then_unlock(stage_factory):
    st = stage_factory(1)
    cfg = st.config()
    assert api.release(cfg, st.name, "v1.0").ok
    lock = st.primary.deploy_to / ".deploykit" / "lock"

    results = []
    first = threading.Thread(target=lambda: results.append(api.release(cfg, st.name, "v1.1")))
    first.start()
    deadline = time.monotonic() + 60
    while not lock.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lock.exists()
    second = st.cli("release", "--host", st.name, "--tag", "v1.2")
    first.join()

    assert second.returncode != 0
    assert "locked by run" in second.stderr and "invoke unlock" in second.stderr
    assert results[0].ok, results[0].error
    assert st.get(st.primary, "/")[1]["version"] == "1.1"
    assert not lock.exists()

    # a lock of a run on another controller that still beats: it cannot be proven gone
    host = make_host(cfg.stage(st.name)[0], cfg)
    host.helper("locks", "lock_acquire", {"path": str(lock), "info": {"run_id": "crashed-run", "command": "release",
                                                                      "user": "ops", "controller": "laptop"}})
    host.close()
    refused = st.cli("release", "--host", st.name, "--tag", "v1.2")
    assert refused.returncode != 0 and "crashed-run" in refused.stderr

    # unlock shows the holder and refuses it while it may be alive; --force frees it
    kept = st.cli("unlock", "--host", st.name)
    assert kept.returncode == 2 and "crashed-run" in kept.stderr and "--force" in kept.stderr, kept.stderr
    assert lock.exists()
    freed = st.cli("unlock", "--host", st.name, "--force")
    assert freed.returncode == 0, freed.stderr
    assert "crashed-run" in freed.stdout and "since" in freed.stdout and "ops@laptop" in freed.stdout
    assert not lock.exists()
    assert st.cli("release", "--host", st.name, "--tag", "v1.2").returncode == 0
    assert st.get(st.primary, "/")[1]["version"] == "1.2"
