"""The export pipeline: moves every vendor job of a case through its steps, crash-safe.

The database is the only source of truth. A job's ``step``, the connector's ``state`` and
``next_attempt_at`` say what to do next and when; Celery messages are mere wake-up calls.
``advance(job_id)`` can therefore run any number of times, from a task, the beat-driven
sync or a vendor callback: it takes a short lease on the job, performs what the step
requires, and writes the outcome. A worker killed at any line leaves either the previous
step (repeated on resume, which every connector makes harmless through its checkpoints) or
the next one; the lease expires and the sync picks the job up again.

    discover → prepare → awaiting_approval ─(DPO approves)→ start → running → download → done
        └→ no_data (nothing held)           any step ─(permanent error)→ failed ─(Retry)→ …

Nothing here names a vendor: connectors are built by ``connectors.registry``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import random
import threading
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import get_valid_filename

from connectors import registry
from connectors.base import (
    ArchiveRef,
    Connector,
    ConnectorError,
    Match,
    Phase,
    RateLimitedError,
    Subject,
)
from connectors.models import VendorAccount, VendorIdentity

from . import callbacks, services
from .models import Archive, Case, CaseEvent, VendorJob

logger = logging.getLogger(__name__)

Step = VendorJob.Step
#: Steps before the vendor starts exporting; a case stays ``approved`` while any job is here.
PRE_START_STEPS: tuple[str, ...] = (
    Step.DISCOVER,
    Step.PREPARE,
    Step.AWAITING_APPROVAL,
    Step.START,
)
#: Steps that may only run once the DPO approved the case.
APPROVED_ONLY_STEPS = (Step.START, Step.RUNNING, Step.DOWNLOAD)
JOB_FIELDS = (
    "step",
    "matches",
    "state",
    "external_ref",
    "vendor_status",
    "last_error",
    "error_count",
    "poll_count",
    "next_attempt_at",
    "lease_until",
    "archive_refs",
    "resume_step",
    "started_at",
    "settled_at",
    "updated_at",
)


def connect() -> None:
    """Register with the case lifecycle (called from CasesConfig.ready)."""
    if case_opened not in services.on_case_opened:
        services.on_case_opened.append(case_opened)
        services.on_case_approved.append(case_approved)
        services.on_case_rejected.append(case_rejected)


# --- Lifecycle hooks (inside the case transaction) ---------------------------------------------


def case_opened(case: Case) -> None:
    """Fan the new case out to every active vendor account and start discovery."""
    jobs = _create_missing_jobs(case)
    if not jobs:
        services.record_event(
            case,
            CaseEvent.Kind.NOTE,
            "No active vendor account: nothing will be searched until one is configured.",
            actor_label="pipeline",
        )
    _enqueue(jobs)


def case_approved(case: Case) -> None:
    """Approval (or Retry): release waiting jobs to start, resume failed ones.

    Jobs in flight are left alone (a worker may hold them; its ``_release`` reads the case
    state under the case lock we hold now). Only idle rows are touched, with targeted updates.
    """
    _create_missing_jobs(case)
    jobs = VendorJob.objects.filter(case=case)
    if not jobs.exists():
        raise services.TransitionError(
            "No active vendor account is configured: there is nothing to export. "
            "Add one under Vendor connectors first."
        )
    now = timezone.now()
    jobs.filter(step=Step.AWAITING_APPROVAL).update(step=Step.START, next_attempt_at=now)
    for job in jobs.filter(step=Step.FAILED):
        fresh_export = job.resume_step == Step.PREPARE  # the vendor's export itself failed
        VendorJob.objects.filter(pk=job.pk, step=Step.FAILED).update(
            step=job.resume_step or Step.DISCOVER,
            state={} if fresh_export else job.state,
            archive_refs=[] if fresh_export else job.archive_refs,
            # A stuck export gets a new waiting period from the Retry on.
            started_at=now if job.resume_step == Step.RUNNING else job.started_at,
            error_count=0,
            last_error="",
            settled_at=None,
            next_attempt_at=now,
            updated_at=now,
        )
    _enqueue(list(jobs.filter(step__in=VendorJob.ACTIVE_STEPS, lease_until__isnull=True)))
    # Every job may already be settled (all "no data held"): the case can finish right away.
    transaction.on_commit(lambda: settle_case(case.pk))


def case_rejected(case: Case) -> None:
    """Nothing more is asked of the vendors for a rejected request.

    Idle jobs are cancelled here; one a worker holds right now is cancelled by its own
    ``_release``, which reads the case's state under the same lock.
    """
    VendorJob.objects.filter(case=case, lease_until__isnull=True).exclude(
        step__in=(*VendorJob.SUCCESS_STEPS, Step.FAILED)
    ).update(step=Step.CANCELLED, next_attempt_at=None, settled_at=timezone.now())


def _create_missing_jobs(case: Case) -> list[VendorJob]:
    have = set(case.jobs.values_list("account_id", flat=True)) if case.pk else set()
    now = timezone.now()
    jobs = [
        VendorJob(case=case, account=account, step=Step.DISCOVER, next_attempt_at=now)
        for account in VendorAccount.objects.filter(is_active=True).exclude(pk__in=have)
    ]
    for job in jobs:
        job.save()
    return jobs


def _enqueue(jobs: list[VendorJob]) -> None:
    from .tasks import advance_job

    for job in jobs:
        advance_job.delay_on_commit(job.pk)


# --- The sync tick (Celery beat) ------------------------------------------------------------


def due_job_ids(limit: int = 1000) -> list[int]:
    """In-flight jobs whose next attempt is due and that nobody holds (partial index scan)."""
    now = timezone.now()
    return list(
        VendorJob.objects.filter(step__in=VendorJob.ACTIVE_STEPS, next_attempt_at__lte=now)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )


def sync_tick() -> int:
    """Wake every due job. Cost grows with in-flight work, never with finished history.

    Each woken job is *claimed*: its ``next_attempt_at`` moves a short window ahead and the
    message carries that value, which ``_acquire`` accepts. Until the window passes, later
    ticks leave the job alone instead of queueing duplicate wake-ups behind a busy worker;
    if the message is lost, the job is simply due again after the window.
    """
    from .tasks import advance_job

    ids = due_job_ids(limit=settings.DSAR_SYNC_BATCH)
    if ids:
        now = timezone.now()
        claim = now + timedelta(seconds=max(30, 2 * settings.DSAR_SYNC_INTERVAL))
        VendorJob.objects.filter(pk__in=ids, next_attempt_at__lte=now).update(next_attempt_at=claim)
        for job_id in ids:
            advance_job.delay(job_id, claim.isoformat())
    for case_id in unsettled_case_ids():
        settle_case(case_id)
    return len(ids)


def wake(job: VendorJob) -> bool:
    """A vendor says the job has news (callback): poll it now instead of at its next turn."""
    woken = VendorJob.objects.filter(pk=job.pk, step=Step.RUNNING).update(
        next_attempt_at=timezone.now()
    )
    if woken:
        _enqueue([job])
    return bool(woken)


# --- Running one job ------------------------------------------------------------------------


def advance(job_id: int, claim: datetime | None = None) -> None:
    """Run the job's due steps. Safe to call at any time, any number of times, concurrently.

    ``claim`` is the ``next_attempt_at`` a sync tick set when it sent this wake-up. Steps that
    are due at once run one after the other under the same lease (see ``_release``).
    """
    job = _acquire(job_id, claim)
    for _ in range(len(Step)):  # each pass runs one step; never loops forever
        if job is None:
            return
        step_before = job.step
        try:
            _run_step(job)
        except ConnectorError as exc:
            _record_error(job, exc.message, retryable=exc.retryable, retry_after=_retry_after(exc))
        except Exception as exc:  # a bug or an outage of our own: keep the job, retry later
            logger.exception("Job %s: unexpected error in step %s", job.pk, job.step)
            _record_error(
                job, f"Internal error during {job.step} ({type(exc).__name__}); see worker logs."
            )
        finally:
            keep_lease = _release(job)
        if job.step != step_before and job.step not in PRE_START_STEPS:
            settle_case(job.case_id)  # before that, the case cannot move: a job has not started
        if not keep_lease:
            return


def _acquire(job_id: int, claim: datetime | None = None) -> VendorJob | None:
    """Lease the job if it is due, in flight, allowed by the case's state and not held."""
    now = timezone.now()
    with transaction.atomic():
        job = (
            # Lock the job row only: the joined case and account rows are shared by many jobs.
            VendorJob.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("case", "account")
            .filter(pk=job_id)
            .first()
        )
        if job is None or job.step not in VendorJob.ACTIVE_STEPS:
            return None
        if job.lease_until and job.lease_until > now:
            return None
        if job.case.state == Case.State.REJECTED:
            VendorJob.objects.filter(pk=job.pk).update(
                step=Step.CANCELLED, next_attempt_at=None, settled_at=now
            )
            return None
        if job.next_attempt_at and job.next_attempt_at > now and job.next_attempt_at != claim:
            return None
        if job.step in APPROVED_ONLY_STEPS and job.case.state not in (
            Case.State.APPROVED,
            Case.State.EXPORTING,
        ):
            return None  # never start, poll or download before the DPO's approval
        job.lease_until = now + timedelta(seconds=settings.DSAR_JOB_LEASE_SECONDS)
        VendorJob.objects.filter(pk=job.pk).update(lease_until=job.lease_until)
    return job


