"""Remote helpers run exactly as the controller runs them: a subprocess of the
app's Python, JSON arguments on stdin, one JSON document on stdout.

DEPLOYKIT_HELPER_PYTHON=/path/to/python3.9 runs them with another interpreter
(the helpers promise Python 3.9+).
"""

import hashlib
import http.server
import io
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

REMOTE = Path(__file__).resolve().parent.parent / "deploykit" / "remote"
PY = os.environ.get("DEPLOYKIT_HELPER_PYTHON") or sys.executable


def call(helper, action, args=None, raw=None, ok=True, argv=None, read_only=False):
    """Run a helper; return the parsed JSON document. Checks the protocol.

    read_only=True runs it as a dry-run's Host does (DEPLOYKIT_READ_ONLY=1).
    """
    stdin = raw if raw is not None else json.dumps(args if args is not None else {})
    cmd = [PY, str(REMOTE / helper)] + (argv if argv is not None else [action])
    env = dict(os.environ, DEPLOYKIT_READ_ONLY="1") if read_only else {
        k: v for k, v in os.environ.items() if k != "DEPLOYKIT_READ_ONLY"}
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=60, env=env)
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, "expected one JSON line on stdout, got: %r (stderr %s)" % (proc.stdout, proc.stderr)
    doc = json.loads(lines[0])
    assert isinstance(doc, dict)
    if doc["ok"]:
        assert proc.returncode == 0
        assert isinstance(doc["changed"], bool)
    else:
        assert proc.returncode == 1
        assert set(doc) == {"ok", "error", "kind"}
        assert "\n" not in doc["error"] and doc["error"]
        assert "Traceback" not in proc.stdout
    if ok is not None:
        assert doc["ok"] is ok, (doc, proc.stderr)
    return doc


def files(action, args=None, **kw):
    return call("files.py", action, args, **kw)


def archives(action, args=None, **kw):
    return call("archives.py", action, args, **kw)


def locks(action, args=None, **kw):
    return call("locks.py", action, args, **kw)


def httpcheck(action, args=None, **kw):
    return call("httpcheck.py", action, args, **kw)


def sq(action, args=None, **kw):
    return call("sqlite.py", action, args, **kw)


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def sha(data):
    return hashlib.sha256(data).hexdigest()


