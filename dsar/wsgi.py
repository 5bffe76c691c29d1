"""WSGI entry point (gunicorn dsar.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dsar.settings")
application = get_wsgi_application()
