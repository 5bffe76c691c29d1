"""The case: one data subject request, its lifecycle, and its append-only audit trail."""

from __future__ import annotations

import uuid
from datetime import date

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxLengthValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django_fsm import ConcurrentTransitionMixin, FSMField, transition

from connectors.salesforce_ids import is_valid_salesforce_id, to_18

from .validators import validate_salesforce_id


def _system_only(instance: Case, user: object) -> bool:
    """Transitions driven by the pipeline: no person may trigger them from any UI or command."""
    return False


class Case(ConcurrentTransitionMixin, models.Model):
    """One request from one data subject, from receipt to the archives handed to the DPO."""

    class State(models.TextChoices):
        NEW = "new", "New"
        APPROVED = "approved", "Approved"
        EXPORTING = "exporting", "Exporting"
        FINISHED = "finished", "Finished"
        FAILED = "failed", "Failed"
        REJECTED = "rejected", "Rejected"

    class RequestType(models.TextChoices):
        ACCESS = "access", "Access (Art. 15)"
        PORTABILITY = "portability", "Portability (Art. 20)"

    #: States in which the controller still owes the subject an answer.
    OPEN_STATES = (State.NEW, State.APPROVED, State.EXPORTING, State.FAILED)

    reference = models.CharField(max_length=20, unique=True, editable=False)
    request_type = models.CharField(
        max_length=12, choices=RequestType.choices, default=RequestType.ACCESS
    )
    email = models.EmailField(
        "subject e-mail", max_length=254, help_text="Stored lower-cased; searched exactly."
    )
    first_name = models.CharField(max_length=150, blank=True)
    last_name = models.CharField(max_length=150, blank=True)
    salesforce_id = models.CharField(
        "Salesforce record id",
        max_length=18,
        blank=True,
        validators=[validate_salesforce_id],
        help_text="Optional: the subject's Contact, Lead, User, Account or Individual id.",
    )
    justification = models.TextField(
        max_length=2000,
        blank=True,
        validators=[MaxLengthValidator(2000)],
        help_text="Sent to the vendors with the export request. Empty: the standard text.",
    )
    received_on = models.DateField(default=timezone.localdate)
    due_on = models.DateField(
        editable=False, help_text="GDPR Art. 12(3): one month, or three when extended."
    )
    extended = models.BooleanField(default=False, editable=False)
    extension_reason = models.TextField(blank=True, editable=False)

    state = FSMField(
        default=State.NEW, choices=State.choices, protected=True, max_length=12, db_index=True
    )
    rejection_reason = models.TextField(blank=True, editable=False)
    failure_reason = models.TextField(blank=True, editable=False)

    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    approved_at = models.DateTimeField(null=True, blank=True, editable=False)
    closed_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-id",)
        permissions = [
            ("approve_case", "Can approve, reject and retry cases"),
            ("download_archive", "Can download exported personal data"),
        ]
        indexes = [
            # Serves exact and prefix (startswith) e-mail lookups; opclasses only on PostgreSQL.
            models.Index(
                fields=["email"], name="case_email_idx", opclasses=["varchar_pattern_ops"]
            ),
            models.Index(fields=["due_on"], name="case_open_due_idx", condition=Q(closed_at=None)),
            models.Index(fields=["request_type", "-id"], name="case_type_idx"),
            # Prefix search on names (istartswith) uses these on PostgreSQL; see migration 0002.
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(email=models.functions.Lower("email")), name="case_email_lowercase"
            ),
        ]

    def __str__(self) -> str:
        return self.reference or "new case"

    def clean(self) -> None:
        """Normalise what a person typed; the admin form, commands and services all run this."""
        self.email = (self.email or "").strip().lower()
        self.first_name = (self.first_name or "").strip()
        self.last_name = (self.last_name or "").strip()
        self.salesforce_id = (self.salesforce_id or "").strip()
        if self.salesforce_id and is_valid_salesforce_id(self.salesforce_id):
            self.salesforce_id = to_18(self.salesforce_id)
        if self.received_on and self.received_on > timezone.localdate():
            raise ValidationError({"received_on": "The receipt date cannot be in the future."})

    # --- Lifecycle (declared once; services.transition_case is the only caller) ---------------

    @transition(
        field=state,
        source=State.NEW,
        target=State.APPROVED,
        permission="cases.approve_case",
        custom={
            "label": "Approve",
            "admin": True,
            "help_text": "Start the export at every vendor.",
        },
    )
    def approve(self, *, by: object = None) -> None:
        self.approved_by = by  # type: ignore[assignment]
        self.approved_at = timezone.now()

    @transition(
        field=state,
        source=State.NEW,
        target=State.REJECTED,
        permission="cases.approve_case",
        custom={"label": "Reject", "admin": True, "help_text": "Close the request without export."},
    )
    def reject(self, *, by: object = None, reason: str = "") -> None:
        if not reason.strip():
            raise ValidationError({"reason": "A reason is required to reject a request."})
        self.rejection_reason = reason.strip()
        self.closed_at = timezone.now()

    @transition(
        field=state,
        source=State.FAILED,
        target=State.APPROVED,
        permission="cases.approve_case",
        custom={"label": "Retry", "admin": True, "help_text": "Resume the failed vendor exports."},
    )
    def retry(self, *, by: object = None) -> None:
        self.failure_reason = ""

    @transition(
        field=state,
        source=State.APPROVED,
        target=State.EXPORTING,
        permission=_system_only,
        on_error=State.FAILED,
        custom={"admin": False},
    )
    def start_export(self) -> None:
        """The vendors accepted the approved export; the pipeline now waits for archives."""

    @transition(
        field=state,
        source=State.EXPORTING,
        target=State.FINISHED,
        permission=_system_only,
        on_error=State.FAILED,
        custom={"admin": False},
    )
    def finish(self) -> None:
        self.closed_at = timezone.now()

    @transition(
        field=state,
        source=[State.APPROVED, State.EXPORTING],
        target=State.FAILED,
        permission=_system_only,
        custom={"admin": False},
    )
    def fail(self, *, reason: str = "") -> None:
        self.failure_reason = reason or "A vendor export failed."

    # --- Deadline -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self.state in self.OPEN_STATES

    def days_left(self, today: date | None = None) -> int:
        return (self.due_on - (today or timezone.localdate())).days

    def overdue_on(self, today: date | None = None) -> bool:
        return self.is_open and self.days_left(today) < 0

    def due_soon_on(self, today: date | None = None) -> bool:
        return self.is_open and 0 <= self.days_left(today) <= settings.DSAR_DUE_SOON_DAYS

    @property
    def is_overdue(self) -> bool:
        return self.overdue_on()

    @property
    def is_due_soon(self) -> bool:
        return self.due_soon_on()