def _release(job: VendorJob) -> bool:
    """Write the step's outcome and give up the lease, under the case's row lock.

    Approval and rejection take the same lock (``services.transition_case``), so whichever
    comes second sees what the other wrote: a job that has just finished preparing goes
    straight to START if the case was approved meanwhile, or is cancelled if it was rejected.

    When the next step is due at once and the case allows it, the lease is renewed instead
    and ``True`` returned: ``advance`` goes on without taking the job again (four round trips
    fewer per step), with the case as it is now under this lock.
    """
    with transaction.atomic():
        case = Case.objects.select_for_update().get(pk=job.case_id)
        if case.state == Case.State.REJECTED and job.step not in (
            *VendorJob.SUCCESS_STEPS,
            Step.FAILED,
        ):
            _settle(job, Step.CANCELLED)
        elif job.step == Step.AWAITING_APPROVAL and case.state in (
            Case.State.APPROVED,
            Case.State.EXPORTING,
        ):
            _goto(job, Step.START)
        now = timezone.now()
        keep = (
            job.is_active
            and job.next_attempt_at is not None
            and job.next_attempt_at <= now
            and (
                job.step not in APPROVED_ONLY_STEPS
                or case.state in (Case.State.APPROVED, Case.State.EXPORTING)
            )
        )
        job.lease_until = now + timedelta(seconds=settings.DSAR_JOB_LEASE_SECONDS) if keep else None
        job.updated_at = now
        VendorJob.objects.filter(pk=job.pk).update(**{f: getattr(job, f) for f in JOB_FIELDS})
    if keep:
        job.case = case
    return keep


