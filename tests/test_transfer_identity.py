"""Which database each colour really uses: same_databases over the identities a transfer asks of the hosts.

A PostgreSQL identity is (engine, the server's system identifier, the database name): the server is known by
what it answers, not by the host and port the config spells (two colours with no host configured reach each its
own local server). A SQLite identity is (engine, machine, real path, device:inode).
"""
from __future__ import annotations

from deploykit.work.transfer import same_databases

BLUE_SERVER, GREEN_SERVER = "7316363061714450263", "7416363061714450999"


def pg(server: str, name: str = "library") -> tuple:
    return ("postgresql", server, name)


def test_one_server_and_one_name_is_one_database():
    assert same_databases({"default": pg(BLUE_SERVER)}, {"default": pg(BLUE_SERVER)}) == ["default"]


def test_two_servers_are_two_databases_even_with_the_same_name():
    assert same_databases({"default": pg(BLUE_SERVER)}, {"default": pg(GREEN_SERVER)}) == []


def test_one_server_with_two_names_is_two_databases():
    assert same_databases({"default": pg(BLUE_SERVER, "library_blue")},
                          {"default": pg(BLUE_SERVER, "library_green")}) == []


def test_only_the_aliases_that_are_one_are_named_in_config_order():
    a = {"default": pg(BLUE_SERVER), "reports": pg(BLUE_SERVER, "reports"), "files": ("sqlite", "m1", "/a", "1:2")}
    b = {"default": pg(GREEN_SERVER), "reports": pg(BLUE_SERVER, "reports"), "files": ("sqlite", "m1", "/b", "1:2")}
    assert same_databases(a, b) == ["reports", "files"]


def test_an_alias_only_one_side_has_is_not_the_same():
    assert same_databases({"default": pg(BLUE_SERVER), "extra": pg(BLUE_SERVER, "x")},
                          {"default": pg(GREEN_SERVER)}) == []


def test_sqlite_same_file_by_path_or_by_inode_on_one_machine():
    assert same_databases({"db": ("sqlite", "m1", "/srv/db.sqlite3", "1:5")},
                          {"db": ("sqlite", "m1", "/srv/db.sqlite3", None)}) == ["db"]
    assert same_databases({"db": ("sqlite", "m1", "/srv/a/db.sqlite3", "1:5")},
                          {"db": ("sqlite", "m1", "/srv/b/db.sqlite3", "1:5")}) == ["db"]  # a hard link
    assert same_databases({"db": ("sqlite", "m1", "/srv/db.sqlite3", "1:5")},
                          {"db": ("sqlite", "m2", "/srv/db.sqlite3", "1:5")}) == []  # two machines
    assert same_databases({"db": ("sqlite", "m1", "/a", None)}, {"db": ("sqlite", "m1", "/b", None)}) == []


def test_a_sqlite_and_a_postgresql_identity_are_never_one():
    assert same_databases({"db": ("sqlite", "m1", "/a", "1:5")}, {"db": pg(BLUE_SERVER)}) == []
