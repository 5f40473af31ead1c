"""What every remote helper shares: the protocol, argument checks, atomic writes.

Standard library only, Python 3.9+. A helper imports it with one line,
``from _common import (...)``: run as a file next to this one (tests, the
demo) that import works; sent to a host, the controller puts this file's text
in place of that line (deploykit.transport.bundle), so the host still gets one
self-contained program and nothing of deploykit is installed there.

Protocol: ``python helper.py ACTION < {"json": "arguments"}`` writes exactly
one JSON line to stdout, ``{"ok": true, "changed": bool, ...}`` and exit 0, or
``{"ok": false, "error": "one line", "kind": "ErrorClass"}`` and exit 1.
Tracebacks go to stderr.
"""

import json
import os
import sys

CHUNK = 1024 * 1024


class HelperError(Exception):
    """Base of the errors a helper raises on purpose."""


class UsageError(HelperError):
    pass


class BadArguments(HelperError):
    pass


class UnknownAction(HelperError):
    pass


class ReadOnlyRefused(HelperError):
    """A changing action asked of a helper that runs read-only (DEPLOYKIT_READ_ONLY=1: a dry-run)."""


def _refuse_if_read_only(action, read_only):
    """A dry-run is refused here too, on the host, whatever the controller asks: nothing is written."""
    if os.environ.get("DEPLOYKIT_READ_ONLY") == "1" and action not in read_only:
        raise ReadOnlyRefused("refused %r: this helper runs read-only (a dry-run)" % action)


# --------------------------------------------------------------------------
# arguments

_MISSING = object()


def _arg(args, name, default=_MISSING, kind=None):
    if name not in args or args[name] is None:
        if default is _MISSING:
            raise BadArguments("missing argument %r" % name)
        return default
    value = args[name]
    if kind is not None and not isinstance(value, kind):
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadArguments("argument %r must be %s, got %s" % (name, names, type(value).__name__))
    return value


def _path_arg(args, name, default=_MISSING):
    value = _arg(args, name, default, str)
    if value is None:
        return None
    if not value or "\x00" in value:
        raise BadArguments("argument %r is not a usable path" % name)
    return os.path.abspath(os.path.expanduser(value))


def _libpq_argv(conn):
    """psql/pg_dump connection options from {host, port, user}; the password comes from the environment."""
    argv = ["--no-password"]
    if conn.get("host"):
        argv += ["-h", str(conn["host"])]
    if conn.get("port"):
        argv += ["-p", str(conn["port"])]
    if conn.get("user"):
        argv += ["-U", str(conn["user"])]
    return argv


def _hash_stream(f, copy_to=None):
    """(sha256 hex, size) of what is left to read in a binary file object, written to copy_to as it goes."""
    import hashlib

    h = hashlib.sha256()
    size = 0
    while True:
        block = f.read(CHUNK)
        if not block:
            break
        if copy_to is not None:
            copy_to.write(block)
        h.update(block)
        size += len(block)
    return h.hexdigest(), size


# --------------------------------------------------------------------------
# durable, atomic file system changes


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _makedirs(path, mode=0o700):
    """Create path and missing parents with exactly ``mode`` (umask ignored).

    Existing directories are left as they are. Returns the directories created.
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return []
    parent = os.path.dirname(path)
    created = []
    if parent != path:
        created.extend(_makedirs(parent, mode))
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
        return created
    os.chmod(path, mode)
    created.append(path)
    return created


def _tmp_name(path):
    # the pid of the process writing now (a helper may run forked from an agent)
    return "%s.tmp-%d" % (path, os.getpid())


def _remove_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def _symlink_replace(target, path):
    """Point path at target in one step: a symlink made beside it (NAME.tmp-<pid>) is renamed over it."""
    tmp = _tmp_name(path)
    _remove_quietly(tmp)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _write_beside(path, data, mode=0o600):
    """Write bytes to a new temp file beside path (fsync'ed, chmod'ed); its name, for the caller to rename."""
    tmp = _tmp_name(path)
    _remove_quietly(tmp)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
    except BaseException:
        _remove_quietly(tmp)
        raise
    return tmp


def _atomic_write(path, data, mode=0o600, dir_mode=0o700):
    """Write bytes to path atomically: tmp file, fsync, chmod, os.replace, fsync of the directory."""
    parent = os.path.dirname(path)
    _makedirs(parent, dir_mode)
    tmp = _write_beside(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(parent)


# --------------------------------------------------------------------------
# the protocol


def _one_line(text):
    text = " ".join(str(text).split())
    return text[:2000] if text else "error"


ANSWER = "\x1edeploykit-answer "  # marks a session's answer line among whatever else reaches stdout
STARTED = "\x1edeploykit-started"  # a session read a request and is about to act on it
PROGRESS = "\x1edeploykit-progress "  # a line of what the action is doing, while it does it (migrate's output)

_progress_out = []  # the session's real stdout while an action runs: where progress lines go


def progress(text):
    """Tell the controller, now, what the running action is doing (one line; a no-op outside a session)."""
    if not _progress_out:
        return
    out = _progress_out[-1]
    out.write(PROGRESS + json.dumps({"text": str(text)[:500]}) + "\n")
    out.flush()


def _set_name(name):
    """What `ps -o comm` (/proc/PID/comm) shows for this process: the action a session is busy with."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME (Linux)
    except Exception:
        pass


