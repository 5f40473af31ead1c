"""A bounded load loop against the app: reads and writes, each answer recorded, for tests of what traffic sees.

    loop = LoadLoop(colours.nginx.url(), limit=400).start()
    ... deploykit transfer ...
    records = loop.stop()
    assert not failed_reads(records)

One thread, until stopped or `limit` requests: a GET of /api/books/, then a
POST of a new book whose title is unique to this loop and request, then a GET
again, and so on. Every request opens its own connection (`Connection:
close`): a kept-alive connection that a reloading nginx closes between two
requests would show up as a failure that a browser retries unseen.
Timeouts are short: a request that hangs is an answer too (recorded as an
error). Each request is recorded with the time it was sent and answered,
its status, its Retry-After header, the title of a write, and the error that
got no answer; the helpers below summarise them.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

import requests

BOOKS = "/api/books/"


@dataclass(frozen=True)
class Request:
    """One request of the loop and what came back."""

    n: int
    method: str
    sent: float  # time.time() when sent
    answered: float  # time.time() when the answer (or the error) came
    status: int | None  # None: no HTTP answer (see error)
    retry_after: str | None = None
    title: str | None = None  # the book a write asked for
    error: str | None = None  # why no answer: "ConnectionError: ...", "ReadTimeout: ..."

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    @property
    def write(self) -> bool:
        return self.method != "GET"


class LoadLoop:
    """GETs and POSTs of /api/books/ at `base_url` in a thread, until stop() or `limit` requests."""

    def __init__(self, base_url: str, *, limit: int = 300, timeout: float = 5.0, pause: float = 0.0,
                 author: str = "Load Loop", fields: dict | None = None, prefix: str | None = None):
        self.base_url = base_url.rstrip("/")
        self.limit, self.timeout, self.pause = limit, timeout, pause
        self.author, self.fields = author, dict(fields or {})  # fields: e.g. {"sleep": "0.2"}: slow writes
        self.prefix = prefix or f"load-{uuid.uuid4().hex[:8]}"
        self.records: list[Request] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._crash: BaseException | None = None

    # -- running -----------------------------------------------------------------
    def start(self) -> "LoadLoop":
        if self._thread is not None:
            raise RuntimeError("the load loop was started already")
        self._thread = threading.Thread(target=self._run, name="load-loop", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 60.0) -> list[Request]:
        """Stop after the request in flight; the records, in order."""
        self._stop.set()
        self.join(timeout)
        return self.snapshot()

    def join(self, timeout: float = 600.0) -> list[Request]:
        """Wait until the loop has ended (its limit reached, or stopped); the records."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the load loop did not end within {timeout:g} s")
        if self._crash is not None:
            raise RuntimeError("the load loop itself failed") from self._crash
        return self.snapshot()

    def wait_for(self, count: int, timeout: float = 60.0) -> list[Request]:
        """Wait until `count` requests were answered (or the loop ended); the records so far."""
        deadline = time.monotonic() + timeout
        while len(self.records) < count and self.running:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the load loop made {len(self.records)} of {count} requests in {timeout:g} s")
            time.sleep(0.02)
        return self.snapshot()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.records)

    def __enter__(self) -> "LoadLoop":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            for n in range(self.limit):
                if self._stop.is_set():
                    return
                record = self._read(n) if n % 2 == 0 else self._write(n)
                with self._lock:
                    self.records.append(record)
                if self.pause:
                    self._stop.wait(self.pause)
        except BaseException as exc:  # noqa: BLE001 - a bug here must fail the test, not end the loop quietly
            self._crash = exc

    def _read(self, n: int) -> Request:
        return self._send(n, "GET")

    def _write(self, n: int) -> Request:
        title = f"{self.prefix}-{n:05d}"
        return self._send(n, "POST", title=title, data={"title": title, "author": self.author, **self.fields})

    def _send(self, n: int, method: str, title: str | None = None, data: dict | None = None) -> Request:
        sent = time.time()
        try:
            resp = requests.request(method, self.base_url + BOOKS, data=data, timeout=self.timeout,
                                    headers={"Connection": "close"}, allow_redirects=False)
        except requests.RequestException as exc:
            return Request(n, method, sent, time.time(), None, title=title, error=f"{type(exc).__name__}: {exc}")
        resp.close()
        return Request(n, method, sent, time.time(), resp.status_code, resp.headers.get("Retry-After"), title)


# -- summaries -------------------------------------------------------------------------
def reads(records: list[Request]) -> list[Request]:
    return [r for r in records if not r.write]


def writes(records: list[Request]) -> list[Request]:
    return [r for r in records if r.write]


def failed_reads(records: list[Request]) -> list[Request]:
    """Reads answered other than 2xx, or not answered at all."""
    return [r for r in reads(records) if not r.ok]


def accepted_writes(records: list[Request]) -> list[str]:
    """The titles of the writes answered 2xx: each of them must be somewhere after a transfer."""
    return [r.title for r in writes(records) if r.ok]


def refused_writes(records: list[Request]) -> list[Request]:
    """The writes answered 503 (a freeze)."""
    return [r for r in writes(records) if r.status == 503]


def unavailable(records: list[Request]) -> list[tuple[Request, bool]]:
    """Every 503, read or write, with whether it carried a Retry-After header."""
    return [(r, r.retry_after is not None) for r in records if r.status == 503]


def within(records: list[Request], start: float, end: float) -> list[Request]:
    """The requests sent at or after `start` and answered at or before `end` (epoch seconds)."""
    return [r for r in records if r.sent >= start and r.answered <= end]


def summary(records: list[Request]) -> dict:
    """Counts to show when an assertion fails: how many of each kind and answer."""
    statuses: dict[str, int] = {}
    for r in records:
        key = f"{r.method} {r.status if r.status is not None else 'error'}"
        statuses[key] = statuses.get(key, 0) + 1
    return {"requests": len(records), "answers": statuses, "failed_reads": len(failed_reads(records)),
            "accepted_writes": len(accepted_writes(records)), "refused_writes": len(refused_writes(records)),
            "503_without_retry_after": sum(1 for _, has in unavailable(records) if not has),
            "errors": sorted({r.error for r in records if r.error})[:5]}
