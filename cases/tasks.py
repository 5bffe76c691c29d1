"""Celery tasks: thin wake-up calls into cases.pipeline, which keeps all state in the DB."""

from __future__ import annotations

from datetime import datetime

from celery import shared_task
from django.db import InterfaceError, OperationalError

from . import pipeline


@shared_task(
    acks_late=True,
    ignore_result=True,
    autoretry_for=(OperationalError, InterfaceError),
    retry_backoff=True,
    retry_backoff_max=120,
    max_retries=5,
)
def advance_job(job_id: int, claim: str | None = None) -> None:
    """Run whatever the job's current step requires. Safe to run twice or to kill anywhere.

    ``claim`` (ISO time) comes from the sync tick that sent this wake-up; see sync_tick.
    """
    pipeline.advance(job_id, datetime.fromisoformat(claim) if claim else None)


@shared_task(acks_late=True, ignore_result=True)
def sync_vendor_jobs() -> int:
    """Beat: wake every in-flight job whose next poll or retry is due."""
    return pipeline.sync_tick()


@shared_task(acks_late=True, ignore_result=True)
def purge_expired_archives() -> int:
    """Beat: delete archives kept longer than DSAR_ARCHIVE_RETENTION_DAYS after the case."""
    return pipeline.purge_expired_archives()
