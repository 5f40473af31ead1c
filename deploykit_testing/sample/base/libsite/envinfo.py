"""/env/: which Python environment serves this release (deploykit gives each release its own)."""
import sys
from importlib import metadata

from django.http import JsonResponse
from django.views.decorators.http import require_GET

PACKAGES = ("dk-sample-extra", "dk-shelf", "Django", "gunicorn")


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


@require_GET
def env(request):
    return JsonResponse({"prefix": sys.prefix, "packages": {name: _version(name) for name in PACKAGES}})
