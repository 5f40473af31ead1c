"""deploykit's agent on a host: one per host per run, over one channel.

Standalone: standard library only, Python 3.9+, never imports deploykit. The
controller starts `python -I -S -c BOOT` and sends this file's text on stdin
(a length line, then the source); nothing is written on the host. From then
on stdin and stdout carry one JSON object per line, each request with an id:

  {"id", "op": "run", "script", "env", "stdin": [text | {"source": digest}], "timeout", "token"}
      -> {"id", "exited", "stdout", "stderr", "timed_out"}
      `bash -c script` in a new session; a text of a cached helper source may be
      fed on stdin (helpers: their source is sent once per connection).
  {"id", "op": "helper", "digest", "action", "args", "env", "cwd", "timeout", "token"}
      -> the same answer as `run`: a stdlib helper run in a process forked from
      the zygote (below), no new interpreter, its source compiled once
  {"op": "cancel", "token"}                   kill the forked helper of that token (no answer)
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

Forking from a process with threads is unsafe (a lock held by another thread
stays held in the child), so helpers are forked by a zygote: a child the
agent forks first, before any thread exists, which stays single-threaded. It
gets each request with the helper's stdin/stdout/stderr pipes attached
(SCM_RIGHTS), forks a worker in a new session and reports its pid and exit
status.
"""

import json
import os
import select
import signal
import socket
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


# ------------------------------------------------------------------ zygote ---

def _exit_code(status):
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else 1


def _worker(req, code, fds):
    """In the forked worker: become the helper (marks in its environment, its own session) and exit."""
    os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)
    status = 1
    try:
        sys.stdin = open(0, "r", closefd=False)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = open(2, "w", closefd=False)
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        os.environ.update(req.get("env") or {})  # the marks: children of the helper carry them
        if req.get("cwd"):
            os.chdir(req["cwd"])
        sys.argv = [req["name"], req["action"]]
        try:
            exec(code, {"__name__": "__main__", "__file__": req["name"]})
            status = 0
        except SystemExit as exc:
            status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(status)


def _warm(code):
    """Import what a helper imports once, here: every worker forked later finds it loaded.

    The helper's top level only imports and defines (its work is behind `__name__ == "__main__"`).
    """
    try:
        exec(code, {"__name__": "__deploykit_warm__"})
    except Exception:
        pass


