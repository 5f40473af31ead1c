"""work/snapshots.py: which clone speed the budget is judged with (pure, the registry read from a fake host)."""
from __future__ import annotations

from types import SimpleNamespace

from deploykit.work.snapshots import DEFAULT_SPEED, clone_speed


class RegistryHost:
    def __init__(self, releases):
        self.releases = releases

    def read_json(self, path):
        return {"releases": self.releases}

    def path(self, *parts):
        return "/srv/" + "/".join(parts)

    deploy_to = "/srv"


GB = 1 << 30


def test_the_newest_measured_clone_counts_even_when_an_older_release_is_live():
    releases = [{"id": "20261101T000000Z-aaa", "status": "live", "clone_speed": {"bytes": 10 << 20, "seconds": 1}},
                {"id": "20261102T000000Z-bbb", "status": "rolled-back",
                 "clone_speed": {"bytes": 3 * GB, "seconds": 6}}]
    ctx = SimpleNamespace(previous=releases[0])
    speed, said = clone_speed(ctx, RegistryHost(releases))
    assert speed == 3 * GB / 6 and "measured" in said


def test_without_a_host_or_a_measurement_the_live_entry_or_the_default_speaks():
    small = {"id": "20261101T000000Z-aaa", "clone_speed": {"bytes": 10 << 20, "seconds": 1}}
    assert clone_speed(SimpleNamespace(previous=small))[0] == DEFAULT_SPEED  # too small to tell
    assert clone_speed(SimpleNamespace(previous=None), RegistryHost([]))[1].endswith("(no clone measured on this stage yet)")
