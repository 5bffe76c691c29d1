"""Every write to a case goes through here: the admin, the commands and the tasks call these.

Transitions lock the case row (``select_for_update``) so two Approve clicks, a worker and a
command can never interleave, check the transition's permission on the server whatever the
path, save, and append the audit event in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone
from django_fsm import TransitionNotAllowed, can_proceed, has_transition_perm

from . import deadlines
from .models import Archive, Case, CaseEvent, ReferenceCounter

logger = logging.getLogger(__name__)

User = AbstractBaseUser | AnonymousUser

#: The transitions a person may ask for (admin buttons, approve_case command).
USER_TRANSITIONS = ("approve", "reject", "retry")

DEFAULT_JUSTIFICATION = {
    Case.RequestType.ACCESS: "Data subject access request under GDPR Art. 15.",
    Case.RequestType.PORTABILITY: "Data portability request under GDPR Art. 20.",
}

#: Called inside the transaction with the case just opened or approved (or retried): the
#: pipeline registers here, so the lifecycle knows nothing about vendors. A hook may raise
#: TransitionError to refuse, and everything rolls back. See cases.pipeline.connect.
on_case_opened: list[Callable[[Case], None]] = []
on_case_approved: list[Callable[[Case], None]] = []
on_case_rejected: list[Callable[[Case], None]] = []


class TransitionError(Exception):
    """A transition that cannot happen now, with a message for the person who asked."""


def record_event(
    case: Case,
    kind: str,
    message: str,
    *,
    actor: Any = None,
    actor_label: str = "",
    from_state: str = "",
    to_state: str = "",
) -> CaseEvent:
    """Append one entry to the case's audit trail."""
    person = actor if getattr(actor, "is_authenticated", False) else None
    return CaseEvent.objects.create(
        case=case,
        kind=kind,
        message=message[:500],
        actor=person,
        actor_label=actor_label or ("" if person else "system"),
        from_state=from_state,
        to_state=to_state,
    )


def next_reference(year: int) -> str:
    """``DSAR-2026-000123``: numbered per year; the counter row lock serialises creators."""
    with transaction.atomic():
        if not ReferenceCounter.objects.filter(year=year).update(last=F("last") + 1):
            try:
                with transaction.atomic():
                    ReferenceCounter.objects.create(year=year, last=1)
            except IntegrityError:  # another creator made the row first
                ReferenceCounter.objects.filter(year=year).update(last=F("last") + 1)
        number = ReferenceCounter.objects.get(year=year).last
    return f"DSAR-{year}-{number:06d}"


def open_case(case: Case, *, actor: Any = None, actor_label: str = "") -> Case:
    """Validate and store a new request, number it, compute its deadline, start discovery.

    ``case`` is an unsaved instance carrying what the person typed (admin form or command).
    Raises ValidationError with a message per field on bad input; nothing is stored then.
    """
    if case.pk is not None:
        raise ValueError("open_case takes a new, unsaved case")
    if case.received_on is None:
        case.received_on = timezone.localdate()
    case.clean()  # normalise before computing anything from the values
    if not (case.justification or "").strip():
        case.justification = DEFAULT_JUSTIFICATION[Case.RequestType(case.request_type)]
    case.due_on = deadlines.due_date(case.received_on, extended=case.extended)
    case.full_clean(exclude={"reference", "state"})  # state is protected: fsm owns it
    if getattr(actor, "is_authenticated", False):
        case.created_by = actor
    with transaction.atomic():
        case.reference = next_reference(case.received_on.year)
        case.save()
        record_event(
            case,
            CaseEvent.Kind.CREATED,
            f"Request recorded ({case.get_request_type_display()}), due {case.due_on:%d %b %Y}.",
            actor=actor,
            actor_label=actor_label,
            to_state=case.state,
        )
        for hook in on_case_opened:
            hook(case)
    return case


def transition_case(
    case: Case | int,
    name: str,
    *,
    actor: Any = None,
    actor_label: str = "",
    message: str = "",
    **kwargs: Any,
) -> Case:
    """Perform transition ``name`` on the case, checking ``actor``'s permission on the server.

    With an ``actor`` (a person: admin, command), only USER_TRANSITIONS are possible and the
    transition's declared permission is checked. Without one, the caller is the pipeline.
    Raises PermissionDenied, TransitionError or ValidationError; on any error nothing changes.
    """
    pk = case.pk if isinstance(case, Case) else case
    person = actor is not None
    if person and name not in USER_TRANSITIONS:
        raise PermissionDenied(f"'{name}' is not something a person can do to a case.")
    with transaction.atomic():
        locked = Case.objects.select_for_update().get(pk=pk)
        method = getattr(locked, name)
        if person and not may_transition(locked, name, actor):
            raise PermissionDenied(f"You do not have permission to {name} cases.")
        if not can_proceed(method):
            raise TransitionError(
                f"Case {locked.reference} is {locked.get_state_display().lower()}: "
                f"it cannot be {_past(name)} now."
            )
        if person and not has_transition_perm(method, actor):  # django-fsm's own check, too
            raise PermissionDenied(f"You do not have permission to {name} cases.")
        source = locked.state
        try:
            if person:
                method(by=actor if actor.is_authenticated else None, **kwargs)
            else:
                method(**kwargs)
        except TransitionNotAllowed as exc:
            raise TransitionError(str(exc)) from None
        except Exception as exc:
            if person or locked.state == source:
                raise
            # django-fsm moved the case to the transition's on_error state in memory only:
            # persist it, with the reason, instead of losing it in the rollback.
            locked.failure_reason = f"Could not {name.replace('_', ' ')}: {exc}"[:1000]
            message = f"Failed while trying to {name.replace('_', ' ')}: {exc}"
        locked.save()
        record_event(
            locked,
            CaseEvent.Kind.TRANSITION,
            message or _default_message(locked, name, kwargs),
            actor=actor,
            actor_label=actor_label,
            from_state=source,
            to_state=locked.state,
        )
        if name in ("approve", "retry"):
            for hook in on_case_approved:
                hook(locked)
        elif name == "reject":
            for hook in on_case_rejected:
                hook(locked)
    logger.info("Case %s: %s (%s → %s)", locked.reference, name, source, locked.state)
    return locked


