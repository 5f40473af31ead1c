"""What one answer to an HTTP health check means: healthy, the app still starting, or a definite no.

Pure logic, kept apart from the loop that asks (work/health.py) so the rule
can be read and tested on its own:

- healthy: the expected status, and the body as expected (`contains`, `json`);
- starting (retried until the check's `timeout`): connection refused or
  reset, a request timeout, or 502/503/504 (what a proxy in front answers
  while the app behind it starts);
- definite (counted; `fail_after` of them in a row fail at once): any other
  answer, i.e. an HTTP answer from the app that is not the expected one
  (wrong status; right status but body or JSON not as expected; a redirect
  not followed), and errors that waiting does not cure (an unknown host
  name, a refused TLS certificate).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

STARTING_STATUSES = frozenset({502, 503, 504})
STARTING_ERRORS = frozenset({"refused", "reset", "timeout"})
_ERROR_TEXT = {"refused": "connection refused", "reset": "connection reset", "timeout": "no answer in time"}
EXCERPT = 80  # characters of a body shown in progress lines and failure messages


@dataclass(frozen=True)
class Verdict:
    healthy: bool
    starting: bool  # not healthy, and waiting may cure it
    answered: str  # what the app answered, for the operator: "200", "500 'Server Error'", "connection refused"
    why: str = ""  # what was wrong with it, when not healthy

    @property
    def definite(self) -> bool:
        return not self.healthy and not self.starting


def excerpt(body: str | None) -> str:
    text = " ".join((body or "").split())
    return text if len(text) <= EXCERPT else text[:EXCERPT - 3] + "..."


def judge(answer: dict, check) -> Verdict:
    """The verdict on one answer of the httpcheck helper's http_probe, for a HealthCheck."""
    status = answer.get("status")
    if status is None:
        kind = answer.get("error_kind") or "other"
        said = _ERROR_TEXT.get(kind) or (answer.get("error") or "no answer")
        return Verdict(False, kind in STARTING_ERRORS, said, said)
    body = answer.get("body") or ""
    answered = f"{status} {excerpt(body)!r}" if body.strip() else str(status)
    if status != check.expect_status:
        where = answer.get("location")
        if 300 <= status < 400 and where and not check.follow_redirects:
            return Verdict(False, False, f"{status} to {where}",
                           f"answered {status} to {where}, set follow_redirects: true if that is expected")
        why = f"status {status}, expected {check.expect_status}"
        if status == 400 and not any(k.lower() == "host" for k in check.headers):
            why += " (Django answers 400 to a Host not in ALLOWED_HOSTS: send it with headers: {Host: ...})"
        return Verdict(False, status in STARTING_STATUSES, answered, why)
    if answer.get("truncated") and (check.contains is not None or check.json is not None):
        return Verdict(False, False, answered, "the body is over 1 MiB, too long to check")
    if check.contains is not None and check.contains not in body:
        return Verdict(False, False, answered, f"the body does not contain {check.contains!r}")
    if check.json is not None:
        why = json_mismatch(body, check.json)
        if why:
            return Verdict(False, False, answered, why)
    return Verdict(True, False, answered)


MISSING = object()


def json_mismatch(body: str, expected: dict[str, Any]) -> str:
    """Why the JSON body does not hold the expected values ('' when it does)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return "the body is not JSON"
    for path, want in expected.items():
        got = lookup(doc, path)
        if got is MISSING:
            return f"the JSON has no {path!r}"
        if not same(got, want):
            return f"the JSON's {path!r} is {json.dumps(got)}, expected {json.dumps(want)}"
    return ""


def lookup(doc: Any, path: str) -> Any:
    """The value at a dotted path (`db.ok`, a list item as `checks.0`), or MISSING."""
    for part in path.split("."):
        if isinstance(doc, dict) and part in doc:
            doc = doc[part]
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return MISSING
    return doc


def same(got: Any, want: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0, lists and mappings compared item by item."""
    if isinstance(got, bool) or isinstance(want, bool) or got is None or want is None:
        return type(got) is type(want) and got == want
    if isinstance(got, (int, float)) and isinstance(want, (int, float)):
        return got == want
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(same(got[k], want[k]) for k in got)
    return type(got) is type(want) and got == want
