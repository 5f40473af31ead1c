"""The files `deploykit init` writes, as text: the templates (package data) filled from a DjangoProject.

Each section of deploykit.yaml that depends on the settings (shared:,
databases:, media:, collectstatic:) is built here with comments that say what
was found and what, if anything, the settings need on the hosts. Paths inside
the project become links from shared/ (no settings change); paths outside it
become shared/<name> with the change explained.
"""
from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from importlib import resources
from string import Template

import yaml

from .. import layout
from ..config.fields import engine_names
from .project import DjangoProject

COMMENT_COLUMN = 31


def template(name: str) -> Template:
    return Template(resources.files(__package__).joinpath("templates", name).read_text(encoding="utf-8"))


def scalar(value) -> str:
    """A YAML scalar for value: plain when it reads back as the same string, else double-quoted."""
    text = str(value)
    try:
        if re.fullmatch(r"[A-Za-z0-9_./@:+~-]+", text) and yaml.safe_load(text) == text:
            return text
    except yaml.YAMLError:
        pass
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def line(indent: int, text: str, comment: str = "") -> str:
    out = " " * indent + text
    if comment:
        out = out.ljust(COMMENT_COLUMN - 1) + " # " + comment
    return out


def align_comments(text: str) -> str:
    """Inline comments of short lines start at COMMENT_COLUMN (values filled in shift them otherwise)."""
    out = []
    for row in text.splitlines():
        m = re.match(r"^(\s*[^\s#].*?)\s{2,}(# .*)$", row)
        if m and len(m[1]) < COMMENT_COLUMN - 1 and not m[1].lstrip().startswith("#"):
            row = m[1].ljust(COMMENT_COLUMN - 1) + " " + m[2]
        out.append(row)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def comments(indent: int, text: str, width: int = 96) -> list[str]:
    """A paragraph as comment lines."""
    out, cur = [], ""
    for word in text.split():
        if cur and len(" " * indent + "# " + cur + " " + word) > width:
            out.append(" " * indent + "# " + cur)
            cur = word
        else:
            cur = f"{cur} {word}" if cur else word
    if cur:
        out.append(" " * indent + "# " + cur)
    return out


def engine_of(django_engine: str) -> str | None:
    """deploykit's engine for a Django ENGINE, when deploykit has a driver for it."""
    e = django_engine.lower()
    found = "postgresql" if ("postgres" in e or "postgis" in e) else "sqlite" if ("sqlite" in e or "spatialite" in e) \
        else None
    return found if found in engine_names() else None


@dataclass
class Sections:
    """The settings-dependent parts of deploykit.yaml, and what init says about them."""

    shared: list[tuple[str, str]] = field(default_factory=list)  # (relative path, why)
    databases: list[str] = field(default_factory=list)
    media: list[str] = field(default_factory=list)
    collectstatic: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    engines: set[str] = field(default_factory=set)


def _sqlite(alias: str, cfg: dict, p: DjangoProject, s: Sections, shared_base: str) -> list[str]:
    name = cfg["NAME"]
    if not name or name == ":memory:" or name.startswith("file:"):
        s.notes.append(f"database {alias}: SQLite {name or '(no NAME)'} is not a file deploykit can back up: left out")
        return comments(2, f"{alias}: SQLite {name or '(no NAME)'} is not a database file: nothing to back up.")
    rel = p.relative(name)
    out = [line(2, f"{alias}:"), line(4, "engine: sqlite")]
    if rel is not None:
        s.shared.append((rel, f"the SQLite database of {alias} (see databases:)"))
        out.append(line(4, f"path: {scalar(posixpath.join(shared_base, rel))}", "relative to deploy_to"))
        out += comments(4, f"Your settings' NAME is {rel} in the project (a file inside each release): shared: "
                           f"above links it to <deploy_to>/{shared_base}/{rel}, so every release uses that one file "
                           f"and the settings need no change. Create it on each host before the first release: "
                           f"touch <deploy_to>/{shared_base}/{rel} (or set NAME to that absolute path in the "
                           f"settings and drop {rel} from shared:).")
        s.notes.append(f"database {alias}: SQLite, linked from {shared_base}/{rel}: create that file (empty) on each "
                       "host before the first release")
    else:
        base = posixpath.basename(name.replace("\\", "/")) or "db.sqlite3"
        out.append(line(4, f"path: {scalar(posixpath.join(shared_base, base))}", "relative to deploy_to"))
        out += comments(4, f"Your settings' NAME is {name}, outside the project: on the hosts it must be "
                           f"<deploy_to>/{shared_base}/{base}, the file deploykit backs up. Change the settings "
                           f"the hosts use (e.g. NAME read from an environment variable or a .env in shared:), "
                           f"or write that file's path here.")
        s.notes.append(f"database {alias}: SQLite NAME {name} is outside the project: the settings must use "
                       f"<deploy_to>/{shared_base}/{base} on the hosts (see the comment in deploykit.yaml)")
    return out