def may_transition(case: Case, name: str, user: Any) -> bool:
    """Whether ``user`` holds the permission declared on transition ``name``, whatever the state.

    django-fsm's ``has_transition_perm`` also answers False when the state forbids the
    transition; separating the two lets us say "not allowed" apart from "not possible now".
    """
    if name not in USER_TRANSITIONS or not getattr(user, "is_active", False):
        return False
    transitions = getattr(type(case), name)._django_fsm.transitions.values()
    return all(t.has_perm(case, user) for t in transitions)


def approve_case(case: Case | int, *, actor: Any, actor_label: str = "") -> Case:
    return transition_case(case, "approve", actor=actor, actor_label=actor_label)


def reject_case(case: Case | int, *, actor: Any, reason: str, actor_label: str = "") -> Case:
    return transition_case(case, "reject", actor=actor, actor_label=actor_label, reason=reason)


def retry_case(case: Case | int, *, actor: Any, actor_label: str = "") -> Case:
    return transition_case(case, "retry", actor=actor, actor_label=actor_label)


def extend_deadline(case: Case | int, *, actor: Any, reason: str) -> Case:
    """Extend to three months from receipt (Art. 12(3)), with the reason told to the subject."""
    if not reason.strip():
        raise ValidationError({"reason": "Give the reason for the extension."})
    pk = case.pk if isinstance(case, Case) else case
    with transaction.atomic():
        locked = Case.objects.select_for_update().get(pk=pk)
        if not actor.has_perm("cases.approve_case"):
            raise PermissionDenied("You do not have permission to extend deadlines.")
        if locked.extended:
            raise TransitionError(f"Case {locked.reference} is already extended.")
        if not locked.is_open:
            raise TransitionError(f"Case {locked.reference} is closed.")
        before = locked.due_on
        locked.extended = True
        locked.extension_reason = reason.strip()
        locked.due_on = deadlines.due_date(locked.received_on, extended=True)
        Case.objects.filter(pk=pk).update(
            extended=True, extension_reason=locked.extension_reason, due_on=locked.due_on
        )
        record_event(
            locked,
            CaseEvent.Kind.DEADLINE,
            f"Deadline extended from {before:%d %b %Y} to {locked.due_on:%d %b %Y}: "
            f"{locked.extension_reason}",
            actor=actor,
        )
    return locked


def _past(name: str) -> str:
    return {"approve": "approved", "reject": "rejected", "retry": "retried"}.get(name, name)


def _default_message(case: Case, name: str, kwargs: dict[str, Any]) -> str:
    if name == "reject":
        return f"Rejected: {case.rejection_reason}"
    if name == "fail":
        return f"Failed: {case.failure_reason}"
    return {
        "approve": "Approved for export.",
        "retry": "Retry requested: failed vendor exports resume.",
        "start_export": "The vendors are exporting the subject's data.",
        "finish": "Every vendor export is done: the case is finished.",
    }.get(name, name)


def open_archive_for_download(archive: Archive, *, actor: Any) -> Any:
    """Open a stored archive for a person and record who took the personal data, and when."""
    if not actor.has_perm("cases.download_archive"):
        raise PermissionDenied("You do not have permission to download archives.")
    handle = archive.file.open("rb")
    record_event(
        archive.job.case,
        CaseEvent.Kind.ARCHIVE_DOWNLOADED,
        f"Downloaded {archive.filename} ({archive.size} bytes, SHA-256 {archive.sha256}).",
        actor=actor,
    )
    return handle


def delete_archive(archive_id: int, *, reason: str) -> bool:
    """Delete a stored archive's file (the row stays, marked deleted) and record why.

    File first, then the row: a run killed in between finds the file already gone (deleting a
    missing file is a no-op) and finishes the job.
    """
    with transaction.atomic():
        archive = (
            Archive.objects.select_for_update(skip_locked=True)
            .select_related("job__case")
            .filter(pk=archive_id, deleted_at__isnull=True)
            .first()
        )
        if archive is None:
            return False
        if archive.file.name:
            archive.file.storage.delete(archive.file.name)
        archive.deleted_at = timezone.now()
        archive.save(update_fields=["deleted_at"])
        record_event(
            archive.job.case,
            CaseEvent.Kind.ARCHIVE_DELETED,
            f"Deleted {archive.filename} ({archive.size} bytes) after {reason}.",
            actor_label="retention",
        )
    return True
