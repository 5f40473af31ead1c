"""The subset planner: reduced tables and everything that refers to them keep only rows whose parents are kept."""
import pytest

from deploykit.errors import DeployError
from deploykit.work.catalog import Column, ForeignKey, Table
from deploykit.work.subset import plan, select


def table(name, fks=(), cols=("id",)):
    return Table(name, "public", name, [Column(c, "bigint", "int8") for c in cols],
                 [ForeignKey(f"{name}_{c}_fk", (c,), ref, ("id",)) for c, ref in fks])


SHOP = {t.name: t for t in (
    table("users"), table("orders", [("user_id", "users")]), table("items", [("order_id", "orders")]),
    table("notes", [("item_id", "items"), ("user_id", "users")]), table("category", [("parent_id", "category")]))}


def test_a_subset_follows_the_foreign_keys_down_and_leaves_parents_whole():
    where = plan(SHOP, {"orders": "created > now() - interval '30 days'"})
    assert set(where) == {"orders", "items", "notes"}  # users (a parent) and category are not reduced
    assert where["orders"] == "(created > now() - interval '30 days')"
    assert where["items"] == ('("order_id" IS NULL OR "order_id" IN (SELECT "id" FROM "public"."orders" '
                              "WHERE (created > now() - interval '30 days')))")
    assert where["notes"].startswith('("item_id" IS NULL OR "item_id" IN (SELECT "id" FROM "public"."items" WHERE ')
    assert select(SHOP["items"], ["id"], where["items"]).startswith('SELECT "id" FROM "public"."items" WHERE (')


def test_two_subsets_combine_and_a_table_without_one_is_copied_whole():
    where = plan(SHOP, {"users": "id < 100", "orders": "id % 2 = 0"})
    assert where["orders"].startswith("(id % 2 = 0) AND (\"user_id\" IS NULL OR \"user_id\" IN (SELECT \"id\" "
                                      "FROM \"public\".\"users\" WHERE (id < 100)))")
    assert "category" not in where and plan(SHOP, {}) == {}


def test_a_reduced_table_that_references_itself_is_refused_and_an_unknown_table_too():
    with pytest.raises(DeployError, match="category -> category: a reduced table references itself"):
        plan(SHOP, {"category": "id < 10"})
    with pytest.raises(DeployError, match="no table 'order'"):
        plan(SHOP, {"order": "true"})
