"""Anonymized refresh between two stages on real sshd hosts, each with its own PostgreSQL cluster.

Blue plays production (v1.1 with users, and a table no model manages holding contacts with phones and JSON
notes), green pre-production. The refresh must: refuse while a personal-looking column has no rule, before
anything is copied, naming it; mask in the stream on blue's host; leave no original email, name or phone in
green — not in its tables, not in a pg_dump of it, not in its cluster's files (data directory and WAL); keep
every row count, foreign key and unique constraint; give the same output for the same key and another for
another key; and leave blue exactly as it was.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import requests

from deploykit import api
from deploykit_testing.stage import OWNER

KEY_ENV = "DK_TEST_REFRESH_KEY"
FIRST = ["Amelia", "Bartholomew", "Cordelia", "Desmond", "Evangeline", "Fitzgerald", "Genevieve", "Humphrey"]
LAST = ["Worthington", "Blackwood", "Fairweather", "Ravenscroft", "Montgomery", "Whitlock", "Pemberton", "Hawthorne"]
USERS = 40


def run(c, *args, config=None, key="k" * 24):
    env = {**c.env(), KEY_ENV: key} if key else {k: v for k, v in c.env().items() if k != KEY_ENV}
    return subprocess.run(c.cli_argv(*args, config=config), capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL, env=env)


def person(i: int) -> dict:
    first, last = FIRST[i % len(FIRST)], LAST[(i // len(FIRST)) % len(LAST)]
    return {"first": first, "last": last, "email": f"{first.lower()}.{last.lower()}{i}@corp-mail.test",
            "phone": f"+1 (555) 01{i:02d}-{7000 + i}", "username": f"{first.lower()}{last.lower()}{i}"}


def seed_production(c) -> None:
    """Users of the app's own model, and a table no model manages that refers to them."""
    db = c.config().databases[0].name
    pg = c.pg("blue")
    rows = []
    for i in range(USERS):
        p = person(i)
        rows.append(f"('{p['username']}', '{p['email']}', '{p['first']}', '{p['last']}', "
                    f"'pbkdf2_sha256$600000$salt{i}$hash{i}', false, false, true, now())")
    pg.psql(db, "SET ROLE " + OWNER + ";\n"
            "INSERT INTO auth_user (username, email, first_name, last_name, password, is_superuser, is_staff, "
            "is_active, date_joined) VALUES " + ", ".join(rows) + ";\n"
            "CREATE TABLE crm_contact (id serial PRIMARY KEY, email varchar(120) UNIQUE NOT NULL, "
            "phone varchar(30), notes jsonb, user_id integer REFERENCES auth_user(id));\n"
            + "".join(f"INSERT INTO crm_contact (email, phone, notes, user_id) SELECT '{person(i)['email']}', "
                      f"'{person(i)['phone']}', '{json.dumps({'contact': {'email': person(i)['email'], 'name': person(i)['first'] + ' ' + person(i)['last']}, 'source': 'web'})}'::jsonb, "
                      f"id FROM auth_user WHERE username = '{person(i)['username']}';\n" for i in range(USERS)))


RULES = {
    "auth.User.email": "email",
    "auth.User.username": {"hash": {"length": 16}},
    "auth.User.first_name": "format",
    "auth.User.last_name": "format",
    "auth.User.password": {"fixed": "!"},
    "admin.LogEntry.object_repr": "format",
    "sessions.Session.session_key": {"hash": {}},
    "sessions.Session.session_data": {"fixed": ""},
    "library.Author.name": "keep",
    "library.Genre.name": "keep",
    "crm_contact.email": "email",
    "crm_contact.phone": "phone",
    "crm_contact.notes": {"json": {"contact.email": "email", "contact.name": "format"}},
}


def configure(c, tmp_path, rules=None, name="refresh.yaml"):
    return c.edit(lambda d: d.update(refresh={"key_env": KEY_ENV, "rules": RULES if rules is None else rules}),
                  tmp_path / name)


def originals() -> list[str]:
    out = []
    for i in range(USERS):
        p = person(i)
        out += [p["email"], p["first"] + " " + p["last"], p["phone"], p["username"]]
    return out + sorted(set(FIRST) | set(LAST))


def masked_state(c, colour: str) -> dict:
    db, pg = c.config().databases[0].name, c.pg(colour)
    return {"users": pg.execute(db, "SELECT id, username, email, first_name, last_name FROM auth_user ORDER BY id"),
            "contacts": pg.execute(db, "SELECT id, email, phone, notes::text, user_id FROM crm_contact ORDER BY id")}


