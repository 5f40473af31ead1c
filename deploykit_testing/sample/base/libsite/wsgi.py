"""WSGI config for the library sample project (``gunicorn libsite.wsgi``)."""
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "libsite.settings")

application = get_wsgi_application()
