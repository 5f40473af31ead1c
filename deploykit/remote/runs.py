#!/usr/bin/env python3
"""deploykit remote helper: which long commands of a run still run on this host.

Standalone (stdlib only, Linux /proc). Every long command of a run appends
"PID TOKEN LABEL" to the run's pid file and carries DEPLOYKIT_CMD=TOKEN in its
environment (and so do all the processes it starts). A process counts as that
command only when its environment holds that exact token: a reused pid, or a
process of someone else that happens to have the same name, never does.

    python runs.py tracked < {"pid_file": PATH}
      -> {"ok": true, "running": [{"pid", "token", "label", "cmdline"}]}
"""
import os
import sys

from _common import serve


def _environ(pid):
    try:
        with open("/proc/%s/environ" % pid, "rb") as f:
            return f.read().split(b"\0")
    except OSError:
        return []


def _cmdline(pid):
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()[:200]
    except OSError:
        return ""


def tracked(args):
    entries = []
    try:
        with open(args["pid_file"]) as f:
            for line in f:
                parts = line.split(None, 2)
                if len(parts) >= 2:
                    entries.append((parts[0], parts[1], parts[2].strip() if len(parts) > 2 else ""))
    except OSError:
        return {"ok": True, "changed": False, "running": [], "pid_file": False}
    wanted = {("DEPLOYKIT_CMD=%s" % token).encode(): (token, label) for _, token, label in entries}
    running = []
    me = str(os.getpid())
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == me:
            continue
        for var in _environ(name):
            if var in wanted:
                token, label = wanted[var]
                running.append({"pid": int(name), "token": token, "label": label, "cmdline": _cmdline(name)})
                break
    running.sort(key=lambda r: r["pid"])
    return {"ok": True, "changed": False, "running": running, "pid_file": True}


READ_ONLY = {"tracked"}  # what a dry-run may call
ACTIONS = {"tracked": tracked}


def main():
    sys.exit(serve(ACTIONS, name="runs.py", read_only=READ_ONLY, typed_errors=True))


if __name__ == "__main__":
    main()