def _run_step(job: VendorJob) -> None:
    connector = registry.connector_for(job.account)
    subject = subject_of(job.case)
    matches = [Match.from_dict(m) for m in job.matches]
    handler = {
        Step.DISCOVER: _discover,
        Step.PREPARE: _prepare,
        Step.START: _start,
        Step.RUNNING: _poll,
        Step.DOWNLOAD: _download,
    }[Step(job.step)]
    handler(job, connector, subject, matches)
    if job.step != Step.FAILED:  # the vendor itself may have reported a failure
        job.error_count, job.last_error = 0, ""
    _remember_usage(job)


def _discover(job: VendorJob, connector: Connector, subject: Subject, _: list[Match]) -> None:
    found = connector.discover(subject)
    job.matches = [m.to_dict() for m in found]
    if not found:
        _settle(job, Step.NO_DATA)
        _event(job, "no data held for the subject.")
        return
    _event(job, f"found {len(found)} record(s) for the subject: " + _summarise(found))
    _goto(job, Step.PREPARE)


def _prepare(job: VendorJob, connector: Connector, subject: Subject, matches: list[Match]) -> None:
    note = connector.prepare(
        subject,
        matches,
        job.state,
        callback_url=callbacks.url_for(job),
        checkpoint=_checkpointer(job),
    )
    job.external_ref = connector.external_reference(job.state)[:64]
    if note:
        _event(job, note)
    # _release moves it on to START instead if the case is approved by then.
    job.step, job.next_attempt_at = Step.AWAITING_APPROVAL, None


def _start(job: VendorJob, connector: Connector, subject: Subject, matches: list[Match]) -> None:
    note = connector.start(
        subject,
        matches,
        job.state,
        approver_id=_approver_id(job),
        checkpoint=_checkpointer(job),
    )
    job.external_ref = connector.external_reference(job.state)[:64] or job.external_ref
    job.started_at = timezone.now()
    job.poll_count = 0
    _event(job, note or "export started.")
    _goto(job, Step.RUNNING, delay=poll_delay(0))


