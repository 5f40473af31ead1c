"""Pure rollback planning: which release, and each app's migration target."""
import pytest

from deploykit.planning import PlanError, find_target, migration_targets

R = [
    {"id": "r1", "commit": "aaa111", "tags": ["v1.0"], "status": "superseded", "previous": None},
    {"id": "r2", "commit": "abb222", "tags": ["v1.1"], "status": "failed", "previous": "r1"},
    {"id": "r3", "commit": "bcc333", "tags": ["v1.2"], "status": "superseded", "previous": "r1"},
    {"id": "r4", "commit": "cdd444", "tags": ["v1.3"], "status": "live", "previous": "r3"},
]


def test_targets_by_tag_commit_release_and_default():
    live = R[3]
    assert find_target(R, live)["id"] == "r3"
    assert find_target(R, live, tag="v1.0")["id"] == "r1"
    assert find_target(R, live, tag="renamed", tag_commit="aaa111")["id"] == "r1"
    assert find_target(R, live, commit="bc")["id"] == "r3"
    assert find_target(R, live, release_id="r1")["id"] == "r1"


@pytest.mark.parametrize("kwargs, words", [
    ({"tag": "v1.1"}, "never released"),            # failed: never went live
    ({"tag": "v1.3"}, "never released"),            # the live one
    ({"commit": "a"}, "ambiguous"),                 # aaa111 and abb222
    ({"commit": "ffff"}, "no release of a commit"),
    ({"release_id": "r2"}, "never went live"),
    ({"release_id": "r4"}, "is the live release"),
    ({"release_id": "r9"}, "no release 'r9'"),
])
def test_bad_targets(kwargs, words):
    with pytest.raises(PlanError, match=words):
        find_target(R, R[3], **kwargs)


def test_migration_targets():
    now = {"library": ["0001", "0002", "0003", "0004"], "auth": ["0001"], "extra": ["0001"]}
    then = {"library": ["0001"], "auth": ["0001"]}
    assert migration_targets(now, then) == [("extra", None), ("library", "0001")]
    assert migration_targets(then, then) == []
    # the target had a migration that is not applied now: left to the forward migrate
    assert migration_targets({"library": ["0001"]}, {"library": ["0001", "0002"]}) == []
    # diverged: back to the last common one
    assert migration_targets({"a": ["0001", "0002x"]}, {"a": ["0001", "0002y"]}) == [("a", "0001")]
