"""Views outside the admin: the vendor callback endpoint."""

from __future__ import annotations

import uuid

from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from . import callbacks, pipeline, services
from .models import CaseEvent


@never_cache
@require_safe
def vendor_callback(request: HttpRequest, callback_id: uuid.UUID, token: str) -> HttpResponse:
    """A vendor says an export is ready (Qualifio calls with GET): poll that job right away.

    Answers 204 with no body when the token is right, 404 with no body otherwise: it reveals
    nothing about cases, jobs or whether the job was waiting.
    """
    job = callbacks.job_for(callback_id, token)
    if job is None:
        return HttpResponse(status=404)
    if request.method == "GET" and pipeline.wake(job):
        services.record_event(
            job.case,
            CaseEvent.Kind.VENDOR,
            f"{job.account.name}: callback received, checking the export now.",
            actor_label=f"{job.account.vendor} callback",
        )
    return HttpResponse(status=204)