class ReferenceCounter(models.Model):
    """Last reference number handed out per year (``DSAR-2026-000123``)."""

    year = models.PositiveIntegerField(primary_key=True)
    last = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.year}: {self.last}"


class CaseEventQuerySet(models.QuerySet["CaseEvent"]):
    def update(self, **kwargs: object) -> int:
        raise TypeError("Case events are append-only.")

    def delete(self) -> tuple[int, dict[str, int]]:
        raise TypeError("Case events are append-only.")


class CaseEvent(models.Model):
    """One entry of a case's audit trail. Append-only: never updated, never deleted."""

    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        TRANSITION = "transition", "State change"
        VENDOR = "vendor", "Vendor step"
        ARCHIVE_STORED = "archive_stored", "Archive stored"
        ARCHIVE_DOWNLOADED = "archive_downloaded", "Archive downloaded"
        ARCHIVE_DELETED = "archive_deleted", "Archive deleted"
        DEADLINE = "deadline", "Deadline"
        NOTE = "note", "Note"

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    #: Who acted when no person did: "pipeline", "qualifio callback", "command"…
    actor_label = models.CharField(max_length=60, blank=True)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    from_state = models.CharField(max_length=12, blank=True)
    to_state = models.CharField(max_length=12, blank=True)
    message = models.CharField(max_length=500)

    objects = CaseEventQuerySet.as_manager()

    class Meta:
        ordering = ("at", "id")
        indexes = [models.Index(fields=["case", "at"], name="event_case_at_idx")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M} {self.get_kind_display()}: {self.message}"

    def save(self, *args: object, **kwargs: object) -> None:
        if self.pk is not None:
            raise TypeError("Case events are append-only.")
        super().save(*args, **kwargs)  # type: ignore[arg-type]

    def delete(self, *args: object, **kwargs: object) -> tuple[int, dict[str, int]]:
        raise TypeError("Case events are append-only.")

    @property
    def actor_display(self) -> str:
        if self.actor_id:
            return self.actor.get_username()
        return self.actor_label or "system"


