#!/usr/bin/env python3
"""deploykit remote helper: one supervisord program, asked over supervisord's own socket.

Standalone (stdlib only). supervisorctl is a Python program that reads the
config file, connects to the socket it names and makes XML-RPC calls; starting
it costs about 0.3 s of interpreter and imports per verb. This helper makes the
same calls from the host's agent, which is already running. When the socket
cannot be reached (no such file, refused, permission denied, an address this
helper does not read), nothing has been asked yet and it answers
``reachable: false``: the controller then runs the configured supervisorctl,
which says why in its own words.

    python supervisor.py status  < {"conf": PATH, "program": NAME}
      -> {"ok": true, "reachable": true, "state": "RUNNING"}
    python supervisor.py start|stop|restart < {"conf": PATH, "program": NAME}
      -> {"ok": true, "reachable": true, "changed": bool, "state": "...", "said": "..."}
      or {"ok": false, "error": "...", "fault": "ALREADY_STARTED"|...}
    python supervisor.py spawn < {"conf": PATH, "program": NAME}
      -> the same, answered once supervisord has spawned the program (STARTING or RUNNING), without
         waiting its startsecs out; a program that is already gone (EXITED, FATAL, BACKOFF) is a failure.
         The caller's health check is what proves the program serves.
    python supervisor.py respawn < {"conf": PATH, "program": NAME}
      -> stop (a stopped program is fine), then spawn: a restart without the start-up wait, in one call
"""
import configparser
import http.client
import os
import socket
import sys
import time
import xmlrpc.client
from urllib.parse import quote

from _common import serve

# supervisor's xmlrpc fault codes (supervisor/xmlrpc.py: Faults)
FAULTS = {10: "BAD_NAME", 30: "NO_FILE", 40: "ABNORMAL_TERMINATION", 50: "SPAWN_ERROR",
          60: "ALREADY_STARTED", 70: "NOT_RUNNING", 90: "FAILED", 100: "SHUTDOWN_STATE"}


STOP_WAIT = 600.0  # seconds a stop is waited for (supervisord kills the program after its stopwaitsecs)
SPAWN_WAIT = 5.0  # seconds supervisord may take to fork a program it was told to start


class Unreachable(Exception):
    """The socket could not be reached: nothing was asked of supervisord."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        http.client.HTTPConnection.__init__(self, "localhost")
        self._path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self._path)
        except OSError as e:
            sock.close()
            raise Unreachable("%s: %s" % (self._path, e.strerror or e))
        self.sock = sock


class _UnixTransport(xmlrpc.client.Transport):
    def __init__(self, path):
        xmlrpc.client.Transport.__init__(self)
        self._path = path

    def make_connection(self, host):
        return _UnixConnection(self._path)


def _expand(value, here):
    """supervisor's %(here)s and %(ENV_X)s; anything else this helper does not read."""
    names = dict(("ENV_" + k, v) for k, v in os.environ.items())
    names["here"] = here
    try:
        return value % names
    except (KeyError, ValueError) as e:
        raise Unreachable("cannot read %r here: %s" % (value, e))


def _server(conf):
    """(ServerProxy, address) for the supervisord that `conf` configures, as supervisorctl finds it."""
    parser = configparser.RawConfigParser(strict=False)
    try:
        with open(conf) as f:
            parser.read_file(f)
    except (OSError, configparser.Error) as e:
        raise Unreachable("cannot read %s: %s" % (conf, e))
    here = os.path.dirname(os.path.abspath(conf))

    def get(section, key):
        if parser.has_option(section, key):
            return _expand(parser.get(section, key).strip(), here)
        return None

    url = get("supervisorctl", "serverurl") or "http://localhost:9001"
    user, password = get("supervisorctl", "username"), get("supervisorctl", "password")
    auth = ""
    if user:
        auth = quote(user, safe="") + ":" + quote(password or "", safe="") + "@"
    if url.startswith("unix://"):
        path = url[len("unix://"):]
        return xmlrpc.client.ServerProxy("http://%slocalhost/RPC2" % auth, transport=_UnixTransport(path)), path
    raise Unreachable("serverurl %s is not a unix socket" % url)


def _call(server, method, *args):
    """One XML-RPC call; a connection that cannot be made is Unreachable, a fault is returned as its name."""
    try:
        return getattr(server.supervisor, method)(*args), None
    except xmlrpc.client.Fault as e:
        return None, (FAULTS.get(e.faultCode, str(e.faultCode)), e.faultString)
    except xmlrpc.client.ProtocolError as e:
        if e.errcode == 401:
            raise Unreachable("supervisord refused the credentials (401)")
        raise


