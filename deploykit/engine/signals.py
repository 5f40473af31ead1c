"""Ctrl-C, SIGTERM and SIGHUP during a run: finish safely, or stop at once when asked twice.

The first signal stops the current step (its remote commands are killed with
everything they started) and lets the procedure for the point reached run:
before migrate the release is aborted, from migrate on it is recovered. While
such a procedure runs, a signal only warns; the next one stops at once
(`HardStop`), keeping the lock and the journal so that the same command, run
again, finishes the procedure.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager

from ..errors import HardStop

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _say(text: str) -> None:
    try:
        sys.stderr.write(f"\ndeploykit: {text}\n")
        sys.stderr.flush()
    except Exception:
        pass


@contextmanager
def handled(ctx):
    """Install the handlers for the duration of a run (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread() or ctx.dry_run:
        yield
        return
    warned = {"n": 0}

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if ctx.interrupted is None and not ctx.in_procedure:
            _say(f"{name}: stopping the current step, then the procedure for this point runs "
                 "(abort before migrate, recover from migrate on). Send it again to stop at once.")
            threading.Thread(target=ctx.interrupt, args=(signum,), daemon=True).start()
            return
        if ctx.in_procedure and warned["n"] == 0 and ctx.interrupted is None:
            warned["n"] += 1
            _say(f"{name}: a {ctx.resume_point.get('procedure') or 'procedure'} is running and should finish; "
                 "send it again to stop at once (the same command, run again, finishes it).")
            return
        _say(f"{name}: stopping at once; the lock is kept: run the same command again to finish.")
        ctx.hard_stopped = signum
        threading.Thread(target=ctx.interrupt, args=(signum,), daemon=True).start()
        raise HardStop(signum)

    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
