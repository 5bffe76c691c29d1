"""Reads for the admin pages: a constant number of queries per page, whatever the table size."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Prefetch, QuerySet

from .models import Archive, Case, CaseEvent, VendorJob

#: Vendor export ids people paste into the search box: Qualifio rule ids (24 hex characters),
#: Salesforce policy file ids (15 characters) and the like.
VENDOR_REFERENCE = re.compile(r"^[A-Za-z0-9_-]{12,64}$")

PROGRESS_DONE = (VendorJob.Step.DONE, VendorJob.Step.NO_DATA)
PROGRESS_READY = (VendorJob.Step.AWAITING_APPROVAL, VendorJob.Step.NO_DATA)


def cases_for_admin(queryset: QuerySet[Case]) -> QuerySet[Case]:
    """The case list: one extra query per page brings every case's jobs (for the progress)."""
    jobs = VendorJob.objects.only("id", "case_id", "step").order_by()
    return queryset.prefetch_related(Prefetch("jobs", queryset=jobs))


def vendor_progress_label(case: Case) -> str:
    """``2/3 done``, ``1/2 ready``, ``no data held``… from the prefetched jobs; no query.

    Before approval, a vendor is *ready* once it has been searched (records found and waiting
    for approval, or nothing held); after it, *done* once its archives are stored.
    """
    jobs = list(case.jobs.all())
    steps = [job.step for job in jobs]
    if not jobs:
        return "—"
    if all(step == VendorJob.Step.CANCELLED for step in steps):
        return "cancelled"
    if all(step == VendorJob.Step.NO_DATA for step in steps):
        return "no data held"
    failed = steps.count(VendorJob.Step.FAILED)
    if case.state == Case.State.NEW:
        ready = sum(step in PROGRESS_READY for step in steps)
        label = f"{ready}/{len(jobs)} ready"
    else:
        label = f"{sum(step in PROGRESS_DONE for step in steps)}/{len(jobs)} done"
    return f"{label}, {failed} failed" if failed else label


def cases_with_vendor_reference(term: str) -> QuerySet[VendorJob] | None:
    """Case ids whose vendor export id is ``term`` (an index lookup), or None if it can't be."""
    if not VENDOR_REFERENCE.match(term):
        return None
    return VendorJob.objects.filter(external_ref=term).values("case_id")


def case_page_context(case: Case, user: Any) -> dict[str, Any]:
    """What the case page shows besides the fields: history, vendor jobs, archives."""
    events = CaseEvent.objects.filter(case=case).select_related("actor").order_by("at", "id")
    jobs = (
        VendorJob.objects.filter(case=case)
        .select_related("account")
        .prefetch_related("archives")
        .order_by("id")
    )
    return {
        "case_events": list(events),
        "vendor_jobs": list(jobs),
        "can_download": user.has_perm("cases.download_archive"),
    }


def archive_of(case: Case, archive_id: int) -> Archive | None:
    """A stored (not retention-deleted) archive of this case, or None."""
    return (
        Archive.objects.filter(pk=archive_id, job__case=case, deleted_at__isnull=True)
        .select_related("job__account")
        .first()
    )
