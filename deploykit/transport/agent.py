"""The controller's side of a host's agent (remote/agent.py): one channel, many requests.

Requests carry ids; a reader thread blocks on the channel and hands each
answer to the request waiting for it, so several requests (a command and the
kill that cancels it) are in flight at once. No polling anywhere.
"""
from __future__ import annotations

import itertools
import json
import threading

from .bundle import REMOTE_DIR, helper_digest, helper_source

# The agent's source travels on stdin after a length line; nothing is written on the host.
BOOT = ("import sys;n=int(sys.stdin.buffer.readline());"
        "exec(compile(sys.stdin.buffer.read(n),'deploykit-agent','exec'),{'__name__':'__main__'})")


class AgentLost(Exception):
    """The channel to the agent closed (or the agent never answered)."""


def agent_payload() -> bytes:
    source = (REMOTE_DIR / "agent.py").read_bytes()
    return b"%d\n" % len(source) + source


class AgentClient:
    """Talks to one agent over a byte stream: `write(bytes)` and a blocking `readline()`."""

    def __init__(self, write, readline, close, *, name: str = "agent"):
        self._write = write
        self._readline = readline
        self._close = close
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._waiting: dict[int, list] = {}  # id -> [Event, answer]
        self._sources: set[str] = set()
        self.lost: str | None = None
        hello = [threading.Event(), None]
        self._waiting[0] = hello
        self._reader = threading.Thread(target=self._read, name=f"deploykit-{name}", daemon=True)
        self._reader.start()
        self._hello = hello

    def wait_ready(self, timeout: float) -> dict:
        """The agent's first line; AgentLost if it does not come (no Python, a broken shell)."""
        if not self._hello[0].wait(timeout) or self._hello[1] is None:
            raise AgentLost(self.lost or f"the agent did not start within {timeout:g}s")
        return self._hello[1]

    def _read(self) -> None:
        reason = "the channel closed"
        try:
            while True:
                line = self._readline()
                if not line:
                    break
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue  # not an answer (a shell's banner): ignore
                with self._lock:
                    slot = self._waiting.pop(doc.get("id"), None)
                if slot is not None:
                    slot[1] = doc
                    slot[0].set()
        except Exception as exc:  # OSError, paramiko errors: the channel is gone
            reason = str(exc) or type(exc).__name__
        with self._lock:
            self.lost = reason
            waiting, self._waiting = self._waiting, {}
        for slot in waiting.values():
            slot[0].set()

    def _send(self, doc: dict) -> None:
        data = (json.dumps(doc) + "\n").encode()
        with self._lock:
            if self.lost:
                raise AgentLost(self.lost)
            try:
                self._write(data)
            except Exception as exc:
                self.lost = str(exc) or type(exc).__name__
                raise AgentLost(self.lost) from None

    def request(self, doc: dict, timeout: float | None = None) -> dict:
        """Send one request and block until its answer (AgentLost if the channel closes first)."""
        slot = [threading.Event(), None]
        with self._lock:
            rid = next(self._ids)
            self._waiting[rid] = slot
        try:
            self._send(dict(doc, id=rid))
        except AgentLost:
            with self._lock:
                self._waiting.pop(rid, None)
            raise
        if not slot[0].wait(timeout):
            with self._lock:
                self._waiting.pop(rid, None)
            raise AgentLost(f"no answer within {timeout:g}s")
        if slot[1] is None:
            raise AgentLost(self.lost or "the channel closed")
        return slot[1]

    def post(self, doc: dict) -> None:
        """Send a request that has no answer (a journal line): the caller does not wait."""
        self._send(doc)

    def ensure_source(self, digest: str, text: str) -> dict:
        """A stdin part naming a helper's source: the text crosses the channel once per connection."""
        if digest not in self._sources:
            self._send({"op": "source", "digest": digest, "text": text})
            self._sources.add(digest)
        return {"source": digest}

    def run(self, script: str, stdin: list, timeout: float, token: str, env: dict) -> dict:
        # the agent kills the command at `timeout`; the margin covers that kill's grace period
        return self.request({"op": "run", "script": script, "stdin": stdin, "timeout": timeout, "token": token,
                             "env": env}, timeout=timeout + 60)

    def helper(self, module: str, action: str, args: dict, *, env: dict, cwd: str | None, timeout: float,
               token: str) -> dict:
        """A stdlib helper forked on the host from the agent's zygote; the same answer as `run`."""
        digest = self.ensure_source(helper_digest(module), helper_source(module))["source"]
        return self.request({"op": "helper", "digest": digest, "name": f"deploykit-{module}.py", "action": action,
                             "args": args, "env": env, "cwd": cwd, "timeout": timeout, "token": token},
                            timeout=timeout + 60)

    def cancel(self, token: str) -> None:
        """Stop the forked helper of `token` (its children carry the token and are killed by it)."""
        self._send({"op": "cancel", "token": token})

    def sync(self, timeout: float = 30) -> None:
        """Returns once the agent has handled every earlier request that has no answer."""
        self.request({"op": "sync"}, timeout=timeout)

    def close(self) -> None:
        try:
            self._close()
        except Exception:
            pass
