"""Per-job vendor callback URLs with unguessable tokens, and their verification.

The URL carries the job's random ``callback_id`` and an HMAC of it keyed by SECRET_KEY, so
nothing secret is stored: a database leak alone does not let anyone forge a callback, and a
token is only valid for the job it was made for.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.urls import reverse
from django.utils.crypto import constant_time_compare, salted_hmac

from .models import VendorJob

_SALT = "cases.callbacks.vendor-job"


def token_for(callback_id: uuid.UUID | str) -> str:
    return salted_hmac(_SALT, str(callback_id), algorithm="sha256").hexdigest()


def url_for(job: VendorJob) -> str:
    path = reverse("vendor-callback", args=[job.callback_id, token_for(job.callback_id)])
    return settings.DSAR_PUBLIC_URL.rstrip("/") + path


def job_for(callback_id: uuid.UUID, token: str) -> VendorJob | None:
    """The job this callback is for, or None for a forged, foreign or unknown token."""
    if not constant_time_compare(token, token_for(callback_id)):
        return None
    return (
        VendorJob.objects.filter(callback_id=callback_id).select_related("case", "account").first()
    )
