"""The classifier of migration operations for a rolling release, on Django's own operation objects (no host).

Django is set up in this process with a PostgreSQL database that cannot be
reached: the SQL of each operation is written as on the controller
(remote/_migsafety.write_without_database), nothing connects. The lock facts
of _pglocks are checked on SQL text. The helper itself, run as a program on a
checkout of the sample project, is checked last.
"""
from __future__ import annotations

import ast
import collections
import json
import os
import subprocess
import sys

import git
import pytest

from deploykit.errors import PreflightFailed, UnsafeForRollingRelease
from deploykit.transport.bundle import helper_modules, helper_source, load_helper
from deploykit.work.migration_safety import refuse_unsafe, unsafe_operations
from deploykit_testing.samplerepo import archive_tag

pglocks = load_helper("_pglocks")
ms = load_helper("_migsafety")

HINT = ("--all-at-once (downtime: processes stopped during migrate) or split it over two releases "
        "(expand, then contract)")


@pytest.fixture(scope="module")
def dj():
    """Django with an unreachable PostgreSQL (a socket directory that does not exist), SQL written offline."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(INSTALLED_APPS=[], USE_TZ=True, DATABASES={"default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": "dk_unit", "HOST": "/nonexistent/deploykit-unit"}})
        django.setup()
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("Django is already set up in this process with another database")
    ms.write_without_database(connection)
    return connection


def base_state():
    """app.Author and app.Book (title, isbn NOT NULL, author FK), as migrations made them earlier."""
    from django.db import migrations, models
    from django.db.migrations.state import ProjectState

    state = ProjectState()
    for op in (
        migrations.CreateModel("Author", [("id", models.BigAutoField(primary_key=True)),
                                          ("name", models.CharField(max_length=100))]),
        migrations.CreateModel("Book", [("id", models.BigAutoField(primary_key=True)),
                                        ("title", models.CharField(max_length=50)),
                                        ("isbn", models.CharField(max_length=20, default="", blank=True)),
                                        ("pages", models.IntegerField(default=0)),
                                        ("subtitle", models.CharField(max_length=50, null=True)),
                                        ("author", models.ForeignKey("app.Author", models.CASCADE))]),
    ):
        op.state_forwards("app", state)
    return state


def judge(connection, *ops):
    """Each operation analysed in turn from base_state (a plan of one migration)."""
    state, new = base_state(), set()
    return [ms.analyse_operation(op, "app", state, connection, new, i, atomic=False) for i, op in enumerate(ops, 1)]


def one(connection, op):
    return judge(connection, op)[0]


# -- _pglocks: PostgreSQL's locks from the SQL text ------------------------------------------------------------

@pytest.mark.parametrize("sql, lock, held, rewrite", [
    ('ALTER TABLE "t" ADD COLUMN "c" varchar(20) NULL', "ACCESS EXCLUSIVE", "brief", False),
    ("ALTER TABLE \"t\" ADD COLUMN \"c\" varchar(20) DEFAULT 'x' NOT NULL", "ACCESS EXCLUSIVE", "brief", False),
    ('ALTER TABLE "t" ADD COLUMN "c" timestamptz DEFAULT now() NOT NULL', "ACCESS EXCLUSIVE", "brief", False),
    ('ALTER TABLE "t" ADD COLUMN "c" uuid DEFAULT gen_random_uuid() NOT NULL', "ACCESS EXCLUSIVE", "rewrite", True),
    ('ALTER TABLE "t" ADD COLUMN "c" integer GENERATED ALWAYS AS ("a" * 2) STORED', "ACCESS EXCLUSIVE", "rewrite",
     True),
    ('ALTER TABLE "t" ALTER COLUMN "c" TYPE bigint USING "c"::bigint', "ACCESS EXCLUSIVE", "rewrite", True),
    ('ALTER TABLE "t" ALTER COLUMN "c" SET NOT NULL', "ACCESS EXCLUSIVE", "scan", False),
    ('ALTER TABLE "t" ALTER COLUMN "c" DROP NOT NULL', "ACCESS EXCLUSIVE", "brief", False),
    ('CREATE INDEX "i" ON "t" ("c")', "SHARE", "build", False),
    ('CREATE UNIQUE INDEX CONCURRENTLY "i" ON "t" ("c")', "SHARE UPDATE EXCLUSIVE", "build", False),
    ('ALTER TABLE "t" ADD CONSTRAINT "u" UNIQUE ("c")', "ACCESS EXCLUSIVE", "build", False),
    ('ALTER TABLE "t" ADD CONSTRAINT "u" UNIQUE USING INDEX "i"', "ACCESS EXCLUSIVE", "brief", False),
    ('ALTER TABLE "t" ADD CONSTRAINT "k" CHECK ("c" > 0)', "ACCESS EXCLUSIVE", "scan", False),
    ('ALTER TABLE "t" ADD CONSTRAINT "k" CHECK ("c" > 0) NOT VALID', "ACCESS EXCLUSIVE", "brief", False),
    ('ALTER TABLE "t" ADD CONSTRAINT "f" FOREIGN KEY ("a_id") REFERENCES "a" ("id") DEFERRABLE INITIALLY DEFERRED',
     "SHARE ROW EXCLUSIVE", "scan", False),
    ('ALTER TABLE "t" VALIDATE CONSTRAINT "f"', "SHARE UPDATE EXCLUSIVE", "scan", False),
    ('ALTER TABLE "t" DROP COLUMN "c" CASCADE', "ACCESS EXCLUSIVE", "brief", False),
    ('ALTER TABLE "t" SET TABLESPACE "fast"', "ACCESS EXCLUSIVE", "rewrite", True),
    ('UPDATE "t" SET "c" = 0 WHERE "c" IS NULL', "ROW EXCLUSIVE", "rows", False),
])
def test_each_statement_takes_the_lock_postgresql_documents(sql, lock, held, rewrite):
    summary = pglocks.summarize(pglocks.statement_facts(sql))
    assert (summary["lock"], summary["held"], summary["rewrite"]) == (lock, held, rewrite), summary
    assert summary["tables"][0] == "t"


def test_what_a_statement_takes_away_from_the_old_code_is_named():
    breaks = lambda sql: pglocks.summarize(pglocks.statement_facts(sql))["breaks"]  # noqa: E731
    assert breaks('ALTER TABLE "t" DROP COLUMN "c"') == ["drops a column"]
    assert breaks('ALTER TABLE "t" RENAME COLUMN "a" TO "b"') == ["renames a column"]
    assert breaks('ALTER TABLE "t" RENAME TO "u"') == ["renames the table"]
    assert breaks('DROP TABLE "t" CASCADE') == ["drops the table"]
    # keywords inside a literal or a comment are no statement
    assert breaks("UPDATE \"t\" SET \"note\" = 'ALTER TABLE x DROP COLUMN y' -- DROP TABLE t") == []
    assert pglocks.statement_facts('ALTER TABLE "t" ADD COLUMN "c" integer NOT NULL')[0]["fails_with_rows"]


def test_statements_are_split_and_the_worst_lock_comes_first():
    sql = ('ALTER TABLE "t" ADD COLUMN "a_id" bigint NULL CONSTRAINT "f" REFERENCES "a"("id") DEFERRABLE INITIALLY '
           'DEFERRED; SET CONSTRAINTS "f" IMMEDIATE;')
    parts = pglocks.split_statements(sql)
    assert len(parts) == 2 and parts[1].startswith("SET CONSTRAINTS")
    facts = [f for p in parts + ['CREATE INDEX "t_a" ON "t" ("a_id")'] for f in pglocks.statement_facts(p)]
    summary = pglocks.summarize(facts)
    # the index build (writes wait for it) hurts more than the brief ACCESS EXCLUSIVE of the ADD COLUMN
    assert (summary["lock"], summary["held"], summary["strongest"]) == ("SHARE", "build", "ACCESS EXCLUSIVE")
    assert set(summary["tables"]) == {"t", "a"}
    assert pglocks.describe_lock(summary) == "SHARE while the index builds (writes wait); ACCESS EXCLUSIVE, brief"
    # on a table created in the plan nothing counts; the foreign key's target is still locked, briefly
    new = pglocks.summarize(facts, new_tables={"t"})
    assert (new["lock"], new["held"], new["tables"]) == ("SHARE ROW EXCLUSIVE", "brief", ["a"])
    unknown = pglocks.summarize(pglocks.statement_facts("VACUUM FULL t"))
    assert unknown["unknown"] == 1 and unknown["lock"] is None


# -- the classifier, operation by operation --------------------------------------------------------------------

def cases():
    from django.contrib.postgres.operations import AddIndexConcurrently
    from django.db import migrations, models

    return [
        ("add nullable", migrations.AddField("book", "note", models.TextField(null=True)), "safe",
         "ACCESS EXCLUSIVE, brief", "nullable column app_book.note"),
        ("add db_default", migrations.AddField("book", "copies", models.IntegerField(db_default=1)), "safe",
         "ACCESS EXCLUSIVE, brief", "database default"),
        ("add with a Python default", migrations.AddField("book", "lang", models.CharField(max_length=5, default="en")),
         "unsafe", "ACCESS EXCLUSIVE, brief", "drops the column default once the rows are filled"),
        ("add with a one-off default", migrations.AddField("book", "copies", models.IntegerField(default=1),
                                                           preserve_default=False),
         "unsafe", "ACCESS EXCLUSIVE, brief", "a one-off default fills the existing rows"),
        ("add NOT NULL, no default", migrations.AddField("book", "copies", models.IntegerField()), "unsafe",
         "ACCESS EXCLUSIVE, brief", "fails on a table with rows"),
        ("add a nullable foreign key", migrations.AddField("book", "editor", models.ForeignKey(
            "app.Author", models.SET_NULL, null=True, related_name="+")), "review",
         "SHARE while the index builds (writes wait); ACCESS EXCLUSIVE, brief", "AddIndexConcurrently"),
        ("create a table", migrations.CreateModel("Loan", [("id", models.BigAutoField(primary_key=True)),
                                                           ("book", models.ForeignKey("app.Book", models.CASCADE))]),
         "safe", "SHARE ROW EXCLUSIVE, brief", "creates table app_loan"),
        ("index concurrently", AddIndexConcurrently("book", models.Index(fields=["title"], name="book_title")),
         "safe", "SHARE UPDATE EXCLUSIVE while the index builds", "concurrently"),
        ("index", migrations.AddIndex("book", models.Index(fields=["title"], name="book_title")), "review",
         "SHARE while the index builds (writes wait)", "AddIndexConcurrently"),
        ("remove a field", migrations.RemoveField("book", "isbn"), "unsafe", "ACCESS EXCLUSIVE, brief",
         "drops column app_book.isbn: the old code still selects"),
        ("delete a model", migrations.DeleteModel("Book"), "unsafe", "ACCESS EXCLUSIVE, brief",
         "drops table app_book"),
        ("rename a field", migrations.RenameField("book", "title", "name"), "unsafe", "ACCESS EXCLUSIVE, brief",
         "renames column app_book.title to name"),
        ("rename a model", migrations.RenameModel("Book", "Volume"), "unsafe", None,
         "renames table app_book to app_volume"),
        ("change a type", migrations.AlterField("book", "pages", models.BigIntegerField(default=0)), "unsafe",
         "ACCESS EXCLUSIVE while the table is rewritten (reads and writes wait)", "from integer to bigint"),
        ("widen a varchar", migrations.AlterField("book", "title", models.CharField(max_length=200)), "safe",
         "ACCESS EXCLUSIVE, brief", "widens app_book.title from varchar(50) to varchar(200)"),
        ("shrink a varchar", migrations.AlterField("book", "title", models.CharField(max_length=10)), "unsafe",
         "ACCESS EXCLUSIVE while the table is rewritten (reads and writes wait)", "changes the type"),
        ("set NOT NULL", migrations.AlterField("book", "subtitle", models.CharField(max_length=50)), "unsafe",
         "ACCESS EXCLUSIVE while it scans the table (reads and writes wait)", "makes app_book.subtitle NOT NULL"),
        ("drop NOT NULL", migrations.AlterField("book", "title", models.CharField(max_length=50, null=True)), "safe",
         "ACCESS EXCLUSIVE, brief", "nullable"),
        ("Python only", migrations.AlterField("book", "title", models.CharField(max_length=50, help_text="x")),
         "safe", "none", "in Python only"),
        ("unique field", migrations.AlterField("book", "title", models.CharField(max_length=50, unique=True)),
         "unsafe", None, "adds a unique constraint on app_book.title"),
        ("unique constraint", migrations.AddConstraint("book", models.UniqueConstraint(fields=["isbn"],
                                                                                       name="book_isbn")),
         "unsafe", "ACCESS EXCLUSIVE while the index builds (reads and writes wait)", "existing table app_book"),
        ("check constraint", migrations.AddConstraint("book", models.CheckConstraint(
            condition=models.Q(pages__gte=0), name="pages_ok")), "review",
         "ACCESS EXCLUSIVE while it scans the table (reads and writes wait)", "check constraint pages_ok"),
        ("unique_together", migrations.AlterUniqueTogether("book", {("title", "author")}), "unsafe", None,
         "adds unique_together (title, author)"),
        ("raw SQL", migrations.RunSQL("UPDATE app_book SET pages = 1"), "review",
         "ROW EXCLUSIVE while it updates the rows", "raw SQL"),
        ("raw SQL dropping a column", migrations.RunSQL("ALTER TABLE app_book DROP COLUMN isbn"), "unsafe",
         "ACCESS EXCLUSIVE, brief", "drops a column"),
        ("Python", migrations.RunPython(lambda apps, schema_editor: None), "review", "unknown (runs Python)",
         "runs Python"),
        ("noop", migrations.RunPython(migrations.RunPython.noop), "safe", "none", "noop"),
        ("state only", migrations.SeparateDatabaseAndState(state_operations=[migrations.RemoveField("book", "isbn")]),
         "safe", "none", "state operations only"),
        ("options", migrations.AlterModelOptions("book", {"ordering": ["title"]}), "safe", "none", "options only"),
    ]


NAMES = ["add nullable", "add db_default", "add with a Python default", "add with a one-off default",
         "add NOT NULL, no default", "add a nullable foreign key", "create a table", "index concurrently", "index",
         "remove a field", "delete a model", "rename a field", "rename a model", "change a type", "widen a varchar",
         "shrink a varchar", "set NOT NULL", "drop NOT NULL", "Python only", "unique field", "unique constraint",
         "check constraint", "unique_together", "raw SQL", "raw SQL dropping a column", "Python", "noop",
         "state only", "options"]


@pytest.mark.parametrize("name", NAMES)
def test_each_operation_is_classified_with_its_lock(dj, name):
    """Each case from base_state (cases() is built after Django is set up: the operations hold fields)."""
    _, op, expected, lock_text, why = next(c for c in cases() if c[0] == name)
    got = one(dj, op)
    assert got["classification"] == expected, (name, got)
    if lock_text is not None:
        assert got["lock_text"] == lock_text, (name, got["lock_text"], got["sql"])
    assert why.lower() in got["why"].lower(), (name, got["why"])
    assert "\n" not in got["why"] and got["operation"] == type(op).__name__ and got["describe"]


def test_every_case_is_run(dj):
    assert [c[0] for c in cases()] == NAMES


def test_a_type_change_rewrites_and_a_widening_does_not(dj):
    from django.db import migrations, models

    change = one(dj, migrations.AlterField("book", "pages", models.BigIntegerField(default=0)))
    assert change["rewrite"] is True and change["lock"] == "ACCESS EXCLUSIVE" and change["held"] == "rewrite"
    widen = one(dj, migrations.AlterField("book", "title", models.TextField()))
    assert widen["rewrite"] is False and widen["held"] == "brief" and widen["classification"] == "safe"
    assert any("TYPE text" in s for s in widen["sql"])


def test_operations_on_a_new_table_and_removals_are_safe(dj):
    from django.db import migrations, models

    got = judge(dj,
                migrations.CreateModel("Shelf", [("id", models.BigAutoField(primary_key=True))]),
                migrations.AddField("shelf", "label", models.CharField(max_length=10)),  # NOT NULL, no default
                migrations.AddIndex("shelf", models.Index(fields=["label"], name="shelf_label")),
                migrations.AddConstraint("shelf", models.UniqueConstraint(fields=["label"], name="shelf_u")),
                migrations.RemoveField("shelf", "label"),
                migrations.DeleteModel("Shelf"),
                migrations.AddIndex("book", models.Index(fields=["isbn"], name="book_isbn_i")),
                migrations.RemoveIndex("book", "book_isbn_i"),
                migrations.AddConstraint("book", models.CheckConstraint(condition=models.Q(pages__gte=0), name="p")),
                migrations.RemoveConstraint("book", "p"),
                migrations.AlterUniqueTogether("book", {("title", "author")}),
                migrations.AlterUniqueTogether("book", set()))
    assert [g["classification"] for g in got] == ["safe"] * 6 + ["review", "safe", "review", "safe", "unsafe",
                                                                  "safe"], [(g["describe"], g["why"]) for g in got]
    assert got[1]["lock_text"] == "none" and "created in this plan" in got[1]["why"]
    assert got[7]["lock"] == "ACCESS EXCLUSIVE" and got[7]["held"] == "brief"  # DROP INDEX, brief


def test_a_renamed_field_that_keeps_its_column_is_safe_and_an_unknown_operation_needs_a_review(dj):
    from django.db import migrations, models
    from django.db.migrations.operations.base import Operation

    kept = judge(dj, migrations.AlterField("book", "title", models.CharField(max_length=50, db_column="title")),
                 migrations.RenameField("book", "title", "name"))
    assert kept[1]["classification"] == "safe" and "keeps its name" in kept[1]["why"], kept[1]

    class Custom(Operation):
        reduces_to_sql = False

        def state_forwards(self, app_label, state):
            pass

        def describe(self):
            return "something of our own"

    got = one(dj, Custom())
    assert got["classification"] == "review" and "Custom" in got["why"]


def test_widens():
    assert ms.widens("varchar(10)", "varchar(20)") and ms.widens("varchar(10)", "text")
    assert ms.widens("numeric(10, 2)", "numeric(12, 2)")
    assert not ms.widens("varchar(20)", "varchar(10)") and not ms.widens("integer", "bigint")
    assert not ms.widens("numeric(10, 2)", "numeric(12, 3)")


# -- what a rolling release does with a plan ----------------------------------------------------------------------

def plan_doc(connection, *ops):
    state, new = base_state(), set()
    step = {"app": "app", "name": "0002_change", "backwards": False,
            "operations": [ms.analyse_operation(op, "app", state, connection, new, i, atomic=False)
                           for i, op in enumerate(ops, 1)]}
    return {"steps": [step]}


def test_unsafe_operations_and_the_refusal_name_the_operation_and_the_ways_out(dj):
    from django.db import migrations, models

    plan = plan_doc(dj, migrations.AddField("book", "note", models.TextField(null=True)),
                    migrations.RemoveField("book", "isbn"),
                    migrations.RenameField("book", "title", "name"),
                    migrations.DeleteModel("Book"))
    unsafe = unsafe_operations(plan)
    assert [(u["migration"], u["index"], u["operation"]) for u in unsafe] == [
        ("0002_change", 2, "RemoveField"), ("0002_change", 3, "RenameField"), ("0002_change", 4, "DeleteModel")]
    with pytest.raises(UnsafeForRollingRelease) as caught:
        refuse_unsafe(plan)
    err = caught.value
    assert isinstance(err, PreflightFailed) and err.operations == unsafe
    line = err.one_line()
    assert "\n" not in line and line.startswith("3 migration operations are unsafe while the old code still serves")
    assert "app.0002_change: Remove field isbn from book (drops column app_book.isbn" in line
    assert "app.0002_change: Rename field title on book to name" in line and "and 1 more" in line
    assert line.endswith(f"(hint: {HINT})")
    refuse_unsafe(plan_doc(dj, migrations.AddField("book", "note", models.TextField(null=True))))  # nothing raised


# -- the bundle, and the helper run as a program on a checkout --------------------------------------------------

def test_no_bundled_helper_defines_a_name_twice():
    """Shared modules are inlined into one namespace: a private name in two of them would shadow the other."""
    for module in helper_modules():
        names = collections.Counter()
        for node in ast.parse(helper_source(module)).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names[node.name] += 1
            elif isinstance(node, ast.Assign):
                names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        assert [n for n, c in names.items() if c > 1] == [], module


V11_APPLIED = [["admin", "0001_initial"], ["admin", "0002_logentry_remove_auto_add"],
               ["admin", "0003_logentry_add_action_flag_choices"], ["contenttypes", "0001_initial"],
               ["contenttypes", "0002_remove_content_type_name"], ["sessions", "0001_initial"],
               ["library", "0001_initial"], ["library", "0002_genre_book_genre"],
               ["library", "0003_default_genres"]] + [
    ["auth", n] for n in ("0001_initial", "0002_alter_permission_name_max_length", "0003_alter_user_email_max_length",
                          "0004_alter_user_username_opts", "0005_alter_user_last_login_null",
                          "0006_require_contenttypes_0002", "0007_alter_validators_add_error_messages",
                          "0008_alter_user_username_max_length", "0009_alter_user_last_name_max_length",
                          "0010_alter_group_name_max_length", "0011_update_proxy_permissions",
                          "0012_alter_user_first_name_max_length")]


def safety_offline(tree, applied, tmp_path) -> dict:
    """django_state.py `safety` run directly on a checkout, as the controller runs it: offline, read-only."""
    program = tmp_path / "deploykit-django_state.py"
    program.write_text(helper_source("django_state"))
    args = {"project_dir": str(tree), "applied": applied, "offline": {"default": "django.db.backends.postgresql"}}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "DB_"))}
    proc = subprocess.run([sys.executable, str(program), "safety"], input=json.dumps(args), cwd=tree,
                          capture_output=True, text=True, timeout=120, env={**env, "DEPLOYKIT_READ_ONLY": "1"})
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, (proc.stdout, proc.stderr[-2000:])
    return json.loads(lines[0])


def test_the_helper_classifies_a_checkout_offline(sample_repo, tmp_path):
    repo = git.Repo(sample_repo)
    drop = safety_offline(archive_tag(repo, "v1.6-drop-field", tmp_path / "drop"), V11_APPLIED, tmp_path)
    assert drop["ok"] and drop["offline"] and drop["vendor"] == "postgresql" and drop["changed"] is False
    assert [(s["app"], s["name"]) for s in drop["steps"]] == [("library", "0004_book_isbn"),
                                                              ("library", "0005_remove_book_isbn")]
    remove = drop["steps"][1]["operations"][0]
    assert (remove["operation"], remove["classification"], remove["lock"], remove["rewrite"]) == (
        "RemoveField", "unsafe", "ACCESS EXCLUSIVE", False)
    assert remove["sql"] == ['ALTER TABLE "library_book" DROP COLUMN "isbn" CASCADE;']
    assert drop["classification"] == "unsafe" and drop["counts"] == {"safe": 0, "review": 0, "unsafe": 2}

    additive = safety_offline(archive_tag(repo, "v1.6-additive", tmp_path / "add"), V11_APPLIED, tmp_path)
    assert [(s["name"], s["classification"]) for s in additive["steps"]] == [("0004_book_subtitle_loan", "safe")]
    assert [o["operation"] for o in additive["steps"][0]["operations"]] == ["AddField", "CreateModel"]
    assert additive["counts"] == {"safe": 2, "review": 0, "unsafe": 0}

    nn = safety_offline(archive_tag(repo, "v1.6-not-null", tmp_path / "nn"), V11_APPLIED + [
        ["library", "0004_book_isbn"]], tmp_path)
    (op,) = nn["steps"][0]["operations"]
    assert op["classification"] == "unsafe" and "one-off default" in op["why"] and "library_book.copies" in op["why"]
