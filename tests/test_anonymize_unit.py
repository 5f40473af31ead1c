"""deploykit.anonymize (pure logic): rules resolved to columns, privacy by default, the --init-rules file.

The model metadata is what remote/django_columns.py answers for the sample
project (tests/data/sample_columns.json) and the database columns what
DB_COLUMNS_SQL answers for its database (tests/data/sample_db_columns.json):
tests/test_django_columns.py keeps both true. A shop app with a custom user
model and a legacy table no model manages is added on top, in the same shapes.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from deploykit.anonymize import (Finding, classify, init_rules_text, require_rules, resolve, resolve_subset,
                                 rules_file_path, type_family, write_rules_file)
from deploykit.anonymize.classify import words
from deploykit.config import parse_config, read_rules_file
from deploykit.config.rules import parse_rule
from deploykit.errors import DeployError, PersonalColumnsWithoutRule, RefreshRuleInvalid, RulesFileExists

DATA = Path(__file__).resolve().parent / "data"
SAMPLE = json.loads((DATA / "sample_columns.json").read_text())
SAMPLE_DB = json.loads((DATA / "sample_db_columns.json").read_text())
MINIMAL = {"deploy_to": "/srv/app", "stages": {"prod": ["deploy@10.0.0.5"]}}

CHAR = ["CharField", "Field", "RegisterLookupMixin"]


def fld(name, classes, internal=None, db_type="varchar(100)", column=None, **kw):
    """A field as django_columns reports it."""
    return {"name": name, "attname": kw.pop("attname", name), "column": column or name, "class": classes[0],
            "classes": classes, "internal_type": internal or classes[0], "db_type": db_type,
            "unique": kw.pop("unique", False), "primary_key": kw.pop("primary_key", False),
            "null": kw.pop("null", False), "max_length": kw.pop("max_length", None),
            "related_model": kw.pop("related_model", None), "auto_now": kw.pop("auto_now", False)}


def db_col(column, data_type="character varying", **kw):
    return {"column": column, "data_type": data_type, "udt_name": kw.pop("udt_name", None),
            "max_length": kw.pop("max_length", None), "nullable": kw.pop("nullable", True),
            "unique": kw.pop("unique", False)}


PK = fld("id", ["BigAutoField", "AutoFieldMixin", "BigIntegerField", "IntegerField", "Field"], "BigAutoField",
         "bigint", unique=True, primary_key=True)
SHOP_USER = {"app_label": "shop", "object_name": "Customer", "label": "shop.Customer", "db_table": "shop_customer",
             "managed": True, "auto_created": False, "user_model": True, "fields": [
                 PK,
                 fld("password", CHAR, db_type="varchar(128)"),
                 fld("last_login", ["DateTimeField", "DateField", "Field"], db_type="timestamp with time zone",
                     null=True),
                 fld("is_active", ["BooleanField", "Field"], db_type="boolean"),
                 fld("email", ["LowercaseEmailField", "EmailField", "CharField", "Field"], "CharField",
                     "varchar(254)", unique=True),
                 fld("mobile", CHAR, db_type="varchar(30)"),
                 fld("birth_date", ["DateField", "Field"], db_type="date", null=True),
                 fld("iban", CHAR, db_type="varchar(34)"),
                 fld("signup_ip", ["GenericIPAddressField", "Field"], db_type="inet", null=True),
                 fld("bio", ["TextField", "Field"], db_type="text"),
                 fld("settings", ["JSONField", "CheckFieldDefaultMixin", "Field"], db_type="jsonb"),
                 fld("avatar", ["ImageField", "FileField", "Field"], db_type="varchar(100)"),
                 fld("referrer", ["ForeignKey", "ForeignObject", "RelatedField", "Field"], "ForeignKey", "bigint",
                     column="referrer_id", attname="referrer_id", null=True, related_model="shop.Customer"),
                 fld("date_joined", ["DateTimeField", "DateField", "Field"], db_type="timestamp with time zone"),
             ]}
SHOP_ORDER = {"app_label": "shop", "object_name": "Order", "label": "shop.Order", "db_table": "orders",
              "managed": True, "auto_created": False, "user_model": False, "fields": [
                  PK,
                  fld("customer", ["ForeignKey", "ForeignObject", "RelatedField", "Field"], "ForeignKey", "bigint",
                      column="customer_id", attname="customer_id", related_model="shop.Customer"),
                  fld("shipping_name", CHAR, db_type="varchar(200)"),
                  fld("product_name", CHAR, db_type="varchar(200)"),
                  fld("zip_code", CHAR, db_type="varchar(10)", column="postcode_col"),
                  fld("phone_count", ["IntegerField", "Field"], db_type="integer"),
                  fld("created", ["DateTimeField", "DateField", "Field"], db_type="timestamp with time zone",
                      auto_now=True),
              ]}
SHOP_DB = {
    "shop_customer": [db_col("id", "bigint", nullable=False, unique=True), db_col("password", max_length=128),
                      db_col("last_login", "timestamp with time zone"), db_col("is_active", "boolean"),
                      db_col("email", "USER-DEFINED", udt_name="citext", nullable=False, unique=True),
                      db_col("mobile", max_length=30), db_col("birth_date", "date"), db_col("iban", max_length=34),
                      db_col("signup_ip", "inet"), db_col("bio", "text", nullable=False),
                      db_col("settings", "jsonb", nullable=False), db_col("avatar", max_length=100),
                      db_col("referrer_id", "bigint"), db_col("date_joined", "timestamp with time zone"),
                      db_col("legacy_fax", max_length=30)],  # added by hand, no field stores it
    "orders": [db_col("id", "bigint", unique=True), db_col("customer_id", "bigint"),
               db_col("shipping_name", max_length=200), db_col("product_name", max_length=200),
               db_col("postcode_col", max_length=10), db_col("phone_count", "integer"),
               db_col("created", "timestamp with time zone")],
    # a table no model manages
    "legacy_contacts": [db_col("id", "integer", unique=True), db_col("firstName", "text"), db_col("lastName", "text"),
                        db_col("eMail", "text"), db_col("homeAddress", "text"), db_col("city_id", "integer"),
                        db_col("zip", "integer"), db_col("remote", "inet"), db_col("dob", "date", nullable=False),
                        db_col("email_verified", "boolean"), db_col("payload", "jsonb"),
                        db_col("api_key", "text", unique=True), db_col("tags", "ARRAY", udt_name="_text"),
                        db_col("notes", "text")],
}


def shop():
    """The sample project plus the shop app (whose Customer is the user model) and the legacy table."""
    models = copy.deepcopy(SAMPLE)
    for m in models["models"]:
        m["user_model"] = False
    models["models"] += [copy.deepcopy(SHOP_USER), copy.deepcopy(SHOP_ORDER)]
    models["user_model"] = "shop.Customer"
    return models, {**copy.deepcopy(SAMPLE_DB), **copy.deepcopy(SHOP_DB)}


def rules(**surface):
    return {key.replace("__", "."): parse_rule(value) for key, value in surface.items()}


# -- resolve ---------------------------------------------------------------------------------------

def test_rules_resolve_through_the_models_and_the_database():
    got = resolve({"auth.User.email": {"kind": "email"}, "auth.user.first_name": {"kind": "keep"},
                   "library.Book.author_id": {"kind": "keep"}, "library.Book.genre": {"kind": "keep"},
                   "django_session.session_data": {"kind": "fixed", "value": ""}}, SAMPLE, SAMPLE_DB)
    assert got == {"auth_user": {"email": {"kind": "email"}, "first_name": {"kind": "keep"}},
                   "library_book": {"author_id": {"kind": "keep"}, "genre_id": {"kind": "keep"}},
                   "django_session": {"session_data": {"kind": "fixed", "value": ""}}}


def test_a_field_is_found_where_its_model_stores_it():
    models, db = shop()
    got = resolve({"shop.Order.zip_code": {"kind": "format"}, "legacy_contacts.eMail": {"kind": "email"}},
                  models, db)
    assert got == {"orders": {"postcode_col": {"kind": "format"}}, "legacy_contacts": {"eMail": {"kind": "email"}}}


@pytest.mark.parametrize("key, words_", [
    ("auht.User.email", ["refresh rule 'auht.User.email': the app has no app label 'auht'", "did you mean 'auth'?"]),
    ("auth.Usr.email", ["app 'auth' has no model 'Usr'", "did you mean 'User'?"]),
    ("auth.User.emial", ["auth.User has no field 'emial' stored in a column of its own", "did you mean 'email'?"]),
    ("auth.User.groups", ["auth.User has no field 'groups'"]),  # a many-to-many has no column of its own
    ("auth_usr.email", ["the source database has no table 'auth_usr'", "did you mean 'auth_user'?"]),
    ("auth_user.emial", ["table 'auth_user' has no column 'emial'", "did you mean 'email'?"]),
    ("zzz_qqq.x", ["no table 'zzz_qqq'", "use a known name (auth_group, "]),
])
def test_a_key_that_names_nothing_is_refused_with_the_nearest_name(key, words_):
    with pytest.raises(RefreshRuleInvalid) as info:
        resolve({key: {"kind": "email"}}, SAMPLE, SAMPLE_DB)
    line = info.value.one_line()
    for word in words_:
        assert word in line, line


def test_the_first_refusal_is_told_with_how_many_more():
    with pytest.raises(RefreshRuleInvalid, match=r"'a_table.x': .* \(2 more rules refused\)"):
        resolve({"a_table.x": {"kind": "keep"}, "b_table.x": {"kind": "keep"}, "c_table.x": {"kind": "keep"}},
                SAMPLE, SAMPLE_DB)


def test_a_model_whose_table_is_not_in_the_database_is_refused():
    models = copy.deepcopy(SAMPLE)
    models["models"].append({**copy.deepcopy(SHOP_ORDER)})
    with pytest.raises(RefreshRuleInvalid, match="shop.Order's table 'orders' is not in the source database"):
        resolve({"shop.Order.shipping_name": {"kind": "null"}}, models, SAMPLE_DB)


def test_two_keys_for_one_column_are_refused():
    with pytest.raises(RefreshRuleInvalid) as info:
        resolve({"auth.User.email": {"kind": "email"}, "auth_user.email": {"kind": "keep"}}, SAMPLE, SAMPLE_DB)
    assert "refresh rules 'auth.User.email' and 'auth_user.email' both name auth_user.email" in str(info.value)
    assert "give each column one rule" in info.value.one_line()


@pytest.mark.parametrize("key, rule, words_", [
    ("library.Book.author_id", {"json": {"a": "email"}}, ["a json rule cannot write into library_book.author_id "
                                                          "(bigint)", "format, keep, null, phone"]),
    ("auth.User.username", {"fixed": "x"}, ["auth_user.username is unique, and a fixed value would be the same"]),
    ("auth.User.email", None, ["auth_user.email is NOT NULL"]),
    ("auth.User.last_login", "email", ["an email rule cannot write into auth_user.last_login"]),
    ("legacy_contacts.remote", "email", ["cannot write into legacy_contacts.remote (inet)", "ip"]),
    ("legacy_contacts.payload", "email", ["cannot write into legacy_contacts.payload (jsonb)"]),
])
def test_a_rule_its_column_cannot_take_is_refused(key, rule, words_):
    models, db = shop()
    with pytest.raises(RefreshRuleInvalid) as info:
        resolve({key: parse_rule(rule)}, models, db)
    for word in words_:
        assert word in info.value.one_line(), info.value.one_line()


def test_rules_a_column_can_take():
    models, db = shop()
    got = resolve(rules(legacy_contacts__tags="hash", legacy_contacts__remote="ip", legacy_contacts__zip="format",
                        shop__Customer__email="email", shop__Customer__birth_date=None,
                        shop__Customer__settings={"json": {"theme": "keep", "contacts.*.phone": "phone"}},
                        auth__User__last_login=None, auth__User__username="hash"), models, db)
    assert got["legacy_contacts"]["tags"] == {"kind": "hash", "length": None}  # an array: not judged
    assert got["shop_customer"]["email"] == {"kind": "email"}  # citext is text


def test_subsets_resolve_to_tables():
    models, db = shop()
    assert resolve_subset({"shop.Order": "created > now() - interval '30 days'", "legacy_contacts": "id < 100"},
                          models, db) == {"orders": "created > now() - interval '30 days'",
                                          "legacy_contacts": "id < 100"}
    with pytest.raises(RefreshRuleInvalid) as info:
        resolve_subset({"shop.Ordr": "true"}, models, db)
    assert info.value.one_line() == ("refresh subset 'shop.Ordr': the app has no model 'shop.Ordr' "
                                     "(hint: did you mean 'shop.Order'?)")
    with pytest.raises(RefreshRuleInvalid) as info:
        resolve_subset({"order": "true"}, models, db)
    assert "no table 'order' (hint: did you mean 'orders'?)" in info.value.one_line()
    with pytest.raises(RefreshRuleInvalid, match="'orders' and 'shop.Order' both name table 'orders'"):
        resolve_subset({"shop.Order": "true", "orders": "false"}, models, db)


def test_type_families():
    assert [type_family(t) for t in ("character varying", "varchar(254)", "text", "jsonb", "inet", "bigint",
                                     "timestamp with time zone", "boolean", "uuid", "bytea", "ARRAY", None)] == [
        "text", "text", "text", "json", "inet", "number", "date", "bool", "uuid", "bytes", None, None]
    assert type_family("USER-DEFINED", "citext") == "text" and type_family("USER-DEFINED", "hstore") is None


# -- classify --------------------------------------------------------------------------------------

def found(findings) -> dict:
    return {f.key: (f.suggestion, f.why) for f in findings}


def test_the_sample_projects_personal_columns():
    got = {f.key: f.suggestion for f in classify(SAMPLE, SAMPLE_DB, {})}
    assert got == {
        "auth.User.password": {"fixed": "!"},
        "auth.User.username": {"hash": {}},
        "auth.User.first_name": {"faker": "first_name"},
        "auth.User.last_name": {"faker": "last_name"},
        "auth.User.email": "email",
        "admin.LogEntry.object_repr": "format",
        "sessions.Session.session_key": {"hash": {}},
        "sessions.Session.session_data": {"fixed": ""},
        "library.Author.name": {"faker": "name"},
        "library.Genre.name": {"faker": "name"},  # a false alarm costs one keep
    }
    # not flagged: the user's booleans and dates of the system, groups, permissions, content types, migrations
    keys = set(got)
    assert not keys & {"auth.User.last_login", "auth.User.date_joined", "auth.User.is_staff", "auth.Group.name",
                       "auth.Permission.name", "contenttypes.ContentType.model", "django_migrations.name"}


def test_a_rule_or_an_explicit_keep_silences_a_column():
    everything = {f.key: parse_rule(f.suggestion) for f in classify(SAMPLE, SAMPLE_DB, {})}
    everything["library.Genre.name"] = {"kind": "keep"}
    assert classify(SAMPLE, SAMPLE_DB, resolve(everything, SAMPLE, SAMPLE_DB)) == []
    del everything["auth.User.email"]
    left = classify(SAMPLE, SAMPLE_DB, resolve(everything, SAMPLE, SAMPLE_DB))
    assert left == [Finding("auth_user", "email", "auth.User.email", "an EmailField", "email")]


def test_a_custom_user_model_and_a_table_no_model_manages():
    models, db = shop()
    got = found(classify(models, db, {}))
    assert {k: v[0] for k, v in got.items() if k.startswith(("shop.", "shop_", "orders", "legacy"))} == {
        "shop.Customer.password": {"fixed": "!"},
        "shop.Customer.email": "email",  # a subclass of EmailField
        "shop.Customer.mobile": "phone",
        "shop.Customer.birth_date": None,  # NULL allowed
        "shop.Customer.iban": "format",
        "shop.Customer.signup_ip": "ip",
        "shop.Customer.bio": "format",  # any text of the user model
        "shop.Customer.settings": {"fixed": "{}"},  # its JSON, NOT NULL
        "shop_customer.legacy_fax": "phone",  # a column no field stores
        "shop.Order.shipping_name": {"faker": "name"},
        "shop.Order.zip_code": {"faker": "postcode"},
        "legacy_contacts.firstName": {"faker": "first_name"},
        "legacy_contacts.lastName": {"faker": "last_name"},
        "legacy_contacts.eMail": "email",
        "legacy_contacts.homeAddress": {"faker": "street_address"},
        "legacy_contacts.zip": "format",  # a number
        "legacy_contacts.remote": "ip",  # inet, whatever its name
        "legacy_contacts.dob": {"fixed": "1970-01-01"},  # NOT NULL
        "legacy_contacts.api_key": {"hash": {}},
    }
    assert got["shop.Customer.email"][1] == "a LowercaseEmailField (an EmailField)"
    assert got["shop.Customer.mobile"][1] == "named like a phone number (a field of the user model)"
    assert got["shop.Customer.bio"][1] == "a text field of the user model (shop.Customer)"
    assert got["legacy_contacts.remote"][1] == "an inet column"
    # the user model's booleans, dates, files and relations; an id, a count, a flag, a product: not personal
    for key in ("shop.Customer.is_active", "shop.Customer.last_login", "shop.Customer.date_joined",
                "shop.Customer.avatar", "shop.Customer.referrer", "shop.Customer.id", "shop.Order.customer",
                "shop.Order.product_name", "shop.Order.phone_count", "legacy_contacts.city_id",
                "legacy_contacts.email_verified", "legacy_contacts.notes", "legacy_contacts.tags",
                "legacy_contacts.payload"):
        assert key not in got, key
    finding = next(f for f in classify(models, db, {}) if f.key == "shop.Order.zip_code")
    assert (finding.table, finding.column, finding.field) == ("orders", "postcode_col", "shop.Order.zip_code")
    assert finding.as_dict() == {"table": "orders", "column": "postcode_col", "field": "shop.Order.zip_code",
                                 "why": "named like a postcode", "suggestion": {"faker": "postcode"},
                                 "key": "shop.Order.zip_code"}


def test_a_fixed_suggestion_for_a_unique_column_keeps_values_apart():
    models, db = shop()
    db["legacy_contacts"].append(db_col("passwd", "text", unique=True))
    got = found(classify(models, db, {}))
    assert got["legacy_contacts.passwd"][0] == {"hash": {}}


def test_every_suggestion_is_a_rule_its_column_takes():
    models, db = shop()
    findings = classify(models, db, {})
    resolved = resolve({f.key: f.rule() for f in findings}, models, db)
    assert sum(len(cols) for cols in resolved.values()) == len(findings)
    assert classify(models, db, resolved) == []


@pytest.mark.parametrize("name, expected", [
    ("first_name", ["first", "name"]), ("firstName", ["first", "name"]), ("FirstName", ["first", "name"]),
    ("address2", ["address", "2"]), ("IPAddress", ["ip", "address"]), ("e-mail", ["e", "mail"]),
    ("zipCode", ["zip", "code"]), ("ship_to", ["ship", "to"]),
])
def test_words_of_a_column_name(name, expected):
    assert words(name) == expected


# -- the refusal -----------------------------------------------------------------------------------

def test_personal_columns_without_rule_stop_the_refresh_in_one_line():
    findings = classify(SAMPLE, SAMPLE_DB, {})
    with pytest.raises(PersonalColumnsWithoutRule) as info:
        require_rules(findings)
    line = info.value.one_line()
    assert "\n" not in line and line.startswith(
        "10 columns look personal and have no refresh rule: auth_user.password, auth_user.username, "
        "auth_user.first_name, auth_user.last_name, auth_user.email and 5 more (hint: ")
    assert "'deploykit refresh --init-rules' writes a rules file" in line
    assert info.value.findings == findings and isinstance(info.value, DeployError)
    one = PersonalColumnsWithoutRule(findings[:1]).one_line()
    assert one.startswith("1 column looks personal and has no refresh rule: auth_user.password (hint: ")
    require_rules([])


# -- --init-rules ----------------------------------------------------------------------------------

def test_the_rules_file_text_reads_back_as_the_suggestions(tmp_path):
    models, db = shop()
    findings = classify(models, db, {})
    text = init_rules_text(findings)
    path = tmp_path / "refresh-rules.yaml"
    path.write_text(text)
    assert read_rules_file(path) == {f.key: f.rule() for f in findings}
    assert "  # orders.postcode_col: named like a postcode\n  shop.Order.zip_code: {faker: postcode}\n" in text
    assert "  # legacy_contacts.remote (no model): an inet column\n  legacy_contacts.remote: ip\n" in text
    assert "  shop.Customer.password: {fixed: \"!\"}\n" in text and text.startswith("# Masking rules")
    # the file deploykit.yaml names is read with its rules: nothing is left without one
    cfg = parse_config({**MINIMAL, "refresh": {"rules_file": "refresh-rules.yaml"}}, tmp_path / "deploykit.yaml")
    assert classify(models, db, resolve(cfg.refresh.rules, models, db)) == []


def test_the_rules_given_before_come_first_and_odd_values_survive(tmp_path):
    existing = rules(**{"auth__User__email": "email", "legacy_contacts__notes": {"fixed": "0o17"},
                        "legacy_contacts__tags": {"fixed": 'say "no"\nor: #not'},
                        "auth__User__first_name": {"faker": {"provider": "first_name", "locale": "de_DE"}},
                        "legacy_contacts__payload": {"json": {"user.email": "email", "phones.*": "phone",
                                                              "a: b": {"hash": {"length": 12}}, "n": None}},
                        "auth__User__last_name": {"fixed": "true"}, "auth__User__is_staff": "keep"})
    findings = [Finding("auth_user", "email", "auth.User.email", "an EmailField", "email"),
                Finding("x", "y", None, "named like a phone number", "phone")]
    text = init_rules_text(findings, existing)
    assert text.index("# the rules given before") < text.index("x.y: phone")
    assert text.count("auth.User.email:") == 1  # a finding already ruled is not suggested again
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    assert read_rules_file(path) == {**existing, "x.y": {"kind": "phone"}}


def test_no_finding_writes_an_empty_rules_mapping(tmp_path):
    text = init_rules_text([])
    assert "rules: {}\n" in text
    (tmp_path / "r.yaml").write_text(text)
    assert read_rules_file(tmp_path / "r.yaml") == {}


def test_the_rules_file_is_written_new_and_never_over_a_file(tmp_path, monkeypatch):
    path = write_rules_file(tmp_path / "refresh-rules.yaml", "rules: {}\n")
    assert path.read_text() == "rules: {}\n" and sorted(p.name for p in tmp_path.iterdir()) == ["refresh-rules.yaml"]
    with pytest.raises(RulesFileExists, match="refresh-rules.yaml already exists") as info:
        write_rules_file(path, "rules: {a.b: email}\n")
    assert "move the file aside" in info.value.one_line() and path.read_text() == "rules: {}\n"
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(RulesFileExists):
        write_rules_file(tmp_path / "link", "x")
    with pytest.raises(DeployError, match="is not a directory"):
        write_rules_file(tmp_path / "no" / "rules.yaml", "x")
    # a file that appears between the check and the link is not replaced either
    real = os.path.lexists
    monkeypatch.setattr(os.path, "lexists", lambda p: False if str(p) == str(path) else real(p))
    with pytest.raises(RulesFileExists):
        write_rules_file(path, "rules: {a.b: email}\n")
    assert path.read_text() == "rules: {}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "refresh-rules.yaml"]


def test_where_init_rules_writes(tmp_path):
    cfg = parse_config(MINIMAL, tmp_path / "deploykit.yaml")
    assert rules_file_path(cfg) == tmp_path / "refresh-rules.yaml"
    cfg = parse_config({**MINIMAL, "refresh": {"rules_file": "conf/rules.yaml"}}, tmp_path / "deploykit.yaml")
    assert rules_file_path(cfg) == tmp_path / "conf" / "rules.yaml"