def _listed(label):
    """List this process in the run's pid file under `label` (migrate, unapply...) while it does that work,
    as a tracked command is: whoever looks for the run's long commands on the host finds it."""
    path = os.environ.get("DEPLOYKIT_PID_FILE")
    if not label or not path:
        return
    try:
        with open(path, "a") as fh:
            fh.write("%d %s %s\n" % (os.getpid(), os.environ.get("DEPLOYKIT_CMD", "-"), label))
    except OSError:
        pass


def serve_session(actions, read_only, after=None, stdin=None, stdout=None, typed_errors=False):
    """Answer requests until stdin ends: one JSON line {"action", "args"} in, one ANSWER line out.

    What a start-up costs (a Django set up, say) is paid once for many
    requests. With DEPLOYKIT_READ_ONLY=1 in the environment (a dry-run) any
    action outside `read_only` is refused here, whatever the controller asks.
    `after()` runs after every request (close database connections: a
    session must not hold one while the run renames or clones databases).
    """
    stdin = sys.stdin if stdin is None else stdin
    real_stdout = sys.stdout if stdout is None else stdout
    for raw in iter(stdin.readline, ""):
        if not raw.strip():
            continue
        saved, sys.stdout = sys.stdout, sys.stderr  # only answers reach stdout
        try:
            try:
                req = json.loads(raw)
                action, args = req.get("action"), req.get("args") or {}
                fn = actions.get(action)
                if fn is None:
                    raise UnknownAction("unknown action %r (known: %s)" % (action, ", ".join(sorted(actions))))
                _refuse_if_read_only(action, read_only)
                _listed(args.pop("_track", None))
                real_stdout.write(STARTED + "\n")  # the request was read: the controller never sends it twice
                real_stdout.flush()
                out = {"ok": True, "changed": False}
                _set_name("dk " + action)
                _progress_out.append(real_stdout)
                try:
                    out.update(fn(args))
                finally:
                    _progress_out.pop()
            except (Exception, KeyboardInterrupt) as e:
                import traceback

                traceback.print_exc(file=sys.stderr)
                message = "%s: %s" % (type(e).__name__, e) if typed_errors else e
                out = {"ok": False, "error": _one_line(message), "kind": type(e).__name__}
            _set_name("dk idle")
            if after is not None:
                try:
                    after()
                except Exception:
                    pass
            try:
                text = json.dumps(out, default=str)
            except (TypeError, ValueError) as e:
                text = json.dumps({"ok": False, "error": _one_line("unserialisable result: %s" % e),
                                   "kind": type(e).__name__})
        finally:
            sys.stdout = saved
        real_stdout.write(ANSWER + text + "\n")
        real_stdout.flush()
    return 0


def end_session(code):
    """Leave a session once its stdin ended: output flushed, then os._exit, without the interpreter's teardown.

    A Django session's teardown (its modules, its garbage) is about 60 ms of
    CPU on every host, twice a release; the run waits for it when it closes
    the host. Every answer was written and flushed, and database connections
    were closed after each request (serve_session's `after`), so nothing is
    left for the teardown to do.
    """
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)


def serve(actions, argv=None, stdin=None, stdout=None, name="helper", private_umask=None, typed_errors=False,
          read_only=()):
    """Run one action: read its JSON arguments, write one JSON answer line, return the exit code.

    private_umask(action) -> True runs the action under umask 0o077; typed_errors
    puts the error class in front of the message ("ValueError: ...");
    `read_only` names the actions a dry-run (DEPLOYKIT_READ_ONLY=1) may run.
    """
    argv = sys.argv[1:] if argv is None else argv
    stdin = sys.stdin if stdin is None else stdin
    saved_stdout = sys.stdout
    real_stdout = saved_stdout if stdout is None else stdout
    # Nothing but the one JSON document may reach stdout: anything an action
    # (or a library it calls) prints goes to stderr instead.
    sys.stdout = sys.stderr
    try:
        try:
            if len(argv) != 1:
                raise UsageError("usage: %s ACTION < args.json (actions: %s)" % (name, ", ".join(sorted(actions))))
            action = argv[0]
            fn = actions.get(action)
            if fn is None:
                raise UnknownAction("unknown action %r (known: %s)" % (action, ", ".join(sorted(actions))))
            _refuse_if_read_only(action, read_only)
            raw = stdin.read()
            if not raw.strip():
                args = {}
            else:
                try:
                    args = json.loads(raw)
                except ValueError as e:
                    raise BadArguments("arguments on stdin are not valid JSON: %s" % e)
            if not isinstance(args, dict):
                raise BadArguments("arguments on stdin must be one JSON object")
            if private_umask is not None and private_umask(action):
                os.umask(0o077)
            out = {"ok": True, "changed": False}
            out.update(fn(args))
            code = 0 if out["ok"] else 1
        except (Exception, KeyboardInterrupt) as e:
            import traceback

            traceback.print_exc(file=sys.stderr)
            message = "%s: %s" % (type(e).__name__, e) if typed_errors else e
            out = {"ok": False, "error": _one_line(message), "kind": type(e).__name__}
            code = 1
        try:
            text = json.dumps(out, default=str)
        except (TypeError, ValueError) as e:
            text = json.dumps({"ok": False, "error": _one_line("unserialisable result: %s" % e),
                               "kind": type(e).__name__})
            code = 1
        real_stdout.write(text + "\n")
        real_stdout.flush()
        return code
    finally:
        sys.stdout = saved_stdout
