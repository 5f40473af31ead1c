#!/usr/bin/env python3
"""deploykit remote helper: what a balancer host can tell about nginx's workers and its access log.

    workers        the nginx master (from its pid file) and its children, each as [pid, start time] (read-only)
    apply          the upstream file replaced, `nginx -t`, the reload, then wait_reloaded: a drain or a restore
                   in one call (the previous file put back when nginx refuses it)
    wait_reloaded  wait until the master has children that were not in `before` and, with `old_gone`, none of
                   `before` is left: the reload is in effect and the old workers finished their requests
                   (read-only: it only watches)
    mark           where the access log ends now and the host's clock: the `since` of a later count (read-only)
    count          the requests the access log holds since a mark: 5xx answers, upstream tries that failed,
                   per upstream server (read-only)

A reload makes nginx start new workers with the new configuration and tell
the old ones to stop taking connections and exit once their requests ended.
An old worker's pid is compared with its start time (field 22 of
/proc/PID/stat), so a pid reused later is not taken for it. The access log is
deploykit's format (one JSON object a line: msec, status, upstream_addr,
upstream_status; routers/nginx_balancer.py LOG_FORMAT); a log rotated since
the mark is read on from the rotated file (NAME.1) when it is the same file.
Standalone (stdlib only, Python 3.9+; _common.py and _upstream.py are inlined when it is sent).
"""

import json
import os
import re
import signal
import sys
import time

from _common import BadArguments, _arg, _atomic_write, _path_arg, progress, serve
from _upstream import install_checked, run_command

POLL = 0.01  # seconds between looks at nginx's workers: a drain returns ~10 ms after the last old one exits
SEPARATOR = re.compile(r"\s*(?:,|\s:\s)\s*")  # $upstream_addr: ", " between tries, " : " between redirects


def _stat(pid):
    """(state, ppid, start time) of a process, None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            text = f.read().decode("ascii", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1]), int(fields[19])


def _master(pid_file):
    try:
        with open(pid_file) as f:
            text = f.read().strip()
    except FileNotFoundError:
        raise FileNotFoundError("no nginx pid file at %s: is nginx running, and is that its 'pid' directive?"
                                % pid_file) from None
    if not text.isdigit():
        raise BadArguments("%s does not hold a pid (%r)" % (pid_file, text[:40]))
    pid = int(text)
    if _stat(pid) is None:
        raise ProcessLookupError("nginx's pid file %s names pid %d, which is not running" % (pid_file, pid))
    return pid


def _children(master):
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = _stat(int(name))
        if st is not None and st[1] == master and st[0] != "Z":
            out.append([int(name), st[2]])
    return sorted(out)


def _alive(entry):
    st = _stat(entry[0])
    return st is not None and st[0] != "Z" and st[2] == entry[1]


def act_workers(args):
    master = _master(_path_arg(args, "pid_file"))
    return {"master": master, "workers": _children(master)}


def _wait_reloaded(pid_file, before, old_gone, timeout):
    start = time.monotonic()
    said = 0.0
    new = []
    while True:
        if not new:  # the new workers once seen, only the old ones are looked at
            new = [e for e in _children(_master(pid_file)) if e not in before]
        left = [e for e in before if _alive(e)]
        waited = time.monotonic() - start
        if new and (not old_gone or not left):
            return {"done": True, "waited": round(waited, 3), "new": [e[0] for e in new], "left": []}
        if waited >= timeout:
            return {"done": False, "waited": round(waited, 3), "new": [e[0] for e in new],
                    "left": [e[0] for e in left]}
        if waited - said >= 5:
            said = waited
            progress("nginx: %d old worker(s) still finishing their requests" % len(left))
        time.sleep(POLL)


def act_wait_reloaded(args):
    before = [list(map(int, e)) for e in _arg(args, "before", kind=list)]
    return _wait_reloaded(_path_arg(args, "pid_file"), before, _arg(args, "old_gone", True, kind=bool),
                          _arg(args, "timeout", 60.0, kind=float))


def _reload(pid_file, command):
    """A reload as `nginx -s reload` makes it, SIGHUP to the master its pid file names now, sent directly
    when this user may (no second parse of the configuration); else the operator's command
    (`sudo nginx -s reload`)."""
    def reload():
        try:
            master = _master(pid_file)
        except (OSError, BadArguments) as exc:  # nginx is gone: said as the reload's failure (file put back)
            return False, str(exc), "SIGHUP to nginx's master"
        try:
            os.kill(master, signal.SIGHUP)
        except PermissionError:
            ok, said = run_command(command)
            return ok, said, command
        except ProcessLookupError:
            return False, "nginx's master (pid %d) is gone" % master, "SIGHUP to nginx's master"
        return True, "", "SIGHUP to nginx's master"
    return reload


def _write_record(record):
    """The balancer's state file (which servers are drained), as files.py write_json writes it."""
    _atomic_write(_path_arg(record, "path"), (json.dumps(record["data"], indent=2, sort_keys=True) + "\n")
                  .encode("utf-8"), 0o600)


