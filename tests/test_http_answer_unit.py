"""The rule that judges one answer of an HTTP health check (pure logic): healthy, starting or definite."""
from __future__ import annotations

import pytest

from deploykit.config.specs import HealthCheck
from deploykit.http_answer import MISSING, judge, lookup, same


def check(**kw) -> HealthCheck:
    return HealthCheck("http", url="http://127.0.0.1:8000/health/", **kw)


def answer(status=200, body="ok", **kw) -> dict:
    return {"status": status, "body": body, **kw}


@pytest.mark.parametrize("got, starting", [
    ({"status": None, "error": "ConnectionRefusedError: [Errno 111] Connection refused", "error_kind": "refused"},
     True),
    ({"status": None, "error": "RemoteDisconnected: closed", "error_kind": "reset"}, True),
    ({"status": None, "error": "timeout: timed out", "error_kind": "timeout"}, True),
    (answer(502, "Bad Gateway"), True),
    (answer(503, "starting"), True),
    (answer(504, ""), True),
    ({"status": None, "error": "gaierror: [Errno -2] Name or service not known", "error_kind": "other"}, False),
    (answer(500, "Server Error (500)"), False),
    (answer(404, "Not Found"), False),
    (answer(400, "Bad Request (400)"), False),
    (answer(200, "not what was asked"), False),
])
def test_what_waiting_may_cure_and_what_it_does_not(got, starting):
    verdict = judge(got, check(contains="ok"))
    assert not verdict.healthy and verdict.starting is starting and verdict.definite is not starting, verdict


def test_healthy_answers_and_what_the_operator_reads():
    assert judge(answer(200, "ok"), check()).healthy
    assert judge(answer(503, "down for maintenance"), check(expect_status=503, contains="maintenance")).healthy
    v = judge(answer(500, "<h1>Server Error</h1>\n" + "x" * 200), check())
    assert v.answered.startswith("500 '<h1>Server Error</h1> xxx") and v.answered.endswith("...'")
    assert len(v.answered) < 100 and v.why == "status 500, expected 200"
    assert judge({"status": None, "error_kind": "refused", "error": "x"}, check()).answered == "connection refused"
    other = judge({"status": None, "error_kind": "other", "error": "gaierror: unknown host"}, check())
    assert other.answered == other.why == "gaierror: unknown host"


def test_a_redirect_not_followed_is_a_definite_answer_that_says_where():
    v = judge(answer(302, "", location="https://shop.example.com/health/"), check())
    assert v.definite and v.answered == "302 to https://shop.example.com/health/"
    assert v.why == "answered 302 to https://shop.example.com/health/, set follow_redirects: true if that is expected"
    assert judge(answer(301, "", location="/x/"), check(expect_status=301)).healthy


def test_a_400_without_a_host_header_points_at_allowed_hosts():
    assert "ALLOWED_HOSTS" in judge(answer(400, "Bad Request (400)"), check()).why
    assert "ALLOWED_HOSTS" not in judge(answer(400, "Bad Request (400)"), check(headers={"host": "x"})).why


def test_json_fields():
    body = '{"status": "ok", "db": {"ok": true, "latency": 1.0}, "checks": [{"name": "db"}], "n": 1}'
    assert judge(answer(200, body), check(json={"status": "ok", "db.ok": True, "checks.0.name": "db"})).healthy
    assert judge(answer(200, body), check(json={"db.latency": 1, "n": 1.0})).healthy
    for expected, why in [({"db.ok": False}, "the JSON's 'db.ok' is true, expected false"),
                          ({"n": True}, "the JSON's 'n' is 1, expected true"),
                          ({"db.missing": 1}, "the JSON has no 'db.missing'"),
                          ({"checks.3.name": "db"}, "the JSON has no 'checks.3.name'"),
                          ({"status": "OK"}, "the JSON's 'status' is \"ok\", expected \"OK\"")]:
        v = judge(answer(200, body), check(json=expected))
        assert v.definite and v.why == why, (expected, v)
    assert judge(answer(200, "<html>ok</html>"), check(json={"status": "ok"})).why == "the body is not JSON"
    assert judge(answer(200, "x" * 10, truncated=True), check(contains="y")).why.startswith("the body is over")


def test_lookup_and_same():
    doc = {"a": {"b": [10, {"c": None}]}}
    assert lookup(doc, "a.b.1.c") is None and lookup(doc, "a.b.0") == 10
    assert lookup(doc, "a.x") is MISSING and lookup(doc, "a.b.-1") is MISSING and lookup(doc, "a.b.2") is MISSING
    assert same(None, None) and not same(None, 0) and not same(0, False) and same([1, {"k": "v"}], [1.0, {"k": "v"}])
    assert not same({"k": 1}, {"k": 1, "j": 2}) and not same("1", 1)
