"""The rig's load loop (deploykit_testing/load.py) against a tiny local HTTP server that plays the app.

The server answers GET /api/books/ with 200 and a POST with 201, or, while "frozen", 503 with Retry-After
(or without it, when told to); it records each title it accepted. Stopping it mid-loop makes the loop record
connection errors, not die.
"""
from __future__ import annotations

import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from deploykit_testing import load
from deploykit_testing.sshd import unused_address


class App:
    def __init__(self):
        self.frozen = False
        self.retry_after = True
        self.accepted: list[str] = []
        self.seen: list[tuple[str, dict]] = []
        app = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def answer(self, status, headers=()):
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def do_GET(self):
                app.seen.append(("GET", {"connection": self.headers.get("Connection")}))
                self.answer(200 if self.path == "/api/books/" else 404)

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                form = {k: v[0] for k, v in urllib.parse.parse_qs(body).items()}
                app.seen.append(("POST", form))
                if app.frozen:
                    self.answer(503, [("Retry-After", "5")] if app.retry_after else [])
                    return
                app.accepted.append(form["title"])
                self.answer(201)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self):
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def app():
    a = App()
    yield a
    a.stop()


def test_a_loop_alternates_reads_and_unique_writes_and_stops_at_its_limit(app):
    loop = load.LoadLoop(app.url, limit=20, author="Tester", fields={"sleep": "0"})
    loop.start()
    records = loop.join(timeout=60)
    assert [r.method for r in records] == ["GET", "POST"] * 10 and [r.n for r in records] == list(range(20))
    assert not loop.running
    titles = load.accepted_writes(records)
    assert len(titles) == 10 == len(set(titles)) and titles == app.accepted
    assert all(t.startswith(loop.prefix) for t in titles)
    assert all(form["author"] == "Tester" and form["sleep"] == "0" for m, form in app.seen if m == "POST")
    assert all(form["connection"] == "close" for m, form in app.seen if m == "GET")  # one connection each
    assert not load.failed_reads(records) and not load.refused_writes(records) and not load.unavailable(records)
    assert all(r.sent <= r.answered and r.status in (200, 201) and r.error is None for r in records)
    assert [r.title for r in records if r.method == "GET"] == [None] * 10
    assert load.summary(records)["answers"] == {"GET 200": 10, "POST 201": 10}


def test_refused_writes_with_and_without_retry_after_and_a_window_of_them(app):
    loop = load.LoadLoop(app.url, limit=10_000, pause=0.005).start()
    loop.wait_for(10)
    app.frozen = True
    start = time.time()
    seen = len(loop.snapshot())
    loop.wait_for(seen + 10)
    app.retry_after = False
    seen = len(loop.snapshot())
    loop.wait_for(seen + 10)
    end = time.time()
    app.frozen, app.retry_after = False, True
    loop.wait_for(len(loop.snapshot()) + 10)
    records = loop.stop()
    assert not loop.running and len(records) < 10_000

    refused = load.refused_writes(records)
    assert refused and all(r.title and r.title not in app.accepted for r in refused)
    marks = load.unavailable(records)
    assert {has for _, has in marks} == {True, False}
    assert all((r.retry_after == "5") == has for r, has in marks)
    assert sorted(load.accepted_writes(records)) == sorted(app.accepted)  # every 2xx write is in the app
    frozen = load.writes(load.within(records, start, end))  # sent after the freeze began, answered before its end
    assert frozen and all(r.status == 503 for r in frozen) and set(frozen) <= set(refused)
    assert all(start <= r.sent <= r.answered <= end for r in frozen)
    assert not load.failed_reads(records)  # reads are served while writes are refused
    assert load.summary(records)["503_without_retry_after"] == sum(1 for _, has in marks if not has)


def test_no_answer_is_recorded_as_an_error_and_the_loop_goes_on(app):
    loop = load.LoadLoop("http://%s:%d" % unused_address(), limit=6, timeout=2).start()
    records = loop.join(timeout=60)
    assert len(records) == 6 and all(r.status is None and r.error.startswith("ConnectionError") for r in records)
    assert len(load.failed_reads(records)) == 3 and not load.accepted_writes(records)
    assert [r.title is not None for r in records] == [False, True] * 3  # a write that got no answer keeps its title


def test_a_server_gone_mid_loop_fails_the_reads_after_it(app):
    loop = load.LoadLoop(app.url, limit=10_000, timeout=2).start()
    loop.wait_for(6)
    app.stop()
    done = len(loop.snapshot())
    loop.wait_for(done + 6)
    records = loop.stop()
    failed = load.failed_reads(records)
    assert failed and all(r.error for r in failed)
    assert load.summary(records)["errors"]
