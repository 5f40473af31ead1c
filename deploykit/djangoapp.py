"""Django work on a host, through the app's own manage.py and the release's own Python.

The helper remote/django_state.py is not run by `python:` with a
DJANGO_SETTINGS_MODULE of deploykit's choosing: it runs inside

    cd RELEASE && RELEASE/.venv/bin/python manage.py shell -v 0 -c BOOTSTRAP

so it sees what the app sees (manage.py may load a .env, choose the settings
module, set DATABASE_URL...). BOOTSTRAP reads the helper's source from stdin (`shell` itself is not asked
to read stdin: it polls it with a zero timeout), then answers requests, one
JSON line each, until stdin ends: one Django start-up per release directory,
host and run serves every question the run asks there (databases, migration
state, plans, migrate, collectstatic).
"""
from __future__ import annotations

import json
import time

from .drivers import database_drivers
from .errors import DeployError, HostCommandFailed
from .transport.host import q
from .pyenv import app_python
from .transport.bundle import helper_source
from .transport.session import SessionEnded

HELPER = "django_state"
HELPER_NAME = f"deploykit-{HELPER}.py"  # in `ps`: api's pgrep and operators find a running helper by it
COLUMNS_HELPER = "django_columns"  # the models and their columns (the anonymized refresh's rules and defaults)

# The trailing comment names the helper in the process list. The helper answers requests until
# stdin ends: one Django start-up per release directory, host and run (see remote/_common.serve_session).
_BOOTSTRAP = ("import sys;n=int(sys.stdin.readline());src=sys.stdin.read(n);sys.argv=[{name!r},'--session'];"
              "exec(compile(src,{name!r},'exec'),{{'__name__':'__main__'}}) # {name} session")
ANSWER = "\x1edeploykit-answer "  # remote/_common.py's mark of an answer line
STARTED = "\x1edeploykit-started"  # ... and of "the request was read"
PROGRESS = "\x1edeploykit-progress "  # ... and of a line of what the action is doing


def manage_env(ctx) -> dict | None:
    return {"DJANGO_SETTINGS_MODULE": ctx.config.settings_module} if ctx.config.settings_module else None


def _session(ctx, host, release_dir: str, helper: str = HELPER):
    """The run's Django for release_dir on host: started on first use, kept until the host is closed.

    Each helper of remote/ run this way has its own session (django_state's is keyed as it always was).
    """
    def start():
        source = helper_source(helper)
        env = dict(manage_env(ctx) or {})
        if host.read_only:  # a dry-run: the helper itself refuses every action that writes
            env["DEPLOYKIT_READ_ONLY"] = "1"
        else:  # long work (migrate, unapply) is listed in the run's pid file as it starts
            env["DEPLOYKIT_PID_FILE"] = host.pid_file
        boot = _BOOTSTRAP.format(name=f"deploykit-{helper}.py")
        session = host.open_session(f"{app_python(ctx.config, host, release_dir)} manage.py shell -v 0 -c {q(boot)}",
                                    cwd=release_dir, env=env or None, read_only=True,
                                    track=None if host.read_only else "django")
        session.send(f"{len(source)}\n{source}")
        return session
    return host.session(("django", release_dir) if helper == HELPER else ("django", release_dir, helper), start)


def warm_up(ctx, host, release_dir: str) -> None:
    """Start release_dir's Django now, so its start-up overlaps the work before the first question.

    Nothing is asked: a Django that fails to start says so to the first real
    question, as it would have without this.
    """
    try:
        _session(ctx, host, release_dir)
    except (SessionEnded, HostCommandFailed):
        pass


def ask(ctx, host, release_dir: str, action: str, args: dict, timeout: float, progress=None,
        helper: str = HELPER) -> dict | None:
    """One request to the session of release_dir; its answer (a session that ended is a failed command).

    A session that had answered before and is found ended before it read
    the request (killed with the leftovers of an interrupted run, say) is
    started again once: the helper says when it has read a request, so
    nothing is ever done twice.
    """
    session = _session(ctx, host, release_dir, helper)
    deadline = time.monotonic() + timeout
    started = False
    with session.turn:
        try:
            session.send(json.dumps({"action": action, "args": args}) + "\n")
            while True:
                line = session.read_line(max(0.1, deadline - time.monotonic()))
                if line.startswith(ANSWER):
                    session.served += 1
                    return json.loads(line[len(ANSWER):])
                if line == STARTED:
                    started = True
                elif line.startswith(PROGRESS):
                    if progress is not None:
                        progress(json.loads(line[len(PROGRESS):]).get("text", ""))
                else:
                    session.tail = (session.tail + [line])[-20:]
        except SessionEnded as exc:
            if session.served and not started:
                session.close(timeout=5)
                return ask(ctx, host, release_dir, action, args, timeout, progress, helper)
            ended = session.close(timeout=5)
            said = exc.one_line().split(": it ended: ", 1)[1] if ": it ended: " in exc.one_line() else ""
            raise HostCommandFailed(
                f"{host.name}: manage.py shell in {release_dir} gave no answer to {action} "
                f"(exit {getattr(ended, 'exited', '?')}){': ' + said if said else ''}",
                hint="run 'manage.py check' in that release on the host to see why") from None