def _state(server, program):
    info, fault = _call(server, "getProcessInfo", program)
    if fault:
        return None, fault
    return info.get("statename", "UNKNOWN"), None


def _answer(server, program, changed, said):
    state, fault = _state(server, program)
    return {"reachable": True, "changed": changed, "state": state or "UNKNOWN", "said": said}


def _failed(program, verb, fault):
    name, text = fault
    return {"ok": False, "reachable": True, "fault": name,
            "error": "%s: ERROR (%s) while trying to %s: %s" % (program, name.lower().replace("_", " "), verb, text)}


def _open(args):
    conf = args.get("conf")
    if not conf:
        raise Unreachable("no config file given")
    server, path = _server(conf)
    return server, args["program"]


def _guarded(fn):
    def action(args):
        try:
            server, program = _open(args)
            return fn(server, program)
        except Unreachable as e:
            return {"reachable": False, "why": str(e)}
    return action


@_guarded
def status(server, program):
    state, fault = _state(server, program)
    if fault:
        return {"ok": False, "reachable": True, "fault": fault[0], "error": "%s: ERROR (no such process)" % program
                if fault[0] == "BAD_NAME" else "%s: %s" % (program, fault[1])}
    return {"reachable": True, "state": state}


def _start(server, program):
    _, fault = _call(server, "startProcess", program, True)
    if fault:
        return _failed(program, "start", fault)
    return _answer(server, program, True, "%s: started" % program)


def _spawn(server, program):
    """startProcess without waiting for startsecs: back as soon as supervisord says the program was spawned."""
    _, fault = _call(server, "startProcess", program, False)
    if fault:
        return _failed(program, "start", fault)
    deadline = time.monotonic() + SPAWN_WAIT
    while True:
        state, fault = _state(server, program)
        if fault:
            return _failed(program, "start", fault)
        if state in ("STARTING", "RUNNING"):
            return _answer(server, program, True, "%s: spawned" % program)
        if state in ("EXITED", "FATAL", "BACKOFF") or time.monotonic() > deadline:
            return {"ok": False, "reachable": True, "fault": "SPAWN_ERROR", "state": state,
                    "error": "%s: ERROR (spawn error): supervisord says %s" % (program, state)}
        time.sleep(0.02)


def _stop_and_wait(server, program):
    """stopProcess without supervisord's own wait, then its state asked every 20 ms until the program is down.

    supervisord notices a child's exit in its main loop, whose select sleeps up to a second (a signal does not
    wake it: Python retries the select); each question over the socket wakes it, so the answer comes ~20 ms
    after the exit instead of up to a second. supervisord still sends SIGKILL after the program's stopwaitsecs.
    Returns the fault of stopProcess, or None."""
    _, fault = _call(server, "stopProcess", program, False)
    if fault:
        return fault
    deadline = time.monotonic() + STOP_WAIT
    while True:
        state, fault = _state(server, program)
        if fault:
            return fault
        if state not in ("STOPPING", "RUNNING", "STARTING", "BACKOFF") or time.monotonic() > deadline:
            return None if state not in ("STOPPING", "RUNNING") else ("STOP_TIMEOUT", "still %s" % state)
        time.sleep(0.02)


def _stop(server, program):
    fault = _stop_and_wait(server, program)
    if fault:
        return _failed(program, "stop", fault)
    return _answer(server, program, True, "%s: stopped" % program)


start = _guarded(_start)
spawn = _guarded(_spawn)
stop = _guarded(_stop)


@_guarded
def restart(server, program):
    """Like `supervisorctl restart`: stop (a stopped program is fine), then start."""
    fault = _stop_and_wait(server, program)
    if fault and fault[0] != "NOT_RUNNING":
        return _failed(program, "stop", fault)
    return _start(server, program)


@_guarded
def respawn(server, program):
    """stop, then spawn: the restart of a caller whose health check proves the new process serves; the
    answer says how long the stop took (the old process's own graceful exit)."""
    began = time.monotonic()
    fault = _stop_and_wait(server, program)
    if fault and fault[0] != "NOT_RUNNING":
        return _failed(program, "stop", fault)
    stopped = time.monotonic() - began
    return dict(_spawn(server, program), stopped_in=None if fault else round(stopped, 3))


READ_ONLY = {"status"}  # what a dry-run may call
ACTIONS = {"status": status, "start": start, "spawn": spawn, "stop": stop, "restart": restart, "respawn": respawn}


def main():
    sys.exit(serve(ACTIONS, name="supervisor.py", read_only=READ_ONLY))


if __name__ == "__main__":
    main()