def act_apply(args):
    """The upstream file installed, checked, reloaded, and the reload waited for, in one call (see _upstream):
    {"failed": [what, output]} with the previous file back, or what wait_reloaded answers. `record`, the
    balancer's state file, is written before the install (a drain: a run that dies mid-way leaves the servers
    listed as drained) or once the reload is in effect (a restore)."""
    pid_file = _path_arg(args, "pid_file")
    record = _arg(args, "record", None, kind=dict)
    when = record.get("when") if record else None
    if when not in (None, "before", "after"):
        raise BadArguments("record.when is 'before' or 'after', not %r" % when)
    before = _children(_master(pid_file))
    if when == "before":
        _write_record(record)
    failed = install_checked(_path_arg(args, "path"), _path_arg(args, "previous"), _arg(args, "text", kind=str),
                             _arg(args, "check", kind=str), _reload(pid_file, _arg(args, "reload", kind=str)))
    if failed:
        return {"changed": when == "before", "failed": failed}
    doc = _wait_reloaded(pid_file, before, _arg(args, "old_gone", True, kind=bool),
                         _arg(args, "timeout", 60.0, kind=float))
    if when == "after" and doc["done"]:
        _write_record(record)
    return dict(doc, changed=True)


def _end(path):
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None, 0
    return st.st_ino, st.st_size


def act_mark(args):
    path = _path_arg(args, "path", None)
    inode, size = _end(path) if path else (None, 0)
    return {"time": time.time(), "inode": inode, "offset": size}


def _lines(path, offset):
    """The complete lines of a file from `offset`, and where they end."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    return data[:end].splitlines(), offset + end


def _tries(entry):
    addrs = [a for a in SEPARATOR.split(entry.get("upstream_addr") or "") if a]
    codes = [c for c in SEPARATOR.split(entry.get("upstream_status") or "") if c]
    return [(a, codes[i] if i < len(codes) else "-") for i, a in enumerate(addrs) if a != "-"]


def act_count(args):
    path = _path_arg(args, "path")
    since = _arg(args, "since", kind=dict)
    t0 = time.time()  # before reading: a line past what is read now has a later time (the next mark's)
    after = float(_arg(since, "time", 0.0, kind=float))
    inode, offset = since.get("inode"), int(since.get("offset") or 0)
    now_inode, now_size = _end(path)
    if now_inode is None:
        raise FileNotFoundError("no access log at %s: is it the access_log nginx writes in deploykit's format?"
                                % path)
    chunks = []
    if inode is not None and now_inode == inode and now_size >= offset:
        chunks.append((path, offset, None))
    else:  # rotated (or truncated) since the mark: the rest of the old file, then the new one from its start
        rotated = path + ".1"
        if inode is not None and _end(rotated)[0] == inode:
            chunks.append((rotated, offset, None))
        chunks.append((path, 0, after))
    requests = errors = upstream_errors = unparsed = 0
    statuses, servers = {}, {}
    end = offset
    for name, start, not_before in chunks:
        lines, end = _lines(name, start)
        for raw in lines:
            try:
                entry = json.loads(raw.decode("utf-8", "replace"))
                msec, status = float(entry["msec"]), int(entry["status"])
            except (ValueError, KeyError, TypeError):
                unparsed += 1
                continue
            if not_before is not None and msec < not_before:  # the offset is exact; times only in a new file
                continue
            requests += 1
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status >= 500:
                errors += 1
            for addr, code in _tries(entry):
                s = servers.setdefault(addr, {"requests": 0, "errors": 0})
                s["requests"] += 1
                if not code.isdigit() or int(code) >= 500:
                    s["errors"] += 1
                    upstream_errors += 1
    return {"requests": requests, "errors": errors, "upstream_errors": upstream_errors, "unparsed": unparsed,
            "statuses": statuses, "servers": servers,
            "mark": {"time": t0, "inode": now_inode, "offset": end}}


READ_ONLY = {"workers", "wait_reloaded", "mark", "count"}

ACTIONS = {
    "workers": act_workers,
    "wait_reloaded": act_wait_reloaded,
    "apply": act_apply,
    "mark": act_mark,
    "count": act_count,
}


def main(argv=None, stdin=None, stdout=None):
    return serve(ACTIONS, argv, stdin, stdout, name="balancer.py", read_only=READ_ONLY,
                 private_umask=lambda action: False)


if __name__ == "__main__":
    sys.exit(main())
