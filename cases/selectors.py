"""Reads for the admin pages: a constant number of queries per page, whatever the table size."""

from __future__ import annotations

import re
from functools import cache
from typing import Any

from django.db.models import Aggregate, CharField, OuterRef, QuerySet, Subquery

from .models import Archive, Case, CaseEvent, VendorJob

#: Vendor export ids people paste into the search box: Qualifio rule ids (24 hex characters),
#: Salesforce policy file ids (15 characters) and the like.
VENDOR_REFERENCE = re.compile(r"^[A-Za-z0-9_-]{12,64}$")

PROGRESS_DONE = (VendorJob.Step.DONE, VendorJob.Step.NO_DATA)
PROGRESS_READY = (VendorJob.Step.AWAITING_APPROVAL, VendorJob.Step.NO_DATA)
_UNREAD = object()


class JoinedSteps(Aggregate):
    """``step,step,…``: the steps of a case's jobs in one column (no step holds a comma)."""

    function = "STRING_AGG"  # PostgreSQL
    template = "%(function)s(%(expressions)s, ',')"
    output_field = CharField()

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(compiler, connection, function="GROUP_CONCAT", **extra)


def cases_for_admin(queryset: QuerySet[Case]) -> QuerySet[Case]:
    """The case list: each case's job steps come with it (``vendor_steps``), for the progress.

    A correlated subquery in the page's own query, evaluated for the rows shown only (the
    planner computes it after the ORDER BY … LIMIT); no second query, no job objects built.
    """
    return queryset.annotate(vendor_steps=_vendor_steps())


@cache
def _vendor_steps() -> Subquery:
    """Built once: ``annotate`` resolves a copy of it for each queryset."""
    steps = (
        VendorJob.objects.filter(case=OuterRef("pk"))
        .order_by()
        .values("case")
        .annotate(steps=JoinedSteps("step"))
        .values("steps")
    )
    return Subquery(steps)


def vendor_progress_label(case: Case) -> str:
    """``2/3 done``, ``1/2 ready``, ``no data held``… from ``vendor_steps``; no query.

    Before approval, a vendor is *ready* once it has been searched (records found and waiting
    for approval, or nothing held); after it, *done* once its archives are stored. A case not
    read through ``cases_for_admin`` has its jobs read.
    """
    joined = getattr(case, "vendor_steps", _UNREAD)
    if joined is _UNREAD:
        steps = [job.step for job in case.jobs.all()]
    else:
        steps = joined.split(",") if joined else []
    if not steps:
        return "—"
    if all(step == VendorJob.Step.CANCELLED for step in steps):
        return "cancelled"
    if all(step == VendorJob.Step.NO_DATA for step in steps):
        return "no data held"
    failed = steps.count(VendorJob.Step.FAILED)
    if case.state == Case.State.NEW:
        ready = sum(step in PROGRESS_READY for step in steps)
        label = f"{ready}/{len(steps)} ready"
    else:
        label = f"{sum(step in PROGRESS_DONE for step in steps)}/{len(steps)} done"
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
