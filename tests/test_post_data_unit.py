"""work/post_data: a refresh's post-data split into each table's own indexes and constraints (built as soon as
its rows are in) and the rest (after every copy); together exactly the dump's post-data, in its order."""
from __future__ import annotations

from deploykit.work import post_data

TOC = """\
3215; 2606 16404 CONSTRAINT public orders orders_pkey dkadmin
3210; 2606 16394 CONSTRAINT public users users_email_key dkadmin
3212; 2606 16392 CONSTRAINT public users users_pkey dkadmin
3218; 2606 16416 CONSTRAINT public we ird we ird_pkey dkadmin
3213; 1259 16411 INDEX public odd name dkadmin
3216; 1259 16410 INDEX public orders_user_id dkadmin
3217; 1259 16412 INDEX other orders_note other_owner
3371; 0 0 COMMENT public INDEX orders_user_id dkadmin
3219; 2606 16405 FK CONSTRAINT public orders orders_user_id_fkey dkadmin
3220; 2620 16420 TRIGGER public orders audit dkadmin
""".splitlines()
INDEXES = {("public", "orders_user_id"): ("public", "orders"), ("public", "odd name"): ("public", "orders"),
           ("other", "orders_note"): ("other", "orders")}


def test_a_tables_own_indexes_and_constraints_go_early_the_rest_after():
    early, later = post_data.split(TOC, INDEXES)
    assert early == {("public", "orders"): [TOC[0], TOC[5]], ("public", "users"): [TOC[1], TOC[2]],
                     ("other", "orders"): [TOC[6]]}
    # a name with a space (read with doubt), a comment, a foreign key, a trigger: after every copy
    assert later == [TOC[3], TOC[4], TOC[7], TOC[8], TOC[9]]
    assert sorted(later + [line for lines in early.values() for line in lines]) == sorted(TOC)


def test_an_index_of_an_unknown_table_waits():
    early, later = post_data.split([TOC[5]], {})
    assert early == {} and later == [TOC[5]]
