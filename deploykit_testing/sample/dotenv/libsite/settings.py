"""Settings of the library sample project, twelve-factor style.

Every value comes from os.environ only: manage.py and wsgi.py load ``.env``
into the environment before Django starts (settings.py never reads the
file). The database is ``DATABASE_URL`` (postgresql://user:password@host:port/name
or sqlite:////absolute/path); without it, SQLite in BASE_DIR.
"""
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from libsite.thirdparty import APPS as THIRD_PARTY_APPS

BASE_DIR = Path(__file__).resolve().parent.parent


def env(key, default=""):
    return os.environ.get(key, default)


def env_bool(key, default=False):
    value = env(key, "")
    if value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _path(value):
    path = Path(value).expanduser()
    return path if path.is_absolute() else BASE_DIR / path


def database_from_url(url):
    parts = urlsplit(url)
    if parts.scheme in ("postgres", "postgresql", "pgsql"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": _path(unquote(parts.path[1:]) or "db.sqlite3")}
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"DATABASE_URL scheme {parts.scheme!r} is not supported: use postgresql:// or sqlite://")


SECRET_KEY = env("SECRET_KEY", "django-insecure-deploykit-sample-library-not-for-production")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "library",
]
INSTALLED_APPS += THIRD_PARTY_APPS
# optional extra apps, e.g. EXTRA_APPS=deploykit.django for deploykit's management commands
INSTALLED_APPS += [app.strip() for app in env("EXTRA_APPS", "").split(",") if app.strip()]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
# optional extra middleware, e.g. EXTRA_MIDDLEWARE=deploykit.django.middleware.WriteFreezeMiddleware
MIDDLEWARE += [m.strip() for m in env("EXTRA_MIDDLEWARE", "").split(",") if m.strip()]

ROOT_URLCONF = "libsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "libsite.wsgi.application"

DATABASES = {"default": database_from_url(env("DATABASE_URL", "sqlite:///db.sqlite3"))}

AUTH_PASSWORD_VALIDATORS = []

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

MEDIA_URL = "/media/"
MEDIA_ROOT = _path(env("MEDIA_ROOT") or "media")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