def django_helper(ctx, host, release_dir: str, action: str, args: dict | None = None, *,
                  check: bool = True, timeout: float | None = None, track: str | None = None,
                  progress=None, helper: str = HELPER) -> dict:
    """Ask the app's Django in release_dir (django_state.py ACTION, inside its manage.py); the JSON answer.

    helper: another helper of remote/ run the same way (django_columns).

    track: a label; the session lists itself in the run's pid file under it while it does this work.
    progress(text): told each line of output as the action writes it (migrate's "Applying ...").
    """
    host.allows(helper, action)  # a dry-run Host refuses a changing action before it is sent
    args = {"project_dir": release_dir, **(args or {}), **({"_track": track} if track else {})}
    doc = ask(ctx, host, release_dir, action, args, timeout or ctx.config.command_timeout, progress, helper)
    if not isinstance(doc, dict):
        raise HostCommandFailed(f"{host.name}: manage.py shell in {release_dir} gave no answer to {action}",
                                hint="run 'manage.py check' in that release on the host to see why")
    if check and not doc.get("ok"):
        raise HostCommandFailed(f"{host.name}: django {action} in {release_dir}: {doc.get('error')}")
    return doc


def migration_state(ctx, host, release_dir: str) -> dict:
    """Applied graph nodes per app (graph order), replaced/unmatched rows, leaves."""
    return django_helper(ctx, host, release_dir, "state")


def migration_graph(ctx, host, release_dir: str) -> dict:
    """migration_state + every node per app in graph order + what each squash replaces."""
    return django_helper(ctx, host, release_dir, "graph")


def model_columns(ctx, host, release_dir: str) -> dict:
    """{user_model, models: [...]}: every concrete model of the app in release_dir and its fields' columns
    (remote/django_columns.py `columns`)."""
    return django_helper(ctx, host, release_dir, "columns", helper=COLUMNS_HELPER)


def django_databases(ctx, host, release_dir: str) -> dict:
    """alias -> {ENGINE, NAME, HOST, PORT, USER} as the app in release_dir sees it (SQLite NAME: real path)."""
    return django_helper(ctx, host, release_dir, "databases")["databases"]


def _show(seen: dict) -> str:
    engine = (seen.get("ENGINE") or "?").rsplit(".", 1)[-1]
    where = ""
    if seen.get("HOST") or seen.get("PORT"):
        where = f" on {seen.get('HOST') or 'local socket'}:{seen.get('PORT') or 'default port'}"
    return f"{engine} {seen.get('NAME')!r}{where}"


def database_problems(ctx, host, seen: dict, resolved: dict) -> list[str]:
    """Differences between the databases the app sees and deploykit.yaml's `databases:` (pure)."""
    problems = []
    for d in database_drivers(ctx.config):
        alias = d.spec.alias
        got = seen.get(alias)
        if got is None:
            problems.append(f"{host.name}: database {alias!r} of deploykit.yaml is not in the app's DATABASES "
                            f"({', '.join(sorted(seen)) or 'none'})")
        elif not d.django_uses_it(host, got, resolved):
            problems.append(f"{host.name}: database {alias!r}: the app uses {_show(got)}, "
                            f"deploykit.yaml says {d.django_expected(host, resolved)}")
    return problems


def check_database_identity(ctx, host, release_dir: str) -> list[str]:
    """Problems (one line each) if the databases the app in release_dir uses are not the configured ones.

    A backup, snapshot or restore of the configured database protects nothing
    when the app writes to another one; and migration states read from the
    wrong database make rollbacks unapply the wrong things.
    """
    resolve = [p for d in database_drivers(ctx.config) for p in d.django_paths(host)]
    doc = django_helper(ctx, host, release_dir, "databases", {"resolve": resolve})
    return database_problems(ctx, host, doc["databases"], doc.get("resolved") or {})


def require_database_identity(ctx, host, release_dir: str) -> str:
    problems = check_database_identity(ctx, host, release_dir)
    if problems:
        raise DeployError("; ".join(problems),
                          hint="make the app's settings (.env, DATABASE_URL, settings module) and deploykit.yaml's "
                               "databases: name the same database")
    return ", ".join(f"{db.alias} ok" for db in ctx.config.databases) or "no database configured"