class VendorJob(models.Model):
    """The export of one case at one vendor account; the pipeline's unit of work.

    Everything needed to resume after a crash is here: the step, the connector's own state,
    when to try next (``next_attempt_at``, read by the beat-driven sync) and a lease so that
    two workers never run the same job at once.
    """

    class Step(models.TextChoices):
        DISCOVER = "discover", "Looking for the subject"
        PREPARE = "prepare", "Preparing the export"
        AWAITING_APPROVAL = "awaiting_approval", "Waiting for approval"
        START = "start", "Starting the export"
        RUNNING = "running", "Vendor exporting"
        DOWNLOAD = "download", "Downloading"
        DONE = "done", "Done"
        NO_DATA = "no_data", "No data held"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled (request rejected)"

    #: Steps the pipeline works on by itself (each has a next_attempt_at).
    ACTIVE_STEPS = (Step.DISCOVER, Step.PREPARE, Step.START, Step.RUNNING, Step.DOWNLOAD)
    SUCCESS_STEPS = (Step.DONE, Step.NO_DATA)

    case = models.ForeignKey(Case, on_delete=models.PROTECT, related_name="jobs")
    account = models.ForeignKey(
        "connectors.VendorAccount", on_delete=models.PROTECT, related_name="jobs"
    )
    step = models.CharField(max_length=20, choices=Step.choices, default=Step.DISCOVER)
    matches = models.JSONField(default=list, blank=True)
    state = models.JSONField(default=dict, blank=True)
    #: The vendor's id for the export (Qualifio rule id, Salesforce policy file id): searchable.
    external_ref = models.CharField(max_length=64, blank=True)
    vendor_status = models.CharField(max_length=300, blank=True)
    last_error = models.TextField(blank=True)
    error_count = models.PositiveIntegerField(default=0)
    poll_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    #: Public half of the callback URL; its token is an HMAC of it (see cases.callbacks).
    callback_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    #: Archives the vendor reported ready, as ArchiveRef dicts, until each is stored.
    archive_refs = models.JSONField(default=list, blank=True)
    #: Where a Retry resumes a failed job.
    resume_step = models.CharField(max_length=20, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    settled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(fields=["case", "account"], name="one_job_per_account"),
        ]
        indexes = [
            # The sync tick reads only in-flight jobs: this index never sees history.
            models.Index(
                fields=["next_attempt_at"],
                name="job_due_idx",
                condition=Q(step__in=["discover", "prepare", "start", "running", "download"]),
            ),
            models.Index(
                fields=["external_ref"], name="job_external_ref_idx", condition=~Q(external_ref="")
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account} for {self.case}"

    @property
    def is_active(self) -> bool:
        return self.step in self.ACTIVE_STEPS


def archive_path(archive: Archive, filename: str) -> str:
    return f"archives/{archive.job.case.reference}/{filename}"


class Archive(models.Model):
    """One file of personal data a vendor exported, stored privately with its checksum."""

    job = models.ForeignKey(VendorJob, on_delete=models.PROTECT, related_name="archives")
    key = models.CharField(max_length=100, help_text="The vendor's id for this file.")
    file = models.FileField(upload_to=archive_path, max_length=300)
    filename = models.CharField(max_length=200)
    content_type = models.CharField(max_length=100)
    size = models.BigIntegerField()
    sha256 = models.CharField("SHA-256", max_length=64)
    stored_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("id",)
        constraints = [models.UniqueConstraint(fields=["job", "key"], name="one_archive_per_key")]
        indexes = [
            # Retention reads only archives still stored.
            models.Index(fields=["job"], name="archive_stored_idx", condition=Q(deleted_at=None)),
        ]

    def __str__(self) -> str:
        return self.filename
