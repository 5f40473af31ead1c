"""deploykit's agent on a host: one per host per run, over one channel.

Standalone: standard library only, Python 3.9+, never imports deploykit. The
controller starts `python -I -S -c BOOT` and sends this file's text on stdin
(a length line, then the source); nothing is written on the host. From then
on stdin and stdout carry one JSON object per line, each request with an id:

  {"id", "op": "run", "script", "env", "stdin": [text | {"source": digest}], "timeout", "token"}
      -> {"id", "exited", "stdout", "stderr", "timed_out"}
      `bash -c script` in a new session; a text of a cached helper source may be
      fed on stdin (helpers: their source is sent once per connection).
  {"op": "source", "digest", "text"}          cache a helper's source (no answer)
  {"op": "append", "path", "line"}            append a journal line (no answer)
  {"id", "op": "sync"} -> {"id"}              answered once every earlier request was read
                                              (appends are done in order, before it)

Each `run` is served by its own thread, so a kill can run while a command
runs. On a timeout the command and everything carrying its DEPLOYKIT_CMD
token is killed (TERM, then KILL), exit 124. When the channel closes the agent
reads no more requests; commands still running keep running (each in its own
session, findable by their environment marks and the run's pid file), and
the agent exits once they have ended.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

_write_lock = threading.Lock()
_sources = {}


def send(doc):
    data = (json.dumps(doc) + "\n").encode("utf-8")
    with _write_lock:
        try:
            OUT.write(data)
            OUT.flush()
        except (OSError, ValueError):  # the controller is gone: nothing to tell
            pass


def marked_pids(marker):
    """Pids (not ours) whose environment holds the exact NAME=VALUE marker."""
    me = os.getpid()
    want = marker.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open("/proc/%s/environ" % entry, "rb") as f:
                if want in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:
            continue
    return found


def kill_marked(marker, grace):
    """TERM every process carrying marker, KILL what is left after grace seconds."""
    first = marked_pids(marker)
    for pid in first:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while first and time.monotonic() < deadline and marked_pids(marker):
        time.sleep(0.1)
    for pid in marked_pids(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return first


def _stdin_bytes(parts):
    out = []
    for part in parts or ():
        if isinstance(part, dict):
            text = _sources[part["source"]]
            out.append(("%d\n" % len(text)) + text)
        else:
            out.append(part)
    return "".join(out).encode("utf-8")


def run(req):
    start = time.monotonic()
    try:
        feed = _stdin_bytes(req.get("stdin"))
        env = dict(os.environ)
        env.update(req.get("env") or {})  # the marks: DEPLOYKIT_RUN, DEPLOYKIT_CMD (and children inherit them)
        proc = subprocess.Popen(["bash", "-c", req["script"]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, env=env)
    except Exception as exc:  # bash missing, unknown source: an answer, not a dead agent
        send({"id": req["id"], "exited": 127, "stdout": "", "stderr": "agent: %s" % exc, "timed_out": False})
        return
    timed_out = False
    try:
        out, err = proc.communicate(feed, timeout=req.get("timeout"))
    except subprocess.TimeoutExpired:
        timed_out = True
        if req.get("token") and req["token"] != "kill":
            kill_marked("DEPLOYKIT_CMD=%s" % req["token"], 2)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        out, err = proc.communicate()
    except BrokenPipeError:
        out, err = proc.communicate()
    send({"id": req["id"], "exited": 124 if timed_out else proc.returncode,
          "stdout": out.decode("utf-8", "replace"),
          "stderr": ("timed out after %ss" % req.get("timeout")) if timed_out else err.decode("utf-8", "replace"),
          "timed_out": timed_out, "seconds": time.monotonic() - start})


def append(req):
    path = req["path"]
    parent = os.path.dirname(path)
    try:
        if not os.path.isdir(parent):
            os.makedirs(parent, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (req["line"] + "\n").encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as exc:  # a full disk must not stop the run; the controller's copy has the event
        sys.stderr.write("agent: journal %s: %s\n" % (path, exc))


def serve(inp):
    while True:
        line = inp.readline()
        if not line:
            return
        try:
            req = json.loads(line)
        except ValueError:
            continue
        op = req.get("op")
        if op == "run":
            threading.Thread(target=run, args=(req,)).start()
        elif op == "source":
            _sources[req["digest"]] = req["text"]
        elif op == "append":
            append(req)
        elif op == "sync":
            send({"id": req["id"]})
        elif "id" in req:
            send({"id": req["id"], "error": "unknown op %r" % op})


if __name__ == "__main__":
    OUT = sys.stdout.buffer
    sys.stdout = sys.stderr  # only answers reach the channel
    send({"id": 0, "agent": 1, "pid": os.getpid()})
    serve(sys.stdin.buffer)