def media(c, colour: str) -> dict[str, str]:
    import hashlib
    root = c.host(colour).deploy_to / "shared" / "media"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def databases(c, colour: str) -> set[str]:
    return {r[0] for r in c.pg(colour).execute("postgres", "SELECT datname FROM pg_database")}


def green_text(c) -> str:
    """Everything green's database holds, as one text: a plain pg_dump of it."""
    pg, db = c.pg("green"), c.config().databases[0].name
    return subprocess.run([pg._tool("pg_dump"), "-h", pg.host, "-p", str(pg.port), "-U", pg.admin_user, "-d", db],
                          capture_output=True, text=True, check=True, env={**os.environ, **pg.env()}).stdout


def cluster_files_hold(c, colour: str, needles: list[str]) -> list[str]:
    """Which of `needles` appear anywhere in the colour's cluster files (data directory and WAL), after a
    checkpoint (so what is in shared buffers is on disk too)."""
    pg = c.pg(colour)
    pg.execute("postgres", "CHECKPOINT")
    found = set()
    for root, _dirs, files in os.walk(pg.data_dir):
        for name in files:
            try:
                data = open(os.path.join(root, name), "rb").read()
            except OSError:
                continue
            found |= {n for n in needles if n.encode() in data}
    return sorted(found)


def test_refresh_masks_in_the_stream_proves_it_and_leaves_production_as_it_was(colours_factory, tmp_path):
    c = colours_factory(database="postgresql")
    cfg = c.config()
    for colour in ("blue", "green"):
        assert api.release(cfg, colour, "v1.1").ok
    seed_production(c)
    db = cfg.databases[0].name
    blue_before = (c.pg("blue").row_checksums(db), c.pg("blue").schema(db))
    green_before, green_dbs = c.pg("green").row_checksums(db), databases(c, "green")
    # green's cluster starts without any of production's people
    assert cluster_files_hold(c, "green", originals()[:12]) == []

    # no rules: every personal-looking column is named, nothing is copied
    bare = c.edit(lambda d: d.update(refresh={"key_env": KEY_ENV}), tmp_path / "bare.yaml")
    cp = run(c, "refresh", "--from", "blue", "--to", "green", config=bare)
    assert cp.returncode == 2 and "look personal and have no refresh rule" in cp.stderr, cp.stdout[-3000:] + cp.stderr
    assert "auth_user.email" in cp.stderr and "--init-rules" in cp.stderr
    assert c.pg("green").row_checksums(db) == green_before and databases(c, "green") == green_dbs
    # --init-rules writes the suggestions (never over an existing file)
    cp = run(c, "refresh", "--from", "blue", "--init-rules", config=bare)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
    suggested = (tmp_path / "refresh-rules.yaml").read_text()
    assert "crm_contact.phone" in suggested and "auth.User.email: email" in suggested
    cp = run(c, "refresh", "--from", "blue", "--init-rules", config=bare)
    assert cp.returncode != 0 and "already exists" in cp.stderr

    # with the rules: masked, proved, swapped in
    config = configure(c, tmp_path)
    cp = run(c, "refresh", "--from", "blue", "--to", "green", "--json", config=config)
    assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr
    doc = json.loads(cp.stdout.splitlines()[-1])
    assert doc["ok"] and doc["data"]["proof"]["found"] == [] and doc["data"]["proof"]["checked"] > 0
    assert "crm_contact.phone" in doc["data"]["masked"] and "auth_user.email" in doc["data"]["masked"]

    # row counts as production's; every foreign key and unique constraint was enforced by the build
    green_rows = c.pg("green").row_checksums(db)
    blue_counts = {t: n for t, n in c.pg("blue").execute(db, "SELECT 'auth_user', count(*) FROM auth_user UNION ALL "
                                                           "SELECT 'crm_contact', count(*) FROM crm_contact")}
    green_counts = {t: n for t, n in c.pg("green").execute(db, "SELECT 'auth_user', count(*) FROM auth_user UNION "
                                                             "ALL SELECT 'crm_contact', count(*) FROM crm_contact")}
    assert green_counts == blue_counts == {"auth_user": USERS, "crm_contact": USERS}
    assert set(green_rows) == set(blue_before[0])
    constraints = {r[0] for r in c.pg("green").execute(db, "SELECT conname FROM pg_constraint WHERE "
                                                           "conrelid = 'crm_contact'::regclass")}
    assert {"crm_contact_email_key", "crm_contact_user_id_fkey", "crm_contact_pkey"} <= constraints
    # masked: emails stay emails, phones keep their shape, JSON keeps its other keys; joins still hold
    first = masked_state(c, "green")
    for (uid, username, email, fn, ln), p in zip(first["users"][-USERS:], map(person, range(USERS))):
        assert email != p["email"] and "@" in email and username != p["username"]
        assert fn != p["first"] and len(fn) == len(p["first"])
    for _id, email, phone, notes, user_id in first["contacts"]:
        assert "@" in email and phone.startswith("+") and len(phone) == len(person(0)["phone"])
        assert json.loads(notes)["source"] == "web"
    user_email = {u[0]: u[2] for u in first["users"]}
    assert all(user_email[row[4]] == row[1] for row in first["contacts"])  # the same input, the same output
    # no original anywhere: tables (above), a pg_dump, the cluster's files (WAL included)
    text = green_text(c)
    assert [o for o in originals() if o in text] == []
    assert cluster_files_hold(c, "green", [person(i)["email"] for i in range(0, USERS, 5)]
                              + [person(i)["phone"] for i in range(0, USERS, 5)]) == []
    # green serves its refreshed data; blue unchanged
    assert requests.get(f"http://{c.http['green']}/", timeout=30).status_code == 200
    assert (c.pg("blue").row_checksums(db), c.pg("blue").schema(db)) == blue_before

    # the same key again: the same output; another key: another
    cp = run(c, "refresh", "--from", "blue", "--to", "green", config=config)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
    assert masked_state(c, "green") == first
    cp = run(c, "refresh", "--from", "blue", "--to", "green", config=config, key="another-key-" * 3)
    assert cp.returncode == 0, cp.stdout[-3000:] + cp.stderr
    other = masked_state(c, "green")
    assert [u[2] for u in other["users"]] != [u[2] for u in first["users"]]
    assert (c.pg("blue").row_checksums(db), c.pg("blue").schema(db)) == blue_before


