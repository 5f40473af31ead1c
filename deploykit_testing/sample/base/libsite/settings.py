"""Settings of the library sample project.

Every value comes from an environment variable or, failing that, from a
``.env`` file in BASE_DIR (``KEY=VALUE`` lines, ``#`` comments); the
environment wins over the file.
"""
import os
from pathlib import Path

from libsite.thirdparty import APPS as THIRD_PARTY_APPS

BASE_DIR = Path(__file__).resolve().parent.parent


def _read_env_file(path):
    values = {}
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return values
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip()
        if key.startswith("export "):
            key = key[len("export "):].strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key] = value
    return values


_ENV_FILE = _read_env_file(BASE_DIR / ".env")


def env(key, default=""):
    if key in os.environ:
        return os.environ[key]
    return _ENV_FILE.get(key, default)


def env_bool(key, default=False):
    value = env(key, "")
    if value == "":
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _path(value):
    path = Path(value).expanduser()
    return path if path.is_absolute() else BASE_DIR / path


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

DB_ENGINE = env("DB_ENGINE", "sqlite").strip().lower()
if DB_ENGINE in ("postgresql", "postgres", "django.db.backends.postgresql"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": env("DB_NAME", "library"),
            "USER": env("DB_USER"),
            "PASSWORD": env("DB_PASSWORD"),
            "HOST": env("DB_HOST"),
            "PORT": env("DB_PORT"),
        }
    }
elif DB_ENGINE in ("sqlite", "sqlite3", "django.db.backends.sqlite3"):
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": _path(env("DB_NAME") or "db.sqlite3"),
        }
    }
else:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"DB_ENGINE={DB_ENGINE!r} is not supported: use 'sqlite' or 'postgresql'"
    )

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
