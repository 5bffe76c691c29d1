"""The Celery application. Workers run every vendor call; beat drives the status sync."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dsar.settings")

app = Celery("dsar")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.setup_logging.connect
def use_django_logging(**kwargs: object) -> None:
    """Workers log through settings.LOGGING only (its masking formatter included).

    Connecting to this signal stops Celery from installing handlers of its own, such as the
    ``celery.task`` one that would write records without masking personal data.
    """
    from logging.config import dictConfig

    from django.conf import settings

    dictConfig(settings.LOGGING)


@signals.task_prerun.connect
@signals.task_postrun.connect
def recycle_database_connections(**kwargs: object) -> None:
    """Around each task, as Django does around each request: drop a connection that broke or
    outlived CONN_MAX_AGE, keep a healthy one (CELERY_DB_REUSE_MAX stops Celery closing it).

    A task run eagerly inside a transaction (tests) keeps its connection.
    """
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close_if_unusable_or_obsolete()