def test_a_refresh_whose_proof_finds_an_original_drops_the_copy(colours_factory, tmp_path):
    """A column kept by mistake that holds production's emails: the proof finds them, the copy is dropped."""
    c = colours_factory(database="postgresql")
    cfg = c.config()
    for colour in ("blue", "green"):
        assert api.release(cfg, colour, "v1.1").ok
    seed_production(c)
    db = cfg.databases[0].name
    c.pg("blue").psql(db, f"SET ROLE {OWNER}; CREATE TABLE audit_note (id serial PRIMARY KEY, body text);"
                          f"INSERT INTO audit_note (body) VALUES ('{person(3)['email'].upper()}');")
    green_before, green_dbs = c.pg("green").row_checksums(db), databases(c, "green")
    config = configure(c, tmp_path, rules={**RULES, "audit_note.body": "keep"})
    cp = run(c, "refresh", "--from", "blue", "--to", "green", config=config)
    assert cp.returncode == 1 and "original value(s) found" in cp.stderr, cp.stdout[-3000:] + cp.stderr
    assert "audit_note.body" in cp.stderr and person(3)["email"] not in cp.stderr + cp.stdout
    assert c.pg("green").row_checksums(db) == green_before and databases(c, "green") == green_dbs
    assert not (c.host("green").deploy_to / ".deploykit" / "lock").exists()