def zygote(sock):
    """Single-threaded: forks a worker per helper request, reports pids and exit statuses."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *a: None)
    codes = {}
    children = {}
    while True:
        ready = select.select([sock, wake_r], [], [])[0]
        if wake_r in ready:
            os.read(wake_r, 4096)
        while children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            rid = children.pop(pid, None)
            if rid is not None:
                sock.send(json.dumps({"id": rid, "status": _exit_code(status)}).encode())
        if sock not in ready:
            continue
        data, fds, _, _ = socket.recv_fds(sock, 1 << 20, 3)
        if not data:
            os._exit(0)  # the agent is gone; running workers go on in their own sessions
        req = json.loads(data)
        if req.get("op") == "source":
            codes[req["digest"]] = compile(req["text"], req["name"], "exec")
            _warm(codes[req["digest"]])
            continue
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in fds:
                os.close(fd)
            sock.send(json.dumps({"id": req["id"], "error": str(exc)}).encode())
            continue
        if pid == 0:
            sock.close()
            _worker(req, codes[req["digest"]], fds)
        for fd in fds:
            os.close(fd)
        children[pid] = req["id"]
        sock.send(json.dumps({"id": req["id"], "pid": pid}).encode())


class Zygote(object):
    """The agent's handle on its zygote: requests out, pids and statuses back to the waiting thread."""

    def __init__(self):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        for s in (ours, theirs):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        pid = os.fork()
        if pid == 0:
            ours.close()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # the channel is the agent's alone
                os.dup2(null, fd)
            try:
                zygote(theirs)
            finally:
                os._exit(0)
        theirs.close()
        self.pid = pid
        self.sock = ours
        self.lock = threading.Lock()
        self.ids = 0
        self.waiting = {}  # id -> [event for pid, event for status, answer dict]
        self.sources = set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            data = self.sock.recv(1 << 16)
            if not data:
                return
            doc = json.loads(data)
            slot = self.waiting.get(doc["id"])
            if slot is None:
                continue
            slot[2].update(doc)
            if "pid" in doc or "error" in doc:
                slot[0].set()
            if "status" in doc or "error" in doc:
                slot[1].set()

    def stop(self):
        """At the end of the agent: the zygote sees its socket close and exits; it is reaped here, so what
        it and its helpers ran is counted under the session (no process is left to init)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except OSError:
            pass

    def start(self, req, fds):
        with self.lock:
            self.ids += 1
            slot = [threading.Event(), threading.Event(), {}]
            self.waiting[self.ids] = slot
            # what the worker needs, never the arguments (they go on its stdin): a datagram of any size
            # would be cut at the zygote's read (which kills it), or refused by the socket
            work = {k: req.get(k) for k in WORKER_KEYS}
            try:
                if req["digest"] not in self.sources:
                    self.sock.send(json.dumps({"op": "source", "digest": req["digest"], "name": req["name"],
                                               "text": _sources[req["digest"]]}).encode())
                    self.sources.add(req["digest"])
                socket.send_fds(self.sock, [json.dumps(dict(work, id=self.ids)).encode()], fds)
            except OSError as exc:  # answered as a helper that did not start, never left unanswered
                self.waiting.pop(self.ids, None)
                slot[2]["error"] = "the zygote is gone (%s)" % exc
                slot[0].set()
                slot[1].set()
        return self.ids, slot


WORKER_KEYS = ("digest", "name", "action", "env", "cwd")  # what the zygote's worker reads of a request
_forked = {}  # token -> pid of the helper worker running for it


def helper(req):
    """A stdlib helper forked from the zygote: run's answer, without a new interpreter."""
    start = time.monotonic()
    pipes = [os.pipe() for _ in range(3)]
    theirs = [pipes[0][0], pipes[1][1], pipes[2][1]]
    try:
        rid, slot = ZYGOTE.start(req, theirs)
    finally:
        for fd in theirs:
            os.close(fd)
    if not slot[0].wait(60):
        slot[2].setdefault("error", "the zygote did not start the helper")
    if "error" in slot[2]:
        for fd in (pipes[0][1], pipes[1][0], pipes[2][0]):
            os.close(fd)
        send({"id": req["id"], "exited": 127, "stdout": "", "stderr": "agent: %s" % slot[2]["error"],
              "timed_out": False})
        return
    pid = slot[2]["pid"]
    token = req.get("token")
    _forked[token] = pid
    out, err = bytearray(), bytearray()

    def drain(fd, into):
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            into += chunk
        os.close(fd)

    readers = [threading.Thread(target=drain, args=(pipes[1][0], out)),
               threading.Thread(target=drain, args=(pipes[2][0], err))]
    for r in readers:
        r.start()
    try:
        with os.fdopen(pipes[0][1], "wb") as stdin:
            stdin.write(json.dumps(req.get("args") or {}).encode("utf-8"))
    except OSError:
        pass  # it ended without reading its arguments; its answer says why
    timed_out = not slot[1].wait(req.get("timeout"))
    if timed_out:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        if token:
            kill_marked("DEPLOYKIT_CMD=%s" % token, 2)
        slot[1].wait(10)
    for r in readers:
        r.join(10 if timed_out else None)
    _forked.pop(token, None)
    ZYGOTE.waiting.pop(rid, None)
    send({"id": req["id"], "exited": 124 if timed_out else slot[2].get("status", 1),
          "stdout": out.decode("utf-8", "replace"),
          "stderr": ("timed out after %ss" % req.get("timeout")) if timed_out else err.decode("utf-8", "replace"),
          "timed_out": timed_out, "seconds": time.monotonic() - start})


def cancel(req):
    pid = _forked.get(req.get("token"))
    if pid:
        try:
            os.killpg(pid, signal.SIGTERM)
        except OSError:
            pass


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
        elif op == "helper":
            threading.Thread(target=helper, args=(req,)).start()
        elif op == "cancel":
            cancel(req)
        elif op == "source":
            _sources[req["digest"]] = req["text"]
        elif op == "append":
            append(req)
        elif op == "sync":
            send({"id": req["id"]})
        elif "id" in req:
            send({"id": req["id"], "error": "unknown op %r" % op})


if __name__ == "__main__":
    sys.setswitchinterval(0.0005)  # answers hop between threads: do not hold each one for 5 ms
    ZYGOTE = Zygote()  # first, while this process has one thread
    OUT = sys.stdout.buffer
    sys.stdout = sys.stderr  # only answers reach the channel
    send({"id": 0, "agent": 1, "pid": os.getpid()})
    serve(sys.stdin.buffer)
    ZYGOTE.stop()
