"""Forked workers of a helper (mask.py, proof.py): one pass over a table spread over several CPUs.

Standard library only, Python 3.9+; inlined into a helper by deploykit.transport.bundle like _common.
A helper forks its workers before it starts a thread or a child command (a
fork copies only the forking thread), after it has built what they share
copy-on-write (compiled rules, the originals' digests). Messages are pickled
objects with a 4-byte length, over one pipe each way per worker. A worker's
error reaches its parent as ("error", "one line"); a worker never writes to
the helper's stdin or stdout (they are the parent's protocol).
"""
import os
import pickle
import signal
import struct

from _common import HelperError


class WorkerFailed(HelperError):
    """A forked worker failed (its message) or went away."""


def send(fd, obj):
    data = pickle.dumps(obj, protocol=2)
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _read(fd, n):
    chunks = []
    while n:
        block = os.read(fd, min(n, 1 << 20))
        if not block:
            raise EOFError("the other end went away")
        chunks.append(block)
        n -= len(block)
    return b"".join(chunks)


def receive(fd):
    (size,) = struct.unpack(">I", _read(fd, 4))
    return pickle.loads(_read(fd, size))


def _child(work, inbox, outbox):
    code = 0
    try:
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        work(inbox, outbox)
    except BaseException as e:  # noqa: B902 - told to the parent, which fails the helper's action
        try:
            text = str(e) if isinstance(e, HelperError) else "%s: %s" % (type(e).__name__, e)
            send(outbox, ("error", " ".join(text.split())))
        except BaseException:
            pass
        code = 1
    os._exit(code)


class Pool(object):
    """`n` forked workers, each running work(inbox_fd, outbox_fd) until its inbox ends or says so."""

    def __init__(self, n, work):
        self.workers = []  # (pid, to_worker, from_worker)
        try:
            for _ in range(n):
                to_r, to_w = os.pipe()
                from_r, from_w = os.pipe()
                pid = os.fork()
                if pid == 0:
                    os.close(to_w)
                    os.close(from_r)
                    for _pid, w, r in self.workers:
                        os.close(w)
                        os.close(r)
                    _child(work, to_r, from_w)
                os.close(to_r)
                os.close(from_w)
                self.workers.append((pid, to_w, from_r))
        except BaseException:
            self.close()
            raise

    def __len__(self):
        return len(self.workers)

    def put(self, k, obj):
        """Send obj to worker k; its own error, if it failed."""
        try:
            send(self.workers[k][1], obj)
        except OSError:
            self.answer(k)
            raise WorkerFailed("a worker ended early")

    def answer(self, k):
        """The next message of worker k (an ("error", text) message raises WorkerFailed(text))."""
        try:
            msg = receive(self.workers[k][2])
        except (EOFError, OSError):
            raise WorkerFailed("a worker ended without an answer")
        if isinstance(msg, tuple) and msg and msg[0] == "error":
            raise WorkerFailed(msg[1])
        return msg

    def close(self):
        """Close the pipes, stop and reap every worker (after their last answer, or on a failure)."""
        for pid, to_w, from_r in self.workers:
            for fd in (to_w, from_r):
                try:
                    os.close(fd)
                except OSError:
                    pass
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                os.waitpid(pid, 0)
            except OSError:
                pass
        self.workers = []