def make_tree(root):
    (root / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_bytes(b"alpha\n")
    (root / "b" / "c.txt").write_bytes(b"charlie\n")
    (root / "d.bin").write_bytes(os.urandom(70000))
    (root / "b" / "link").symlink_to("../a.txt")
    return root


# --------------------------------------------------------------------------
# protocol


def test_bad_action_and_bad_json_shapes(tmp_path):
    doc = files("no_such_action", {}, ok=False)
    assert doc == {"ok": False, "error": doc["error"], "kind": "UnknownAction"}
    doc = files("sha256", raw="{not json", ok=False)
    assert doc["kind"] == "BadArguments" and "JSON" in doc["error"]
    assert files("sha256", raw="[1, 2]", ok=False)["kind"] == "BadArguments"
    assert files("sha256", {}, ok=False)["kind"] == "BadArguments"
    assert files("sha256", {"path": str(tmp_path / "nope")}, ok=False)["kind"] == "FileNotFoundError"
    assert files(None, {}, argv=[], ok=False)["kind"] == "UsageError"
    assert sq("frobnicate", {}, ok=False)["kind"] == "UnknownAction"
    assert sq("info", raw="{", ok=False)["kind"] == "BadArguments"


# --------------------------------------------------------------------------
# manifests and archives


def test_sha256_manifest_and_dir_size(tmp_path):
    root = make_tree(tmp_path / "media")
    doc = files("sha256", {"path": str(root / "a.txt")})
    assert doc == {"ok": True, "changed": False, "sha256": sha(b"alpha\n"), "size": 6}

    man = files("manifest", {"root": str(root)})
    assert list(man["files"]) == ["a.txt", "b/c.txt", "b/link", "d.bin"]
    assert man["files"]["b/c.txt"] == {"size": 8, "sha256": sha(b"charlie\n")}
    assert man["files"]["b/link"] == {"link": "../a.txt"}
    assert "missing" not in man
    assert files("hash_tree", {"dir": str(root)})["files"] == man["files"]

    gone = files("manifest", {"root": str(tmp_path / "nothing")})
    assert gone["files"] == {} and gone["missing"] is True

    size = files("dir_size", {"path": str(root)})
    assert size["files"] == 3 and size["bytes"] == 6 + 8 + 70000
    free = files("disk_free", {"path": str(tmp_path / "not" / "yet")})
    assert 0 < free["free_bytes"] <= free["total_bytes"]


@pytest.mark.parametrize("compress", [False, True])
def test_archive(tmp_path, compress):
    root = make_tree(tmp_path / "media")
    dest = tmp_path / "backups" / "b1" / ("media.tar.gz" if compress else "media.tar")
    doc = archives("archive", {"root": str(root), "dest": str(dest), "compress": compress})
    assert doc["changed"] is True
    data = dest.read_bytes()
    assert doc["sha256"] == sha(data) and doc["size"] == len(data)
    assert doc["files"] == files("manifest", {"root": str(root)})["files"]
    assert mode(dest) == 0o600
    assert mode(dest.parent) == 0o700 and mode(dest.parent.parent) == 0o700
    assert not list(dest.parent.glob("*.tmp-*"))
    with tarfile.open(dest, "r:*") as tar:
        names = tar.getnames()
        assert sorted(names) == ["a.txt", "b", "b/c.txt", "b/link", "d.bin", "empty"]
        assert tar.extractfile("b/c.txt").read() == b"charlie\n"
        assert tar.getmember("b/link").issym()
    if compress:
        assert data[:2] == b"\x1f\x8b"

    empty = archives("archive", {"root": str(tmp_path / "none"), "dest": str(tmp_path / "e.tar")})
    assert empty["missing"] is True and empty["files"] == {}
    with tarfile.open(tmp_path / "e.tar") as tar:
        assert tar.getnames() == []

    dry = archives("archive", {"root": str(root), "dest": str(tmp_path / "dry.tar")}, read_only=True, ok=False)
    assert dry["kind"] == "ReadOnlyRefused" and not (tmp_path / "dry.tar").exists()


def _snapshot(root, tmp_path, name="snap.tar"):
    doc = archives("archive", {"root": str(root), "dest": str(tmp_path / name)})
    return tmp_path / name, doc["files"]


def test_mirror_restore(tmp_path):
    root = make_tree(tmp_path / "media")
    archive, manifest = _snapshot(root, tmp_path)
    d_before = os.stat(root / "d.bin")

    (root / "new.txt").write_bytes(b"added later\n")
    (root / "uploads" / "2024").mkdir(parents=True)
    (root / "uploads" / "2024" / "x.jpg").write_bytes(b"jpeg")
    (root / "a.txt").write_bytes(b"ALPHA changed\n")
    (root / "b" / "c.txt").unlink()
    (root / "b" / "link").unlink()
    aside = tmp_path / "aside" / "run1"
    args = {"root": str(root), "archive": str(archive), "files": manifest, "aside": str(aside)}

    dry = archives("mirror_restore", args, read_only=True, ok=False)
    assert dry["kind"] == "ReadOnlyRefused"
    assert (root / "new.txt").exists() and (root / "a.txt").read_bytes() == b"ALPHA changed\n" and not aside.exists()

    doc = archives("mirror_restore", args)
    assert doc["changed"] is True
    assert doc["moved_aside"] == ["new.txt", "uploads/2024/x.jpg"]
    assert doc["restored"] == ["a.txt", "b/c.txt", "b/link"]
    assert doc["unchanged"] == 1
    assert doc["verified"] is True
    assert files("manifest", {"root": str(root)})["files"] == manifest
    # unchanged file untouched, not rewritten
    d_after = os.stat(root / "d.bin")
    assert (d_after.st_ino, d_after.st_mtime_ns) == (d_before.st_ino, d_before.st_mtime_ns)
    # moved, not deleted; the replaced version is kept too
    assert (aside / "new.txt").read_bytes() == b"added later\n"
    assert (aside / "uploads" / "2024" / "x.jpg").read_bytes() == b"jpeg"
    assert doc["replaced_kept"] == ["a.txt"]
    assert (aside / "a.txt").read_bytes() == b"ALPHA changed\n"
    for d in (aside, aside / "uploads", aside / "uploads" / "2024", aside.parent):
        assert mode(d) == 0o700
    assert (root / "empty").is_dir() and (root / "uploads" / "2024").is_dir()  # dirs left alone
    assert not list(root.rglob("*.tmp-*"))

    again = archives("mirror_restore", dict(args, aside=str(tmp_path / "aside" / "run2")))
    assert again["changed"] is False and again["unchanged"] == 4
    assert not (tmp_path / "aside" / "run2").exists()

    # into a missing root
    fresh = tmp_path / "fresh"
    doc = archives("mirror_restore", dict(args, root=str(fresh), aside=str(tmp_path / "aside" / "run3")))
    assert doc["restored"] == sorted(manifest)
    assert files("manifest", {"root": str(fresh)})["files"] == manifest


def test_mirror_restore_archive_lacking_a_file(tmp_path):
    root = make_tree(tmp_path / "media")
    archive, manifest = _snapshot(root, tmp_path)
    manifest = dict(manifest, **{"ghost.txt": {"size": 3, "sha256": sha(b"boo")}})
    (root / "new.txt").write_bytes(b"x")
    doc = archives("mirror_restore", {"root": str(root), "archive": str(archive), "files": manifest,
                                   "aside": str(tmp_path / "aside")}, ok=False)
    assert doc["kind"] == "ArchiveIncomplete"
    assert (root / "new.txt").exists() and not (tmp_path / "aside").exists()  # nothing changed


def _evil_tar(path, name, linkname=None, then=None):
    with tarfile.open(path, "w") as tar:
        ti = tarfile.TarInfo("ok.txt")
        ti.size = 2
        tar.addfile(ti, io.BytesIO(b"ok"))
        ti = tarfile.TarInfo(name)
        if linkname is not None:
            ti.type = tarfile.SYMTYPE
            ti.linkname = linkname
            tar.addfile(ti)
        else:
            ti.size = 4
            tar.addfile(ti, io.BytesIO(b"evil"))
        if then:
            ti = tarfile.TarInfo(then)
            ti.size = 4
            tar.addfile(ti, io.BytesIO(b"evil"))
    return path


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/tmp/deploykit-evil.txt"])
def test_traversal_members_refused(tmp_path, name):
    archive = _evil_tar(tmp_path / "evil.tar", name)
    root = tmp_path / "work" / "root"
    root.mkdir(parents=True)
    manifest = {"ok.txt": {"size": 2, "sha256": sha(b"ok")}}
    doc = archives("mirror_restore", {"root": str(root), "archive": str(archive), "files": manifest,
                                   "aside": str(tmp_path / "aside")}, ok=False)
    assert doc["kind"] == "UnsafePath"
    doc = archives("extract", {"archive": str(archive), "dest": str(root / "x")}, ok=False)
    assert doc["kind"] == "UnsafePath"
    assert not (tmp_path / "work" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not os.path.exists("/tmp/deploykit-evil.txt")
    assert list(root.iterdir()) == []  # refused before anything was written
    bad = archives("mirror_restore", {"root": str(root), "archive": str(tmp_path / "evil.tar"),
                                   "files": {"../x": {"size": 1, "sha256": "0"}}, "aside": str(tmp_path / "a")},
                ok=False)
    assert bad["kind"] == "UnsafePath"


def test_extract_and_symlink_escape(tmp_path):
    root = make_tree(tmp_path / "src")
    (root / "b" / "c.txt").chmod(0o640)
    archive = tmp_path / "code.tar.gz"
    archives("archive", {"root": str(root), "dest": str(archive), "compress": True})
    dest = tmp_path / "releases" / "r1"
    doc = archives("extract", {"archive": str(archive), "dest": str(dest)})
    assert doc["count"] == 6
    assert files("manifest", {"root": str(dest)})["files"] == files("manifest", {"root": str(root)})["files"]
    assert mode(dest / "b" / "c.txt") == 0o640

    evil = _evil_tar(tmp_path / "escape.tar", "lnk", linkname="/etc", then="lnk/evil.txt")
    doc = archives("extract", {"archive": str(evil), "dest": str(tmp_path / "x")}, ok=False)
    assert doc["kind"] == "UnsafePath" and not (tmp_path / "x").exists()
    evil = _evil_tar(tmp_path / "escape2.tar", "lnk", linkname="../../..", then="lnk/evil.txt")
    assert archives("extract", {"archive": str(evil), "dest": str(tmp_path / "x")}, ok=False)["kind"] == "UnsafePath"


# --------------------------------------------------------------------------
# backup verification


def _backup_dir(tmp_path, complete=True):
    bdir = tmp_path / "backups" / "20240101T000000Z"
    (bdir / "db-default").mkdir(parents=True)
    (bdir / "db-default" / "toc.dat").write_bytes(b"table of contents")
    (bdir / "db-default" / "3001.dat.gz").write_bytes(os.urandom(5000))
    media = make_tree(tmp_path / "media")
    arch = archives("archive", {"root": str(media), "dest": str(bdir / "media.tar")})
    db_files = {"db-default/" + k: v for k, v in files("hash_tree", {"dir": str(bdir / "db-default")})["files"].items()}
    manifest = {
        "id": "20240101T000000Z",
        "complete": complete,
        "items": [
            {"name": "db-default", "kind": "postgres", "files": db_files},
            {"name": "media", "kind": "media", "files": {"media.tar": {"size": arch["size"], "sha256": arch["sha256"]}}},
        ],
    }
    files("write_json", {"path": str(bdir / "manifest.json"), "data": manifest})
    return bdir


def test_verify_backup(tmp_path):
    bdir = _backup_dir(tmp_path)
    good = archives("verify_backup", {"dir": str(bdir)})
    assert good["verified"] is True and good["problems"] == []
    total = sum(p.stat().st_size for p in bdir.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert good["bytes"] == total and good["files"] == 3

    toc = bdir / "db-default" / "toc.dat"
    data = bytearray(toc.read_bytes())
    data[3] ^= 1
    toc.write_bytes(bytes(data))
    (bdir / "media.tar").unlink()
    bad = archives("verify_backup", {"dir": str(bdir)})
    assert bad["ok"] is True and bad["verified"] is False
    assert bad["problems"] == ["db-default/toc.dat: sha256 mismatch", "media.tar: missing"]

    (bdir / "manifest.json").unlink()
    nom = archives("verify_backup", {"dir": str(bdir)})
    assert nom["verified"] is False and nom["problems"] == ["manifest.json: missing"]

    (bdir / "manifest.json").write_text("{truncated")
    assert "does not parse" in archives("verify_backup", {"dir": str(bdir)})["problems"][0]

    inc = _backup_dir(tmp_path / "other", complete=False)
    doc = archives("verify_backup", {"dir": str(inc)})
    assert doc["verified"] is False and doc["problems"] == ["manifest.json: backup not complete"]


# --------------------------------------------------------------------------
# locks


def test_locks(tmp_path):
    lock = tmp_path / "app" / ".deploykit" / "lock"
    first = locks("lock_acquire", {"path": str(lock), "info": {"run_id": "run-1", "user": "ann", "pid": 1}})
    assert first["acquired"] is True and first["changed"] is True
    assert mode(lock) == 0o600 and mode(lock.parent) == 0o700
    on_disk = json.loads(lock.read_text())
    assert on_disk["run_id"] == "run-1" and on_disk["since"].endswith("Z")

    second = locks("lock_acquire", {"path": str(lock), "info": {"run_id": "run-2"}})
    assert second["acquired"] is False and second["changed"] is False
    assert second["holder"]["run_id"] == "run-1" and second["holder"]["user"] == "ann"

    read = locks("lock_read", {"path": str(lock)})
    assert read["held"] is True and read["holder"]["run_id"] == "run-1"

    wrong = locks("lock_release", {"path": str(lock), "run_id": "run-2"})
    assert wrong["released"] is False and wrong["holder"]["run_id"] == "run-1" and lock.exists()
    dry = locks("lock_release", {"path": str(lock), "run_id": "x", "force": True}, read_only=True, ok=False)
    assert dry["kind"] == "ReadOnlyRefused" and lock.exists()
    assert locks("lock_read", {"path": str(lock)}, read_only=True)["holder"]["run_id"] == "run-1"
    forced = locks("lock_release", {"path": str(lock), "run_id": "run-2", "force": True})
    assert forced["released"] is True and not lock.exists()
    assert locks("lock_read", {"path": str(lock)}) == {"ok": True, "changed": False, "held": False, "holder": None}

    locks("lock_acquire", {"path": str(lock), "info": {"run_id": "run-3"}})
    assert locks("lock_release", {"path": str(lock), "run_id": "run-3"})["released"] is True
    lock.write_text("garbage")
    assert locks("lock_acquire", {"path": str(lock), "info": {}})["holder"] == {"raw": "garbage"}
    assert not list(lock.parent.glob("*.tmp-*"))


# --------------------------------------------------------------------------
# small file operations


def test_small_file_actions(tmp_path):
    target = tmp_path / "state" / "releases.json"
    assert files("read_json", {"path": str(target)}) == {"ok": True, "changed": False, "exists": False, "data": None}
    assert files("write_json", {"path": str(target), "data": {"a": [1]}}, read_only=True, ok=False)["kind"] \
        == "ReadOnlyRefused"
    assert not target.exists() and not target.parent.exists()
    assert files("write_json", {"path": str(target), "data": {"a": [1]}})["changed"] is True
    assert mode(target) == 0o600 and mode(target.parent) == 0o700
    assert files("write_json", {"path": str(target), "data": {"a": [1]}})["changed"] is False
    assert files("read_json", {"path": str(target)})["data"] == {"a": [1]}

    env = tmp_path / "shared" / ".env"
    files("write_file", {"path": str(env), "content": "SECRET=1\n"})
    assert env.read_text() == "SECRET=1\n" and mode(env) == 0o600
    files("write_file", {"path": str(env), "content": "X\n", "mode": "0640"})
    assert mode(env) == 0o640

    journal = tmp_path / "j" / "journal" / "run.jsonl"
    files("append_line", {"path": str(journal), "line": '{"step": 1}'})
    files("append_line", {"path": str(journal), "line": '{"step": 2}'})
    assert journal.read_text() == '{"step": 1}\n{"step": 2}\n' and mode(journal) == 0o600
    assert files("append_line", {"path": str(journal), "line": "a\nb"}, ok=False)["kind"] == "BadArguments"

    src = tmp_path / "releases" / "r1"
    src.mkdir(parents=True)
    dest = tmp_path / "failed" / "r1"
    assert files("move", {"src": str(src), "dest": str(dest)}, read_only=True, ok=False)["kind"] == "ReadOnlyRefused"
    assert src.exists() and not dest.exists()
    files("move", {"src": str(src), "dest": str(dest)})
    assert dest.is_dir() and not src.exists()
    src.mkdir()
    assert files("move", {"src": str(src), "dest": str(dest)}, ok=False)["kind"] == "DestinationExists"

    link = tmp_path / "current"
    doc = files("atomic_symlink", {"link": str(link), "target": "releases/r1"})
    assert doc == {"ok": True, "changed": True, "previous": None}
    doc = files("atomic_symlink", {"link": str(link), "target": "releases/r2"})
    assert doc["previous"] == "releases/r1" and os.readlink(link) == "releases/r2"
    assert files("atomic_symlink", {"link": str(link), "target": "releases/r2"})["changed"] is False
    assert files("atomic_symlink", {"link": str(src), "target": "x"}, ok=False)["kind"] == "NotASymlink"


# --------------------------------------------------------------------------
# http_check


class _Handler(http.server.BaseHTTPRequestHandler):
    calls = {"flaky": 0}

    def do_GET(self):
        if self.path == "/flaky":
            self.calls["flaky"] += 1
            code, body = (503, b"starting") if self.calls["flaky"] < 3 else (200, b"up now")
        elif self.path == "/ok":
            code, body = 200, b"hello, I am healthy"
        elif self.path == "/host":
            code, body = 200, ("host=%s" % self.headers.get("Host")).encode()
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        else:
            code, body = 500, b"Server Error"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


@pytest.fixture
def http_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield "http://127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def test_http_check(http_url):
    doc = httpcheck("http_check", {"url": http_url + "/ok", "contains": "healthy", "timeout": 5})
    assert doc["healthy"] is True and doc["status"] == 200 and doc["attempts"] == 1
    assert doc["body"] == "hello, I am healthy"

    doc = httpcheck("http_check", {"url": http_url + "/flaky", "timeout": 5, "interval": 0.05})
    assert doc["healthy"] is True and doc["attempts"] == 3 and doc["body"] == "up now"

    doc = httpcheck("http_check", {"url": http_url + "/boom", "timeout": 0.4, "interval": 0.1})
    assert doc["ok"] is True and doc["healthy"] is False and doc["status"] == 500
    assert doc["attempts"] >= 2 and doc["seconds"] < 3

    doc = httpcheck("http_check", {"url": http_url + "/ok", "contains": "nope", "timeout": 0.2, "interval": 0.1})
    assert doc["healthy"] is False and doc["status"] == 200


def test_http_check_connection_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    doc = httpcheck("http_check", {"url": "http://127.0.0.1:%d/" % port, "timeout": 0.5, "interval": 0.1})
    assert doc["healthy"] is False and doc["status"] is None and doc["attempts"] >= 2
    assert "error" in doc and time.monotonic() - t0 < 5


def test_http_probe_asks_once_and_reports_the_answer_as_it_came(http_url):
    """One request per call (the controller drives the attempts): the flaky URL's 503s come back one by one."""
    _Handler.calls["flaky"] = 0
    assert [httpcheck("http_probe", {"url": http_url + "/flaky"})["status"] for _ in range(3)] == [503, 503, 200]
    doc = httpcheck("http_probe", {"url": http_url + "/host", "headers": {"Host": "shop.example.com"}},
                    read_only=True)  # a dry-run may ask
    assert doc["status"] == 200 and doc["body"] == "host=shop.example.com" and doc["truncated"] is False
    doc = httpcheck("http_probe", {"url": http_url + "/moved", "follow_redirects": False})
    assert doc["status"] == 302 and doc["location"] == "/ok" and doc["body"] == ""
    doc = httpcheck("http_probe", {"url": http_url + "/moved", "follow_redirects": True})
    assert doc["status"] == 200 and doc["body"] == "hello, I am healthy" and doc["url"].endswith("/ok")
    assert httpcheck("http_probe", {"url": "ftp://x"}, ok=False)["kind"] == "BadArguments"


def test_http_probe_errors_say_whether_the_app_may_be_starting():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    doc = httpcheck("http_probe", {"url": "http://127.0.0.1:%d/" % port})
    assert doc["status"] is None and doc["error_kind"] == "refused" and "refused" in doc["error"]
    silent = socket.socket()  # accepts, never answers: the request times out
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    try:
        doc = httpcheck("http_probe", {"url": "http://127.0.0.1:%d/" % silent.getsockname()[1],
                                       "request_timeout": 0.5})
    finally:
        silent.close()
    assert doc["status"] is None and doc["error_kind"] == "timeout", doc
    doc = httpcheck("http_probe", {"url": "http://no-such-host.invalid/"})
    assert doc["status"] is None and doc["error_kind"] == "other", doc


# --------------------------------------------------------------------------
# sqlite


def _make_db(path, rows=500, wal=True):
    conn = sqlite3.connect(str(path))
    if wal:
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, batch INTEGER, name TEXT, data BLOB)")
    conn.execute('CREATE TABLE "odd ""name""" (k TEXT, v REAL)')
    conn.executemany("INSERT INTO item (batch, name, data) VALUES (0, ?, ?)",
                     [("n%d" % i, os.urandom(32)) for i in range(rows)])
    conn.execute('INSERT INTO "odd ""name""" VALUES (?, ?)', ("pi", 3.14159))
    conn.commit()
    conn.close()


def test_sqlite_backup_while_writing(tmp_path):
    db = tmp_path / "app" / "db.sqlite3"
    db.parent.mkdir()
    _make_db(db)
    batch_size = 50
    stop = threading.Event()
    in_txn = threading.Event()
    committed = []

    def writer():
        conn = sqlite3.connect(str(db), timeout=10, isolation_level=None)
        n = 0
        while not stop.is_set():
            n += 1
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO item (batch, name) VALUES (?, ?)",
                             [(n, "w%d" % i) for i in range(batch_size)])
            in_txn.set()
            time.sleep(0.01)  # an open write transaction
            conn.execute("COMMIT")
            committed.append(n)
        conn.close()

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert in_txn.wait(5)
        # another connection holds an uncommitted write for the whole backup
        holder = sqlite3.connect(str(db), timeout=10, isolation_level=None)
        dest = tmp_path / "backups" / "b1" / "db-default.sqlite3"
        docs = [sq("backup", {"src": str(db), "dest": str(dest)}) for _ in range(2)]
        holder.close()
    finally:
        stop.set()
        t.join()
    assert committed, "writer made progress during the backups"
    doc = docs[-1]
    assert doc["changed"] is True and doc["integrity"] == "ok"
    assert mode(dest) == 0o600 and mode(dest.parent) == 0o700
    assert doc["sha256"] == sha(dest.read_bytes()) and doc["size"] == dest.stat().st_size
    assert not list(dest.parent.glob("*.tmp-*")) and not Path(str(dest) + "-wal").exists()
    copy = sqlite3.connect(str(dest))
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    n = copy.execute("SELECT COUNT(*) FROM item").fetchone()[0]
    per_batch = copy.execute("SELECT batch, COUNT(*) FROM item WHERE batch > 0 GROUP BY batch").fetchall()
    copy.close()
    assert doc["tables"] == {"item": n, 'odd "name"': 1}
    assert n >= 500 and all(c == batch_size for _, c in per_batch)  # whole transactions only

    info = sq("info", {"path": str(dest)})
    assert info["exists"] and info["tables"]["item"] == n
    assert sq("info", {"path": str(tmp_path / "nope.db")})["exists"] is False
    missing = sq("backup", {"src": str(tmp_path / "nope.db"), "dest": str(tmp_path / "x.db")}, ok=False)
    assert missing["kind"] == "MissingDatabase" and not (tmp_path / "nope.db").exists()


def _leave_wal(db, sql):
    """Commit in a process that dies without checkpointing: the -wal stays."""
    code = (
        "import sqlite3, os, sys\n"
        "c = sqlite3.connect(sys.argv[1])\n"
        "c.execute('PRAGMA wal_autocheckpoint=0')\n"
        "c.execute(sys.argv[2]); c.commit(); os._exit(0)\n"
    )
    subprocess.run([sys.executable, "-c", code, str(db), sql], check=True)
    assert os.path.getsize(str(db) + "-wal") > 0


def test_sqlite_restore(tmp_path):
    db = tmp_path / "app" / "db.sqlite3"
    db.parent.mkdir()
    _make_db(db)
    os.chmod(db, 0o644)
    backup = tmp_path / "backups" / "b1" / "db.sqlite3"
    sq("backup", {"src": str(db), "dest": str(backup)})
    before = sq("checksums", {"path": str(backup)})["tables"]
    assert before["item"]["rows"] == 500

    conn = sqlite3.connect(str(db))
    conn.execute("DELETE FROM item WHERE id % 2 = 0")
    conn.commit()
    conn.close()
    _leave_wal(db, "INSERT INTO item (batch, name) VALUES (99, 'only in the wal')")
    live = sq("checksums", {"path": str(db)})["tables"]
    assert live["item"]["rows"] == 251 and live != before

    seen_missing = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            if not db.exists():
                seen_missing.append(time.monotonic())

    w = threading.Thread(target=watch)
    w.start()
    aside = tmp_path / "aside" / "db.sqlite3.before-restore"
    try:
        dry = sq("restore", {"src": str(backup), "dest": str(db), "aside": str(aside)}, read_only=True, ok=False)
        assert dry["kind"] == "ReadOnlyRefused" and not aside.exists()
        doc = sq("restore", {"src": str(backup), "dest": str(db), "aside": str(aside)})
    finally:
        stop.set()
        w.join()
    assert seen_missing == []  # dest never disappeared: os.replace
    assert doc["previous_kept_at"] == str(aside)
    assert sq("checksums", {"path": str(db)})["tables"] == before
    assert mode(db) == 0o644
    for suffix in ("-wal", "-shm", "-journal"):
        assert not os.path.exists(str(db) + suffix)
    assert not list(db.parent.glob("*.tmp-*"))
    # the replaced database is kept, committed WAL content included
    assert mode(aside.parent) == 0o700
    kept = sqlite3.connect(str(aside))
    assert kept.execute("SELECT COUNT(*) FROM item WHERE batch = 99").fetchone()[0] == 1
    kept.close()
    assert sq("checksums", {"path": str(aside)})["tables"] == live

    # a corrupt backup is refused and the live database is left alone
    bad = tmp_path / "bad.sqlite3"
    data = bytearray(backup.read_bytes())
    data[len(data) // 2: len(data) // 2 + 4096] = b"\xff" * 4096
    bad.write_bytes(bytes(data))
    live_sha = sha(db.read_bytes())
    doc = sq("restore", {"src": str(bad), "dest": str(db)}, ok=False)
    assert doc["kind"] in ("CorruptDatabase", "DatabaseError")
    assert sha(db.read_bytes()) == live_sha
    bad.write_bytes(b"not a database at all" * 100)
    assert sq("restore", {"src": str(bad), "dest": str(db)}, ok=False)["kind"] == "DatabaseError"
    assert sq("restore", {"src": str(tmp_path / "none"), "dest": str(db)}, ok=False)["kind"] == "MissingDatabase"


def test_mirror_restore_type_changes(tmp_path):
    root = make_tree(tmp_path / "media")
    archive, manifest = _snapshot(root, tmp_path)
    (root / "a.txt").unlink()
    (root / "a.txt").mkdir()  # a directory where a file belongs
    (root / "a.txt" / "inner").write_bytes(b"inner")
    for p in (root / "b").iterdir():
        p.unlink()
    (root / "b").rmdir()
    (root / "b").write_bytes(b"a file where a directory belongs")
    (root / "d.bin").unlink()
    (root / "d.bin").symlink_to("/etc/hostname")  # a symlink where a file belongs
    aside = tmp_path / "aside"
    doc = archives("mirror_restore", {"root": str(root), "archive": str(archive), "files": manifest,
                                   "aside": str(aside)})
    assert doc["moved_aside"] == ["a.txt", "a.txt/inner", "b"]
    assert doc["restored"] == sorted(manifest)
    assert files("manifest", {"root": str(root)})["files"] == manifest
    assert (aside / "a.txt" / "inner").read_bytes() == b"inner"
    assert (aside / "b").read_bytes() == b"a file where a directory belongs"
    assert os.readlink(aside / "d.bin") == "/etc/hostname"


def test_tree_stamp_changes_with_any_change_and_says_how_settled_the_tree_is(tmp_path):
    """The transfer's frozen media pass sends nothing when the stamp taken before the first pass still holds:
    so every kind of change, a same-size rewrite that keeps the mtime included, must change it."""
    root = tmp_path / "media"
    (root / "a").mkdir(parents=True)
    (root / "a" / "one.txt").write_text("one")
    (root / "two.txt").write_text("two")
    os.utime(root / "two.txt", ns=(1_000_000_000, 1_000_000_000))

    def stamp():
        return call("files.py", "tree_stamp", {"root": str(root)}, read_only=True)

    first = stamp()
    assert first["entries"] == 3 and 0 <= first["settled_s"] < 60 and stamp()["stamp"] == first["stamp"]
    before = os.stat(root / "two.txt")
    time.sleep(0.05)
    (root / "two.txt").write_text("TWO")  # same size ...
    os.utime(root / "two.txt", ns=(before.st_atime_ns, before.st_mtime_ns))  # ... and the old mtime back
    rewritten = stamp()
    assert rewritten["stamp"] != first["stamp"]  # the ctime moved, and no program can set it back
    (root / "a" / "new.txt").write_text("")
    assert stamp()["stamp"] != rewritten["stamp"]
    (root / "a" / "new.txt").unlink()
    os.chmod(root / "a" / "one.txt", 0o640)
    assert stamp()["stamp"] not in (first["stamp"], rewritten["stamp"])
    assert call("files.py", "tree_stamp", {"root": str(tmp_path / "nothing")}) == {
        "ok": True, "changed": False, "missing": True}
