"""Celery workers keep their database connection between tasks, and still drop a broken one."""

from __future__ import annotations

import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection

from cases.tasks import advance_job
from dsar.celery import app, recycle_database_connections


class Request:
    is_eager = False


class Sender:
    request = Request()


def finish_task() -> None:
    """What a prefork worker runs after each task: Celery's Django fixup, then ours."""
    DjangoWorkerFixup(app).on_task_postrun(sender=Sender())
    recycle_database_connections(sender=advance_job)


@pytest.mark.django_db(transaction=True)
def test_connection_survives_a_task() -> None:
    connection.ensure_connection()
    backend = connection.connection
    finish_task()
    assert connection.connection is backend  # before CELERY_DB_REUSE_MAX: closed every task


@pytest.mark.django_db(transaction=True)
def test_connection_past_conn_max_age_is_replaced() -> None:
    connection.ensure_connection()
    connection.close_at = 0  # as if CONN_MAX_AGE had passed
    finish_task()
    assert connection.connection is None


@pytest.mark.django_db(transaction=True)
def test_broken_connection_is_dropped() -> None:
    connection.ensure_connection()
    connection.errors_occurred = True
    connection.connection.close()  # the server went away under it
    finish_task()
    assert connection.connection is None