def test_a_subset_follows_the_foreign_keys_and_every_constraint_holds(colours_factory, tmp_path):
    """subset: {auth.User: even ids}: half the users, and only the contacts of those (their foreign key points
    at a reduced table); the build's foreign keys and unique constraints check every row."""
    c = colours_factory(database="postgresql")
    cfg = c.config()
    for colour in ("blue", "green"):
        assert api.release(cfg, colour, "v1.1").ok
    seed_production(c)
    db = cfg.databases[0].name
    blue_media = c.host("blue").deploy_to / "shared" / "media"
    png = b"\x89PNG\r\n\x1a\n" + b"a face, in pixels " * 300
    for rel, data in (("avatars/ada.png", png), ("exports/customers.csv", b"ada@corp-mail.test,+1 555\n"),
                      ("docs/terms.txt", b"the terms")):
        (blue_media / rel).parent.mkdir(parents=True, exist_ok=True)
        (blue_media / rel).write_bytes(data)
    blue_files = media(c, "blue")
    (c.host("green").deploy_to / "shared" / "media").mkdir(parents=True, exist_ok=True)
    config = c.edit(lambda d: d.update(media=["shared/media"], refresh={
        "key_env": KEY_ENV, "rules": RULES, "subset": {"auth.User": "id % 2 = 0"},
        "media": {"avatars/": "placeholder", "exports/": "exclude", "default": "keep"}}), tmp_path / "subset.yaml")
    green_before, green_dbs = c.pg("green").row_checksums(db), databases(c, "green")
    dry = run(c, "refresh", "--from", "blue", "--to", "green", "--dry-run", config=config)
    assert dry.returncode == 0 and "nothing was changed" in dry.stdout, dry.stdout[-3000:] + dry.stderr
    assert "column(s) masked" in dry.stdout  # the rules were resolved and the columns classified for real
    assert c.pg("green").row_checksums(db) == green_before and databases(c, "green") == green_dbs
    assert not (c.host("green").deploy_to / "shared" / "media" / "avatars").exists()
    cp = run(c, "refresh", "--from", "blue", "--to", "green", "--json", config=config)
    assert cp.returncode == 0, cp.stdout[-4000:] + cp.stderr
    # media: the avatar replaced by a PNG of its size class (its bytes never left blue), exports left out
    green_media = c.host("green").deploy_to / "shared" / "media"
    avatar = (green_media / "avatars" / "ada.png").read_bytes()
    assert avatar.startswith(b"\x89PNG") and b"a face" not in avatar and len(avatar) == 4096 < len(png)
    assert not (green_media / "exports").exists() and (green_media / "docs" / "terms.txt").read_bytes() == b"the terms"
    assert media(c, "blue") == blue_files
    kept = {r[0] for r in c.pg("blue").execute(db, "SELECT id FROM auth_user WHERE id % 2 = 0")}
    contacts = c.pg("blue").execute(db, "SELECT count(*) FROM crm_contact WHERE user_id % 2 = 0")[0][0]
    assert {r[0] for r in c.pg("green").execute(db, "SELECT id FROM auth_user")} == kept
    assert c.pg("green").execute(db, "SELECT count(*) FROM crm_contact")[0][0] == contacts == USERS // 2
    assert c.pg("green").execute(db, "SELECT count(*) FROM crm_contact c LEFT JOIN auth_user u ON u.id = c.user_id "
                                     "WHERE u.id IS NULL")[0][0] == 0
    rows = json.loads(cp.stdout.splitlines()[-1])["data"]["rows"]
    assert rows["auth_user"] == len(kept) and rows["crm_contact"] == contacts


REFRESH_PHASES = ["digests", "copy", "prove", "swap", "done"]


def test_a_refresh_interrupted_at_each_phase_leaves_preproduction_as_it_was_or_complete(colours_factory, tmp_path):
    """SIGINT while the hook before each phase runs: before the swap, green keeps its own data and no copy is
    left; from the swap on, the refresh finishes (the copy was proved). Blue is untouched throughout."""
    c = colours_factory(database="postgresql")
    cfg = c.config()
    for colour in ("blue", "green"):
        assert api.release(cfg, colour, "v1.1").ok
    seed_production(c)
    db = cfg.databases[0].name
    blue_before = (c.pg("blue").row_checksums(db), c.pg("blue").schema(db))
    green_before, green_dbs = c.pg("green").row_checksums(db), databases(c, "green")
    for phase in REFRESH_PHASES:
        slow = c.edit(lambda d: d.update(refresh={"key_env": KEY_ENV, "rules": RULES},
                                         hooks={"before": {phase: [{"run": "sleep 60", "on": "primary"}]}}),
                      tmp_path / f"slow-{phase}.yaml")
        proc = subprocess.Popen(c.cli_argv("refresh", "--from", "blue", "--to", "green", config=slow),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
                                env={**c.env(), KEY_ENV: "k" * 24})
        deadline = time.monotonic() + 300
        while not c.hook_started(phase, "refresh", command="refresh"):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 130, (phase, out[-3000:] + err)
        assert (c.pg("blue").row_checksums(db), c.pg("blue").schema(db)) == blue_before, phase
        assert not (c.host("green").deploy_to / ".deploykit" / "lock").exists(), phase
        if REFRESH_PHASES.index(phase) < REFRESH_PHASES.index("swap"):
            assert c.pg("green").row_checksums(db) == green_before, phase  # as it was
            assert databases(c, "green") == green_dbs, phase  # no copy left behind
        else:
            users = {r[0] for r in c.pg("green").execute(db, "SELECT email FROM auth_user")}
            assert len(users) == USERS and not users & {person(i)["email"] for i in range(USERS)}, phase  # complete
            assert requests.get(f"http://{c.http['green']}/", timeout=30).status_code == 200, phase
    assert [o for o in originals() if o in green_text(c)] == []


def test_no_masking_key_is_refused_before_any_host_changes(colours_factory, tmp_path):
    c = colours_factory(database="postgresql")
    config = configure(c, tmp_path)
    cp = run(c, "refresh", "--from", "blue", "--to", "green", config=config, key=None)
    assert cp.returncode == 2 and KEY_ENV in cp.stderr, cp.stdout[-3000:] + cp.stderr


pytestmark = pytest.mark.rig