def _poll(job: VendorJob, connector: Connector, subject: Subject, matches: list[Match]) -> None:
    running_for = timezone.now() - (job.started_at or job.created_at)
    if running_for > timedelta(hours=settings.DSAR_STUCK_AFTER_HOURS):
        hours = running_for.total_seconds() / 3600
        _fail(
            job,
            f"stuck: the vendor has not finished the export after {hours:.0f} hours "
            f"(last status: {job.vendor_status or 'unknown'}). Retry resumes waiting for it.",
            resume=Step.RUNNING,
        )
        return
    result = connector.poll(job.state, checkpoint=_checkpointer(job))
    job.poll_count += 1
    job.vendor_status = result.detail[:300]
    if result.phase == Phase.READY:
        job.archive_refs = [asdict(ref) for ref in result.archives]
        _event(job, f"export ready ({len(result.archives)} archive(s)): {result.detail}")
        _goto(job, Step.DOWNLOAD)
    elif result.phase == Phase.FAILED:
        _fail(job, f"the vendor reported the export failed: {result.detail}", resume=Step.PREPARE)
    else:
        job.next_attempt_at = timezone.now() + timedelta(seconds=poll_delay(job.poll_count))


def _download(job: VendorJob, connector: Connector, subject: Subject, matches: list[Match]) -> None:
    stored = set(job.archives.values_list("key", flat=True))
    for ref in (ArchiveRef(**data) for data in job.archive_refs):
        if ref.key not in stored:
            archive = store_archive(job, connector, ref)
            _event(
                job,
                f"stored {archive.filename} ({archive.size} bytes, SHA-256 {archive.sha256}).",
                kind=CaseEvent.Kind.ARCHIVE_STORED,
            )
    _settle(job, Step.DONE)


# --- Archives -------------------------------------------------------------------------------


class _HashingSink:
    """Writes to a file while hashing and counting, and renews the job's lease as it goes.

    SHA-256 runs on a helper thread (``_BackgroundSHA256``): on loopback, hashing costs more
    CPU than receiving and writing together, and overlapping them took a 1 GiB download from
    674 to 907 MiB/s (docs/benchmarks.md). Writing and the lease stay in the caller's thread,
    which owns the file and the database connection.
    """

    def __init__(self, fh: BinaryIO, job: VendorJob) -> None:
        self.fh, self.job = fh, job
        self.sha256 = _BackgroundSHA256()
        self.size = 0
        self._renewed_at = timezone.now()

    def __enter__(self) -> _HashingSink:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sha256.close()

    def write(self, chunk: bytes) -> int:
        self.fh.write(chunk)
        self.sha256.update(chunk)
        self.size += len(chunk)
        now = timezone.now()
        if (now - self._renewed_at).total_seconds() > settings.DSAR_JOB_LEASE_SECONDS / 3:
            self.job.lease_until = now + timedelta(seconds=settings.DSAR_JOB_LEASE_SECONDS)
            VendorJob.objects.filter(pk=self.job.pk).update(lease_until=self.job.lease_until)
            self._renewed_at = now
        return len(chunk)


class _BackgroundSHA256:
    """SHA-256 of a stream, computed on its own thread (hashlib releases the GIL).

    The first chunk is hashed in the caller's thread: most archives are one chunk, and a
    thread for them cost more than it saved. From the second chunk on, a thread hashes while
    the caller receives and writes. At most ``BACKLOG`` chunks wait, so memory stays bounded;
    each is an immutable copy, so the caller may reuse its buffer. ``hexdigest`` waits for
    the backlog.
    """

    BACKLOG = 4

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._backlog: queue.Queue[bytes | None] = queue.Queue(maxsize=self.BACKLOG)
        self._thread: threading.Thread | None = None
        self._chunks = 0
        self._final = False

    def _run(self) -> None:
        while (chunk := self._backlog.get()) is not None:
            self._digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        if self._final:
            raise RuntimeError("the archive's SHA-256 is already final")
        self._chunks += 1
        if self._chunks == 1:
            self._digest.update(chunk)
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="archive-sha256", daemon=True)
            self._thread.start()
        self._backlog.put(chunk if isinstance(chunk, bytes) else bytes(chunk))

    def close(self) -> None:
        """Let the thread finish (also when the download failed half-way)."""
        self._final = True
        if self._thread is not None and self._thread.is_alive():
            self._backlog.put(None)
            self._thread.join()

    def hexdigest(self) -> str:
        self.close()
        return self._digest.hexdigest()


