"""SQL text for psql: quoting through psycopg.sql, LIKE prefixes, settings re-applied exactly (pure logic)."""
from __future__ import annotations

import pytest

from deploykit.names import derived_name
from deploykit.sqltext import ident, like_prefix, literal, set_database_setting, split_guc_list


def test_identifiers_and_literals_are_quoted():
    assert ident("library") == '"library"'
    assert ident('we"ird') == '"we""ird"'
    assert ident("библиотека") == '"библиотека"'
    assert literal("it's") == "'it''s'"
    assert literal("back\\slash") == "E'back\\\\slash'"
    with pytest.raises(ValueError):
        ident("nul\0byte")
    with pytest.raises(ValueError):
        literal("nul\0byte")


def test_like_prefix_matches_only_the_prefix():
    assert like_prefix("app_db%") == "E'app\\\\_db\\\\%%' ESCAPE E'\\\\'"
    assert like_prefix("plain") == "'plain%' ESCAPE E'\\\\'"


@pytest.mark.parametrize("stored, items", [
    ("app, public", ["app", "public"]),
    ('"$user", public', ["$user", "public"]),
    ('"a,b", "x""y"', ["a,b", 'x"y']),
    ("", []),
])
def test_list_settings_split_like_postgres(stored, items):
    assert split_guc_list(stored) == items


def test_database_settings_are_reapplied_exactly():
    # search_path is a list: re-applied as one quoted string it would become the single schema "app, public"
    assert set_database_setting("db", "search_path=app, public") == \
        """ALTER DATABASE "db" SET "search_path" TO 'app', 'public';"""
    assert set_database_setting("db", 'search_path="$user", public') == \
        """ALTER DATABASE "db" SET "search_path" TO '$user', 'public';"""
    assert set_database_setting("db", "work_mem=7MB") == """ALTER DATABASE "db" SET "work_mem" TO '7MB';"""
    assert set_database_setting("db", "DateStyle=ISO, MDY") == """ALTER DATABASE "db" SET "DateStyle" TO 'ISO, MDY';"""
    with pytest.raises(ValueError):
        set_database_setting("db", "no equals sign")


def test_derived_names_are_short_distinct_and_never_truncations():
    a = "acme_ecommerce_platform_production"
    b = "acme_ecommerce_platform_production_analytics"
    cyrillic = "б" * 31  # 62 bytes
    made = {derived_name(kind, "app", db, label) for kind in ("snapshot", "aside", "restore", "scratch")
            for db in (a, b, cyrillic, "x" * 63) for label in ("20260101T000000Z-abc1234", "run-1")}
    assert len(made) == 4 * 4 * 2
    assert all(len(n.encode()) <= 63 and n.isascii() for n in made)
    assert not any(n.startswith(a[:10]) for n in made)
    assert derived_name("snapshot", "app", a, "r1") == derived_name("snapshot", "app", a, "r1")
    assert derived_name("snapshot", "app", a, "r1") != derived_name("snapshot", "other-app", a, "r1")
