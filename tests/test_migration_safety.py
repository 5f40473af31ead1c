"""`deploykit plan` on a real sshd host with the sample project and PostgreSQL: each migration operation from the
live release to a tag, classified for a release while the old code still serves; nothing changes anywhere."""
from __future__ import annotations

import json

from deploykit import api
from deploykit.work.migration_safety import unsafe_operations


def last_json(cp) -> dict:
    return json.loads(cp.stdout.strip().splitlines()[-1])


def ops(plan) -> list[tuple]:
    return [(s["name"], o["operation"], o["classification"]) for s in plan["steps"] for o in s["operations"]]


def test_plan_names_a_removed_field_unsafe_and_an_additive_tag_safe_and_changes_nothing(stage_factory):
    st = stage_factory(1)
    cfg = st.config()
    assert api.release(cfg, st.name, "v1.1").ok
    before, data = st.tree(ignore_journal=True), st.snapshot()
    bad = st.cli("plan", "--stage", st.name, "--tag", "v9.9")
    assert bad.returncode == 2 and "unknown tag 'v9.9'" in bad.stderr, bad.stderr[-2000:]

    # v1.6-drop-field's code is not on the host: classified from a checkout on the controller
    cp = st.cli("plan", "--stage", st.name, "--tag", "v1.6-drop-field", "--json")
    assert cp.returncode == 0, cp.stderr[-3000:]
    doc = last_json(cp)
    assert doc["command"] == "plan" and doc["ok"] and doc["code"] == 0 and doc["source"]["where"] == "controller"
    assert doc["from"]["tag"] == "v1.1" and doc["to"]["tag"] == "v1.6-drop-field"
    assert ops(doc) == [("0004_book_isbn", "AddField", "unsafe"), ("0005_remove_book_isbn", "RemoveField", "unsafe")]
    remove = doc["steps"][1]["operations"][0]
    assert remove["describe"] == "Remove field isbn from book" and "drops column library_book.isbn" in remove["why"]
    assert (remove["lock"], remove["held"], remove["rewrite"]) == ("ACCESS EXCLUSIVE", "brief", False)
    assert [(u["migration"], u["operation"]) for u in doc["unsafe"]] == [
        ("0004_book_isbn", "AddField"), ("0005_remove_book_isbn", "RemoveField")]

    text = st.cli("plan", "--stage", st.name, "--tag", "v1.6-drop-field")  # the table, for people
    assert text.returncode == 0, text.stderr[-3000:]
    assert "Remove field isbn from book" in text.stdout and "unsafe" in text.stdout
    assert "ACCESS EXCLUSIVE, brief; no rewrite" in text.stdout and "--all-at-once" in text.stdout
    assert "nothing was changed" in text.stdout.splitlines()[-1]

    additive = api.plan(cfg, st.name, "v1.6-additive")
    assert additive["source"]["where"] == "controller"
    assert ops(additive) == [("0004_book_subtitle_loan", "AddField", "safe"),
                             ("0004_book_subtitle_loan", "CreateModel", "safe")]
    assert additive["classification"] == "safe" and unsafe_operations(additive) == []
    assert st.tree(ignore_journal=True) == before and st.snapshot() == data

    # once a release of v1.6-additive was made (and rolled back), its code on the host classifies, against the
    # real database: the same verdicts, and SQL with the database's own constraint names
    assert api.release(cfg, st.name, "v1.6-additive").ok
    assert api.rollback(cfg, st.name, to_tag="v1.1").ok
    on_host = api.plan(cfg, st.name, "v1.6-additive")
    assert on_host["source"]["where"] == "host" and on_host["source"]["release_dir"].endswith(
        [r for r in json.loads((st.primary.deploy_to / ".deploykit" / "releases.json").read_text())["releases"]
         if r["tag"] == "v1.6-additive"][0]["id"])
    assert ops(on_host) == ops(additive)
    assert [o["sql"] for s in on_host["steps"] for o in s["operations"]] == \
        [o["sql"] for s in additive["steps"] for o in s["operations"]]

    live = api.plan(cfg, st.name, "v1.1")  # the live release itself: nothing to migrate
    assert live["steps"] == [] and live["classification"] == "safe" and live["source"]["where"] == "host"
