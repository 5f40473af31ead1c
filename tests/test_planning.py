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


# -- plans that follow Django's graph (squashes included) -------------------------------

from deploykit.planning import (  # noqa: E402
    applied_then, forbidden_unapplies, graph_targets, nodes_applied_in, recorded_keys, unexplained_noop,
    unknown_target_state)

WAGTAIL = [f"{i:04d}_step{i}" for i in range(1, 97)]          # 0001 .. 0096 as first written
SQUASH = "0001_squashed_0016_step16"                           # wagtail 2.x squashed 0001-0016, files deleted


def wagtail_graph(applied: list[str] | None = None) -> dict:
    """The newer code's graph, as the helper's `graph` action reports it: one squash node, then 0017..0096."""
    nodes = [SQUASH] + WAGTAIL[16:]
    return {"nodes": {"wagtailcore": nodes, "auth": ["0001_initial"]},
            "replaces": {"wagtailcore": {SQUASH: [["wagtailcore", n] for n in WAGTAIL[:16]]}},
            "applied": {"wagtailcore": applied if applied is not None else nodes, "auth": ["0001_initial"]}}


def backwards(app: str, names: list[str], graph: dict | None = None) -> list[dict]:
    """Plan steps as MigrationExecutor orders them (newest first), squash steps with their `replaces`."""
    rep = (graph or {}).get("replaces", {}).get(app, {})
    return [{"app": app, "name": n, "backwards": True, "replaces": rep.get(n, [])} for n in reversed(names)]


@pytest.mark.parametrize("recorded", [
    # recorded before the squash existed: 0001..0040 by name
    {"migrations": {"wagtailcore": WAGTAIL[:40], "auth": ["0001_initial"]}},
    # the old recorder's order: nodes by graph order, replaced names (no longer nodes) last
    {"migrations": {"wagtailcore": [SQUASH] + WAGTAIL[16:40] + WAGTAIL[:16], "auth": ["0001_initial"]}},
    # the graph-aware recorder: the squash is one node, what it replaced kept aside
    {"migrations": {"wagtailcore": [SQUASH] + WAGTAIL[16:40], "auth": ["0001_initial"]},
     "replaced": {"wagtailcore": WAGTAIL[:16]}},
])
def test_target_predating_a_squash_unapplies_only_what_came_since(recorded):
    graph = wagtail_graph()
    assert ("wagtailcore", SQUASH) in nodes_applied_in(graph, recorded_keys(recorded))
    targets = graph_targets(graph, recorded)
    assert targets == [("wagtailcore", WAGTAIL[39])]  # 0040: the latest node applied then
    plan = backwards("wagtailcore", WAGTAIL[40:])
    assert len(plan) == 56  # not 174, not "everything"
    assert forbidden_unapplies(plan, graph, recorded) == []
    assert unexplained_noop(plan, graph, {"migrations": graph["applied"]}, recorded) == []


def test_unapplying_everything_is_refused():
    """A plan that would unapply what the target had (the squash, its replaced migrations) is refused."""
    graph = wagtail_graph()
    target = {"migrations": {"wagtailcore": WAGTAIL[:40], "auth": ["0001_initial"]}}
    everything = backwards("wagtailcore", [SQUASH] + WAGTAIL[16:], graph)
    bad = forbidden_unapplies(everything, graph, target)
    assert f"wagtailcore.{SQUASH} (replaces wagtailcore.{WAGTAIL[0]}" in bad[-1]
    assert "wagtailcore.0040_step40" in bad and "wagtailcore.0041_step41" not in bad and len(bad) == 25


def test_target_only_part_of_a_squash_cannot_be_reached_with_the_squashed_code():
    """The target applied 0001..0010; the newer code only knows the squash of 0001..0016: refused, not guessed."""
    graph = wagtail_graph()
    target = {"migrations": {"wagtailcore": WAGTAIL[:10], "auth": ["0001_initial"]}}
    assert graph_targets(graph, target) == [("wagtailcore", None)]
    plan = backwards("wagtailcore", [SQUASH] + WAGTAIL[16:], graph)
    bad = forbidden_unapplies(plan, graph, target)
    assert bad == [f"wagtailcore.{SQUASH} (replaces {', '.join('wagtailcore.' + n for n in WAGTAIL[:10])})"]


def test_new_app_goes_to_zero_and_forward_only_migrations_are_left_alone():
    graph = {"nodes": {"library": ["0001_squashed_0004_book_isbn", "0005_book_edition"],
                       "dk_shelf": ["0001_squashed_0003_shelf_label", "0004_shelf_colour"]},
             "replaces": {"library": {"0001_squashed_0004_book_isbn": [["library", f"000{i}_x"] for i in range(1, 5)]}},
             "applied": {"library": ["0001_squashed_0004_book_isbn", "0005_book_edition"],
                         "dk_shelf": ["0001_squashed_0003_shelf_label", "0004_shelf_colour"]}}
    v12 = {"migrations": {"library": [f"000{i}_x" for i in range(1, 5)]}}
    assert graph_targets(graph, v12) == [("dk_shelf", None), ("library", "0001_squashed_0004_book_isbn")]
    assert ("library", "0002_x") in applied_then(graph, v12)
    # a target with a migration not applied now (another branch): not unapplied, not a reason to refuse
    assert graph_targets({"nodes": {"a": ["0001"]}, "applied": {"a": ["0001"]}},
                         {"migrations": {"a": ["0001", "0002y"]}}) == []


def test_empty_plan_while_records_differ_is_explained_or_refused():
    graph = {"nodes": {"library": ["0001", "0002", "0003"]}, "applied": {}}  # the database the helper sees: empty
    live = {"migrations": {"library": ["0001", "0002", "0003"]}}
    target = {"migrations": {"library": ["0001"]}}
    assert graph_targets(graph, target) == []
    assert unexplained_noop([], graph, live, target) == ["library.0002", "library.0003"]
    assert unexplained_noop([], graph, target, target) == []
    assert unexplained_noop(backwards("library", ["0002"]), graph, live, target) == []
    # a target recorded with no migration at all (against another database) must not mean "unapply everything"
    assert unknown_target_state({"applied": {"library": ["0001"]}}, {"migrations": {}})
    assert not unknown_target_state({"applied": {}}, {"migrations": {}})
    assert not unknown_target_state({"applied": {"library": ["0001"]}}, target)