class _MovableFile(File):
    """Lets FileSystemStorage move the finished temporary file instead of copying it."""

    def temporary_file_path(self) -> str:
        return self.name


def store_archive(job: VendorJob, connector: Connector, ref: ArchiveRef) -> Archive:
    """Stream one archive to private storage; only a complete, checksummed file is kept."""
    filename = _safe_filename(ref.filename, fallback=f"archive-{job.pk}.zip")
    final_name = f"archives/{get_valid_filename(job.case.reference)}/{job.pk}-{filename}"
    tmp_dir = Path(settings.ARCHIVE_ROOT) / "incoming"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp_path = tmp_dir / f"job-{job.pk}-{hashlib.sha256(ref.key.encode()).hexdigest()[:16]}.part"
    try:
        # A rerun after a crash truncates the old partial file.
        with open(tmp_path, "wb") as fh, _HashingSink(fh, job) as sink:
            info = connector.download(job.state, ref, sink)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        if default_storage.exists(final_name):  # left by a run killed before its row was written
            default_storage.delete(final_name)
        with open(tmp_path, "rb") as fh:
            name = default_storage.save(final_name, _MovableFile(fh, name=str(tmp_path)))
        return Archive.objects.create(
            job=job,
            key=ref.key,
            file=name,
            filename=filename,
            content_type=(info.content_type or "application/octet-stream")[:100],
            size=sink.size,
            sha256=sink.sha256.hexdigest(),
        )
    finally:
        tmp_path.unlink(missing_ok=True)


# --- Settling the case ----------------------------------------------------------------------


def settle_case(case_id: int) -> None:
    """Move the case along once its jobs allow it: exporting, then finished or failed.

    Called after every step, once its job row is committed, so the last job to settle always
    sees every other job's final step. The sync tick calls it too, for a worker that died
    between the two.
    """
    state = Case.objects.values_list("state", flat=True).get(pk=case_id)
    if state not in (Case.State.APPROVED, Case.State.EXPORTING):
        return
    jobs = list(VendorJob.objects.filter(case_id=case_id).select_related("account"))
    steps = {job.step for job in jobs}
    if not steps:
        return
    if state == Case.State.APPROVED:
        if steps & set(PRE_START_STEPS):
            return  # some vendor has not started yet
        if steps != {Step.FAILED}:
            _system_transition(case_id, "start_export")
            state = Case.State.EXPORTING
    if steps & set(VendorJob.ACTIVE_STEPS):
        return
    failed = [job for job in jobs if job.step == Step.FAILED]
    if failed:
        reason = "; ".join(f"{job.account.name}: {job.last_error}" for job in failed)
        _system_transition(case_id, "fail", reason=reason[:1000])
    elif state == Case.State.EXPORTING:
        _system_transition(case_id, "finish")


def unsettled_case_ids(limit: int = 1000) -> list[int]:
    """Approved or exporting cases none of whose jobs is still in flight (should be rare).

    Two index lookups sized by the cases in flight, and the difference in Python: an
    ``exclude(pk__in=<busy jobs>)`` anti-join scanned the whole job table on every tick
    (206 ms at 1.5 M jobs, docs/benchmarks.md).
    """
    open_ids = list(
        Case.objects.filter(state__in=(Case.State.APPROVED, Case.State.EXPORTING))
        .order_by()
        .values_list("pk", flat=True)
    )
    if not open_ids:
        return []
    busy = set(
        VendorJob.objects.filter(
            case_id__in=open_ids, step__in=PRE_START_STEPS + VendorJob.ACTIVE_STEPS
        ).values_list("case_id", flat=True)
    )
    return [pk for pk in open_ids if pk not in busy][:limit]


def _system_transition(case_id: int, name: str, **kwargs: Any) -> None:
    # Another worker may have moved the case first: its state already says what we wanted.
    with contextlib.suppress(services.TransitionError):
        services.transition_case(case_id, name, actor_label="pipeline", **kwargs)


# --- Helpers --------------------------------------------------------------------------------


def _safe_filename(name: str, *, fallback: str) -> str:
    """A vendor-chosen name reduced to one harmless path component (never ``..`` or a path)."""
    try:
        return get_valid_filename(Path(name).name)[:150]
    except SuspiciousFileOperation:
        return fallback


