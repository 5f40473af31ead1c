"""remote/django_columns.py inside the sample project's manage.py, on a real sshd host with PostgreSQL.

The refresh resolves `app_label.Model.field` rules and classifies columns from
this answer, so it must name the tables and columns the database really has.
tests/data/sample_columns.json is this answer for v1.2, and sample_db_columns.json
what deploykit.anonymize.DB_COLUMNS_SQL answers for its database (the unit tests of
deploykit.anonymize use both); the test below says when it has drifted, and
DK_WRITE_FIXTURES=1 writes it again.
"""
from __future__ import annotations

import json
import os
import types
from pathlib import Path

from deploykit import api, djangoapp, layout
from deploykit.anonymize import DB_COLUMNS_SQL
from deploykit.transport.host import make_host

DATA = Path(__file__).resolve().parent / "data"
FIXTURE = DATA / "sample_columns.json"
DB_FIXTURE = DATA / "sample_db_columns.json"  # DB_COLUMNS_SQL's answer for the same database


def _projection(doc: dict) -> list:
    return [(m["label"], m["db_table"], m["auto_created"], m["user_model"],
             [(f["name"], f["column"], f["classes"], f["internal_type"], f["db_type"], f["unique"], f["null"],
               f["max_length"], f["related_model"]) for f in m["fields"]]) for m in doc["models"]]


def test_columns_names_every_table_and_column_of_the_database(stage_factory):
    st = stage_factory(1)
    cfg = st.config()
    assert api.release(cfg, st.name, "v1.2").ok
    host = make_host(cfg.stage(st.name)[0], cfg)
    ctx = types.SimpleNamespace(config=cfg)
    try:
        doc = djangoapp.model_columns(ctx, host, layout.current(host))
        again = djangoapp.model_columns(ctx, host, layout.current(host))  # the same session answers again
        assert set(host._sessions) == {("django", layout.current(host), "django_columns")}
    finally:
        host.close()
    assert doc["ok"] and not doc["changed"] and again["models"] == doc["models"]
    assert doc["user_model"] == "auth.User"
    models = {m["label"]: m for m in doc["models"]}
    user = models["auth.User"]
    assert user["user_model"] and user["db_table"] == "auth_user" and user["managed"]
    assert not any(m["user_model"] for label, m in models.items() if label != "auth.User")
    email = next(f for f in user["fields"] if f["name"] == "email")
    assert email["classes"][:2] == ["EmailField", "CharField"] and email["db_type"] == "varchar(254)"
    # the auto-created m2m table, a foreign key's column, no proxy
    through = models["auth.User_groups"]
    assert through["auto_created"] and through["db_table"] == "auth_user_groups"
    assert [(f["name"], f["column"], f["related_model"]) for f in through["fields"]] == [
        ("id", "id", None), ("user", "user_id", "auth.User"), ("group", "group_id", "auth.Group")]
    book = {f["name"]: f for f in models["library.Book"]["fields"]}
    assert (book["author"]["attname"], book["author"]["internal_type"]) == ("author_id", "ForeignKey")
    assert book["id"]["primary_key"] and book["id"]["unique"] and book["genre"]["null"]
    assert book["created"]["auto_now"] and not book["title"]["auto_now"]
    # every model's table and column is in the migrated database, and every table there is a model's
    with st.pg.connect(st.db) as conn:
        rows = conn.execute("SELECT table_name, column_name FROM information_schema.columns "
                            "WHERE table_schema = 'public'").fetchall()
    in_db: dict[str, set] = {}
    for table, column in rows:
        in_db.setdefault(table, set()).add(column)
    for m in doc["models"]:
        assert {f["column"] for f in m["fields"]} == in_db[m["db_table"]], m["label"]
    assert set(in_db) - {m["db_table"] for m in doc["models"]} == {"django_migrations"}
    # what the database says of the same columns: types, lengths, NULLs, single-column unique indexes
    with st.pg.connect(st.db) as conn:
        db_columns = conn.execute(DB_COLUMNS_SQL).fetchone()[0]
    assert set(db_columns) == set(in_db)
    cols = {c["column"]: c for c in db_columns["auth_user"]}
    assert [c["column"] for c in db_columns["auth_user"]] == [f["column"] for f in user["fields"]]
    assert cols["username"]["unique"] and cols["id"]["unique"] and not cols["email"]["unique"]
    assert (cols["email"]["data_type"], cols["email"]["max_length"]) == ("character varying", 254)
    assert cols["last_login"]["nullable"] and not cols["email"]["nullable"]
    through = {c["column"]: c for c in db_columns["auth_user_groups"]}
    assert not through["user_id"]["unique"]  # unique together with group_id, not alone
    if os.environ.get("DK_WRITE_FIXTURES") == "1":
        DATA.mkdir(exist_ok=True)
        FIXTURE.write_text(json.dumps({k: doc[k] for k in ("user_model", "models")}, indent=1) + "\n")
        DB_FIXTURE.write_text(json.dumps(db_columns, indent=1, sort_keys=True) + "\n")
    drifted = "tests/data/ drifted from the sample project: run this test with DK_WRITE_FIXTURES=1"
    assert _projection(json.loads(FIXTURE.read_text())) == _projection(doc), drifted
    assert json.loads(DB_FIXTURE.read_text()) == db_columns, drifted
