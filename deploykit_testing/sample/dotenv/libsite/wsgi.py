"""WSGI config for the library sample project (``gunicorn libsite.wsgi``); loads .env first."""
import os

from django.core.wsgi import get_wsgi_application

from libsite.dotenv import load_dotenv

load_dotenv()
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "libsite.settings")

application = get_wsgi_application()