def subject_of(case: Case) -> Subject:
    return Subject(
        reference=case.reference,
        email=case.email,
        first_name=case.first_name,
        last_name=case.last_name,
        salesforce_id=case.salesforce_id,
        justification=case.justification,
    )


def poll_delay(polls: int) -> float:
    """Seconds until the next status poll: quick at first, backing off for long exports."""
    base = settings.DSAR_POLL_INTERVAL
    return min(base * 2 ** max(0, polls - 2), settings.DSAR_POLL_MAX_INTERVAL)


def error_delay(errors: int) -> float:
    """Backoff with jitter after a retryable vendor error: 30 s, 1 min, 2 min… up to 1 h."""
    delay = min(settings.DSAR_ERROR_BACKOFF * 2 ** (errors - 1), 3600)
    return delay * random.uniform(0.8, 1.2)


def _retry_after(exc: ConnectorError) -> float | None:
    return exc.retry_after if isinstance(exc, RateLimitedError) else None


def _record_error(
    job: VendorJob, message: str, *, retryable: bool = True, retry_after: float | None = None
) -> None:
    job.error_count += 1
    job.last_error = message[:2000]
    if retryable and job.error_count < settings.DSAR_MAX_VENDOR_ERRORS:
        delay = retry_after if retry_after is not None else error_delay(job.error_count)
        job.next_attempt_at = timezone.now() + timedelta(seconds=delay)
        _event(job, f"{message} Retrying in {int(delay)} s (attempt {job.error_count}).")
    else:
        if retryable:
            message = f"gave up after {job.error_count} attempts: {message}"
        _fail(job, message, resume=Step(job.step))


def _fail(job: VendorJob, message: str, *, resume: str) -> None:
    job.last_error = message[:2000]
    job.resume_step = resume
    _settle(job, Step.FAILED)
    _event(job, f"failed: {message}")


def _settle(job: VendorJob, step: str) -> None:
    job.step, job.next_attempt_at, job.settled_at = step, None, timezone.now()


def _goto(job: VendorJob, step: str, *, delay: float = 0) -> None:
    job.step = step
    job.next_attempt_at = timezone.now() + timedelta(seconds=delay)


def _checkpointer(job: VendorJob) -> Any:
    def checkpoint(state: dict[str, Any]) -> None:
        VendorJob.objects.filter(pk=job.pk).update(state=state, updated_at=timezone.now())

    return checkpoint


def _approver_id(job: VendorJob) -> str | None:
    if not job.case.approved_by_id:
        return None
    return (
        VendorIdentity.objects.filter(user_id=job.case.approved_by_id, vendor=job.account.vendor)
        .values_list("external_id", flat=True)
        .first()
    )


def _remember_usage(job: VendorJob) -> None:
    usage = job.state.get("api_usage") if isinstance(job.state, dict) else None
    if usage and usage != job.account.api_usage:
        VendorAccount.objects.filter(pk=job.account_id).update(api_usage=str(usage)[:100])
        job.account.api_usage = str(usage)[:100]


def _event(job: VendorJob, message: str, *, kind: str = CaseEvent.Kind.VENDOR) -> None:
    services.record_event(job.case, kind, f"{job.account.name}: {message}", actor_label="pipeline")


def _summarise(matches: list[Match]) -> str:
    shown = ", ".join(m.detail or m.vendor_id for m in matches[:5])
    return shown + (f" and {len(matches) - 5} more" if len(matches) > 5 else "")


# --- Retention --------------------------------------------------------------------------------


def expired_archive_ids(limit: int = 500) -> list[int]:
    """Stored archives of cases finished more than the retention period ago."""
    days = settings.DSAR_ARCHIVE_RETENTION_DAYS
    if days <= 0:
        return []
    cutoff = timezone.now() - timedelta(days=days)
    return list(
        Archive.objects.filter(deleted_at__isnull=True, job__case__closed_at__lt=cutoff)
        .order_by("id")
        .values_list("pk", flat=True)[:limit]
    )


def purge_expired_archives() -> int:
    """Delete expired archives' files and record it; safe to run twice or to kill anywhere."""
    purged = 0
    for archive_id in expired_archive_ids():
        if services.delete_archive(
            archive_id, reason=f"{settings.DSAR_ARCHIVE_RETENTION_DAYS}-day retention"
        ):
            purged += 1
    return purged
