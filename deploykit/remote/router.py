#!/usr/bin/env python3
"""deploykit remote helper: the router's upstream file, replaced whole and put back by rename.

    read_upstream     the file's text and the colour its header names (read-only)
    install_upstream  the new text written beside (NAME.tmp-<pid>, fsync) and renamed into place; the
                      file it replaces is kept as `previous` (a hard link, made before the rename)
    put_back          `previous` renamed back into place (or the file removed when there was none)

nginx reads the file only on `nginx -t` and `nginx -s reload`, which the
controller runs between these actions: a file nginx refuses is put back
before anything reloads. Standalone (stdlib only, Python 3.9+; _common.py is
inlined when it is sent).
"""

import os
import re
import sys

from _common import _arg, _path_arg, serve
from _upstream import install, put_back

HEADER = re.compile(r"^# deploykit colour: (\S+)\s*$", re.M)


def act_read_upstream(args):
    path = _path_arg(args, "path")
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return {"exists": False, "colour": None, "text": None,
                "dir_exists": os.path.isdir(os.path.dirname(path))}
    m = HEADER.search(text)
    return {"exists": True, "colour": m.group(1) if m else None, "text": text, "dir_exists": True}


def act_install_upstream(args):
    path = _path_arg(args, "path")
    previous = _path_arg(args, "previous")
    had = install(path, previous, _arg(args, "text", kind=str))
    return {"changed": True, "path": path, "had_previous": had, "previous": previous if had else None}


def act_put_back(args):
    path = _path_arg(args, "path")
    had = _arg(args, "had_previous", kind=bool)
    put_back(path, _path_arg(args, "previous"), had)
    return {"changed": True, "path": path, "restored": had}


READ_ONLY = {"read_upstream"}

ACTIONS = {
    "read_upstream": act_read_upstream,
    "install_upstream": act_install_upstream,
    "put_back": act_put_back,
}


def main(argv=None, stdin=None, stdout=None):
    return serve(ACTIONS, argv, stdin, stdout, name="router.py", read_only=READ_ONLY,
                 private_umask=lambda action: False)


if __name__ == "__main__":
    sys.exit(main())
