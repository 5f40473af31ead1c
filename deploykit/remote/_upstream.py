"""Shared by the router and balancer helpers: an upstream file replaced whole by rename, or put back.

``from _upstream import (...)``; sent to a host, the controller puts this
file's text in place of that import. `install_checked` is the whole change in
one call on the host: the new text written beside and renamed into place, the
operator's check command (`nginx -t`), then the reload command; when either
fails the previous file is renamed back and nothing is reloaded, so nginx
serves what it served before. Standard library only, Python 3.9+.
"""

import os
import subprocess

from _common import BadArguments, _fsync_dir, _remove_quietly, _tmp_name, _write_beside

COMMAND_TIMEOUT = 60.0  # nginx -t and a reload parse the configuration: seconds, not minutes


def install(path, previous, text):
    """Write `text` beside `path` and rename it into place, the file it replaces kept as `previous` (a hard
    link made before the rename); whether there was a file to replace."""
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise FileNotFoundError("%s does not exist: the router's configuration includes a file there" % parent)
    had = os.path.lexists(path)
    if had and not os.path.isfile(path):
        raise BadArguments("%s is not a regular file; refusing to replace it" % path)
    tmp = _write_beside(path, text.encode("utf-8"), 0o644)
    try:
        if had:
            keep = _tmp_name(previous)
            _remove_quietly(keep)
            os.link(path, keep)
            os.replace(keep, previous)
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(parent)
    return had


def put_back(path, previous, had):
    """`previous` renamed back into place, or the file removed when there was none before."""
    if had:
        os.replace(previous, path)
    else:
        _remove_quietly(path)
    _fsync_dir(os.path.dirname(path))


def _tail(text, lines=2):
    said = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(said[-lines:])


def run_command(command, timeout=COMMAND_TIMEOUT):
    """(ok, the last lines it said) of a shell command of the operator's (`sudo nginx -t`)."""
    try:
        done = subprocess.run(command, shell=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, "no answer within %g s" % timeout
    said = done.stdout.decode("utf-8", "replace")
    return done.returncode == 0, _tail(said) or "exit status %d" % done.returncode


def install_checked(path, previous, text, check, reload):
    """Install, check, reload; None when the reload was sent, else [what failed, its output] after the
    previous file was put back (nothing reloaded). `reload` is a command, or a function giving (ok, said,
    what it did) for a caller that can signal nginx itself."""
    had = install(path, previous, text)
    for command, what in ((check, "refused the new upstream file"), (reload, "did not reload")):
        if callable(command):
            ok, said, command = command()
        else:
            ok, said = run_command(command)
        if not ok:
            put_back(path, previous, had)
            return ["%s %s" % (command, what), said]
    return None