def _postgres(alias: str, cfg: dict, app: str, s: Sections) -> list[str]:
    out = [line(2, f"{alias}:"), line(4, "engine: postgresql"),
           line(4, f"name: {scalar(cfg['NAME'] or app)}", "the database (the settings' NAME)")]
    if cfg["USER"]:
        out.append(line(4, f"owner: {scalar(cfg['USER'])}", "owns every object after a restore (USER)"))
    else:
        out.append(line(4, "# owner: " + app, "the role owning its objects (the settings set no USER)"))
    if cfg["HOST"]:
        out.append(line(4, f"host: {scalar(cfg['HOST'])}", "the server, as the hosts reach it"))
    if cfg["PORT"]:
        try:
            out.append(line(4, f"port: {int(cfg['PORT'])}"))
        except ValueError:
            out.append(line(4, f"# port: {cfg['PORT']}", "not a number in the settings: fix and uncomment"))
    out.append(line(4, "admin_user: postgres", "the role that dumps, restores and clones"))
    out.append(line(4, f"# password_env: {re.sub(r'[^A-Z0-9_]', '_', app.upper())}_PG_ADMIN_PASSWORD",
                    "its password, from this controller variable"))
    out.append(line(4, "# passfile: /home/deploy/.pgpass", "or from a libpq passfile on the host"))
    s.notes.append(f"database {alias}: PostgreSQL {cfg['NAME']}: the hosts need the PostgreSQL client tools "
                   "(pg_dump, pg_restore, psql)")
    return out


def databases_section(p: DjangoProject, app: str, s: Sections, shared_base: str) -> None:
    body: list[str] = []
    seen: dict[tuple, str] = {}
    for alias, cfg in p.databases.items():
        engine = engine_of(cfg["ENGINE"])
        if engine is None:
            body += comments(2, f"{alias}: {cfg['ENGINE']} {cfg['NAME']!r}: deploykit has no driver for this "
                                f"engine (it has: {', '.join(engine_names())}), so it is neither backed up nor "
                                f"restored.")
            s.notes.append(f"database {alias}: {cfg['ENGINE']} has no deploykit driver: left out (not backed up)")
            continue
        key = (engine, cfg["NAME"], cfg["HOST"], cfg["PORT"])
        if key in seen:
            body += comments(2, f"{alias}: the same database as {seen[key]} (listed once: it would be backed "
                                f"up twice).")
            continue
        seen[key] = alias
        s.engines.add(engine)
        body += _sqlite(alias, cfg, p, s, shared_base) if engine == "sqlite" else _postgres(alias, cfg, app, s)
    head = "databases:" if seen else "databases: {}"
    s.databases = [line(0, head, "backed up before every release, put back when one fails"), *body]


def media_section(p: DjangoProject, s: Sections, shared_base: str) -> None:
    why = "media directories: backed up with a per-file manifest"
    root = p.media_root
    if not root:
        s.media = [line(0, "media: []", why),
                   *comments(0, "The settings set no MEDIA_ROOT. If the app stores uploads, set MEDIA_ROOT = "
                                "BASE_DIR / 'media', add media to shared: and list it here as "
                                "- {name: media, path: shared/media}.")]
        return
    rel = p.relative(root)
    if rel is not None:
        s.shared.append((rel, "MEDIA_ROOT (uploads), kept across releases"))
        entry = f"- {{name: media, path: {scalar(posixpath.join(shared_base, rel))}}}"
        s.media = [line(0, "media:", why), line(2, entry, f"MEDIA_ROOT: {rel} in each release")]
        return
    base = posixpath.basename(root.rstrip("/").replace("\\", "/")) or "media"
    s.media = [line(0, "media:", why),
               line(2, f"- {{name: media, path: {scalar(posixpath.join(shared_base, base))}}}"),
               *comments(2, f"Your settings' MEDIA_ROOT is {root}, outside the project: on the hosts it must be "
                            f"<deploy_to>/{shared_base}/{base} (change the settings the hosts use), or write "
                            f"the directory's path here.")]
    s.notes.append(f"media: MEDIA_ROOT {root} is outside the project: the settings must use "
                   f"<deploy_to>/{shared_base}/{base} on the hosts")


def collectstatic_section(p: DjangoProject, s: Sections) -> None:
    static_app = "django.contrib.staticfiles" in p.installed_apps
    if p.static_root and static_app:
        rel = p.relative(p.static_root)
        where = f"STATIC_ROOT is {rel} in each release" if rel else \
            f"STATIC_ROOT is {p.static_root}, outside the releases: every release writes there"
        s.collectstatic = [line(0, "collectstatic: true", "manage.py collectstatic in each new release"),
                           *comments(0, f"{where}; serve it at STATIC_URL from the web server in front.")]
        return
    why = "no STATIC_ROOT in the settings" if static_app else "django.contrib.staticfiles is not installed"
    s.collectstatic = [line(0, "collectstatic: false", why),
                       *comments(0, "To serve static files: set STATIC_ROOT = BASE_DIR / 'staticfiles' in the "
                                    "settings, then write 'collectstatic: true' (each new release collects "
                                    "into its own directory).")]


def shared_section(s: Sections) -> list[str]:
    why = "linked from <deploy_to>/shared/ into every release"
    if not s.shared:
        return [line(0, "shared: []", why), *comments(0, "e.g. [.env, media]: files and directories every "
                                                         "release shares (a file must exist on the host).")]
    return [line(0, "shared:", why), *(line(2, f"- {scalar(rel)}", note) for rel, note in s.shared)]


@dataclass
class Rendered:
    """Every file init would write (relative path -> text), and what it has to say about them."""

    files: dict[str, str]
    notes: list[str]
    app: str
    engines: set[str]


def host_header(p: DjangoProject) -> str:
    return next((h.lstrip(".") for h in p.allowed_hosts if h not in ("*", "") and not h.startswith("*")),
                "www.example.com")


def render_files(p: DjangoProject, *, app: str, deploy_to: str, port: int) -> Rendered:
    s = Sections()
    databases_section(p, app, s, layout.SHARED)
    media_section(p, s, layout.SHARED)
    collectstatic_section(p, s)
    values = {"app": app, "deploy_to": deploy_to, "port": port, "settings_module": p.settings_module,
              "settings_from": p.settings_from, "wsgi": p.wsgi_target, "host_header": host_header(p)}
    yaml_text = align_comments(template("deploykit.yaml.in").substitute(
        values, shared="\n".join(shared_section(s)) + "\n", databases="\n".join(s.databases) + "\n",
        media="\n".join(s.media) + "\n", collectstatic="\n".join(s.collectstatic) + "\n"))
    files = {
        "deploykit.yaml": yaml_text,
        f"deploy/supervisor/{app}.conf": template("supervisor.conf.in").substitute(values),
        f"deploy/systemd/{app}-web.service": template("systemd.service.in").substitute(values),
    }
    major_minor = ".".join(p.django.split(".")[:2]) + ".0"
    extra = "psycopg[binary]>=3.1\n" if "postgresql" in s.engines else ""
    files["requirements.txt"] = template("requirements.txt.in").substitute(django=major_minor, extra=extra) \
        .rstrip("\n") + "\n"
    return Rendered(files=files, notes=s.notes, app=app, engines=s.engines)
