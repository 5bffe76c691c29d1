"""The export pipeline with Qualifio, driven step by step against the vendor doc's payloads."""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import responses
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from responses import matchers

from cases import callbacks, pipeline, services, tasks
from cases.models import Archive, Case, CaseEvent, VendorJob
from connectors.models import Vendor, VendorAccount, VendorIdentity

from .conftest import PROFILES, login
from .connectors.test_qualifio import (
    ARCHIVE_ID,
    ARCHIVE_LOCATION,
    ARCHIVE_URL,
    EXPORT_URL,
    LOCATION_URL,
    PROFILES_URL,
    RULE_APPROVED,
    RULE_FINISHED,
    RULE_ID,
    RULE_NEW,
    RULE_URL,
    VALIDATE_URL,
    ZIP_BYTES,
)

Step = VendorJob.Step
S = Case.State


pytestmark = pytest.mark.usefixtures("pipeline_settings")


def calls(rsps: responses.RequestsMock, method: str, url: str) -> int:
    return sum(
        1 for c in rsps.calls if c.request.method == method and c.request.url.split("?")[0] == url
    )


def job_of(case: Case) -> VendorJob:
    return VendorJob.objects.get(case=case)


def run_due(case: Case) -> VendorJob:
    """What a worker does when woken: advance the job (if it is due)."""
    job = job_of(case)
    pipeline.advance(job.pk)
    return job_of(case)


def make_due(job: VendorJob) -> None:
    VendorJob.objects.filter(pk=job.pk).update(next_attempt_at=timezone.now())


@pytest.fixture
def approver(dpo) -> Any:
    VendorIdentity.objects.create(user=dpo, vendor=Vendor.QUALIFIO, external_id="777")
    return dpo


def test_whole_flow_from_discovery_to_stored_archive(
    make_case, qualifio, enqueued, approver, client, support
) -> None:
    case = make_case(justification="example justification for export")
    job = job_of(case)
    assert job.step == Step.DISCOVER and enqueued == [job.pk]

    # 1. Discovery then the export rule, both before any approval.
    job = run_due(case)
    assert job.step == Step.AWAITING_APPROVAL
    assert job.matches == [
        {
            "vendor_id": "99",
            "name": "joao pinto",
            "email": "joao@qualifio.com",
            "detail": "joao|pinto|joao@qualifio.com",
        }
    ]
    assert job.external_ref == RULE_ID
    export_call = next(c for c in qualifio.calls if c.request.url.startswith(EXPORT_URL))
    sent = __import__("json").loads(export_call.request.body)
    assert sent == {
        "ruleType": "GDPR_ExportData",
        "clientId": 2449,
        "ruleTypePayload": {"profiles": [99]},
        "justification": "example justification for export",
        "userId": 4321,
        "callBackUrl": callbacks.url_for(job),
    }
    assert calls(qualifio, "PUT", VALIDATE_URL) == 0

    # The DPO sees what will be exported before approving.
    login(client, approver)
    page = client.get(reverse("admin:cases_case_transition", args=[case.pk, "approve"]))
    assert b"joao|pinto|joao@qualifio.com" in page.content

    # 2. Approve: validate with the approving DPO's own Qualifio id, exactly once.
    client.post(reverse("admin:cases_case_transition", args=[case.pk, "approve"]))
    assert Case.objects.get(pk=case.pk).state == S.APPROVED
    job = run_due(case)
    validate = next(c for c in qualifio.calls if c.request.url.startswith(VALIDATE_URL))
    assert __import__("json").loads(validate.request.body) == {"dpo": 777}
    assert job.step == Step.RUNNING
    assert Case.objects.get(pk=case.pk).state == S.EXPORTING
    run_due(case)  # not due yet: nothing happens
    assert calls(qualifio, "PUT", VALIDATE_URL) == 1
    assert calls(qualifio, "GET", RULE_URL) == 0

    # 3. Qualifio's callback (GET) makes the job due now.
    url = callbacks.url_for(job).replace(settings.DSAR_PUBLIC_URL, "")
    response = Client().get(url)
    assert response.status_code == 204 and response.content == b""
    job = run_due(case)

    # 4. FINISHED → archive location → streamed download with its checksum.
    assert job.step == Step.DONE
    archive = Archive.objects.get(job=job)
    assert archive.key == ARCHIVE_ID
    assert archive.size == len(ZIP_BYTES)
    assert archive.sha256 == hashlib.sha256(ZIP_BYTES).hexdigest()
    with archive.file.open("rb") as fh:
        assert fh.read() == ZIP_BYTES
    case.refresh_from_db()
    assert case.state == S.FINISHED and case.closed_at is not None
    assert not list((Path(settings.ARCHIVE_ROOT) / "incoming").glob("*"))

    # 5. The DPO downloads it (audited); support cannot.
    archive_url = reverse("admin:cases_case_archive", args=[case.pk, archive.pk])
    download = client.get(archive_url)
    assert download.status_code == 200
    assert b"".join(download.streaming_content) == ZIP_BYTES
    assert case.events.filter(kind=CaseEvent.Kind.ARCHIVE_DOWNLOADED, actor=approver).exists()
    assert login(Client(), support).get(archive_url).status_code == 403
    assert (
        archive.sha256.encode()
        not in login(Client(), support)
        .get(reverse("admin:cases_case_change", args=[case.pk]))
        .content.split(b"SHA-256")[0]
    )

    kinds = list(case.events.values_list("kind", flat=True))
    assert CaseEvent.Kind.ARCHIVE_STORED in kinds
    assert kinds.count(CaseEvent.Kind.TRANSITION) == 3  # approved, exporting, finished


def test_zero_profiles_is_no_data_held_and_the_case_finishes(
    make_case, qualifio, enqueued, dpo
) -> None:
    qualifio.replace(responses.GET, PROFILES_URL, json=[])
    case = make_case()
    job = run_due(case)
    assert job.step == Step.NO_DATA and job.matches == []
    assert calls(qualifio, "POST", EXPORT_URL) == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("django.db.transaction.on_commit", lambda fn, using=None, robust=False: fn())
        services.approve_case(case, actor=dpo)
    case.refresh_from_db()
    assert case.state == S.FINISHED
    assert not Archive.objects.exists()
    assert case.events.filter(message__contains="no data held").exists()


def test_several_profiles_are_all_exported(make_case, qualifio, enqueued) -> None:
    second = copy.deepcopy(PROFILES[0]) | {"id": 100, "trigramme": "joao|p|joao@qualifio.com"}
    qualifio.replace(responses.GET, PROFILES_URL, json=[PROFILES[0], second])
    qualifio.replace(
        responses.POST,
        EXPORT_URL,
        json=RULE_NEW,
        match=[
            matchers.json_params_matcher(
                {"ruleTypePayload": {"profiles": [99, 100]}}, strict_match=False
            )
        ],
    )
    job = run_due(make_case())
    assert [m["vendor_id"] for m in job.matches] == ["99", "100"]
    assert job.step == Step.AWAITING_APPROVAL


def test_auto_approved_rule_skips_validate_and_waits_for_the_dpo(
    make_case, qualifio, enqueued, dpo
) -> None:
    auto = copy.deepcopy(RULE_APPROVED)
    auto["ruleStatus"]["isAuto"] = True
    qualifio.replace(responses.POST, EXPORT_URL, json=auto)
    case = make_case()
    job = run_due(case)
    assert job.step == Step.AWAITING_APPROVAL
    # Nothing is polled or downloaded before the DPO approves, even if woken.
    make_due(job)
    run_due(case)
    assert calls(qualifio, "GET", RULE_URL) == 0 and calls(qualifio, "GET", ARCHIVE_URL) == 0
    services.approve_case(case, actor=dpo)
    job = run_due(case)
    assert calls(qualifio, "PUT", VALIDATE_URL) == 0
    assert job.step == Step.RUNNING
    assert case.events.filter(message__contains="validate skipped").exists()


def test_vendor_error_status_fails_the_case_and_retry_prepares_a_new_rule(
    make_case, qualifio, enqueued, dpo
) -> None:
    failed_rule = copy.deepcopy(RULE_APPROVED)
    failed_rule["ruleStatus"]["status"] = "ERROR"
    qualifio.replace(responses.GET, RULE_URL, json=failed_rule)
    case = make_case()
    run_due(case)
    services.approve_case(case, actor=dpo)
    job = run_due(case)
    make_due(job)
    job = run_due(case)
    assert job.step == Step.FAILED
    case.refresh_from_db()
    assert case.state == S.FAILED
    assert "ERROR" in case.failure_reason and "Qualifio EU" in case.failure_reason

    qualifio.replace(responses.GET, RULE_URL, json=RULE_FINISHED)
    services.retry_case(case, actor=dpo)
    job = run_due(case)
    assert calls(qualifio, "POST", EXPORT_URL) == 2  # the dead rule is replaced
    assert calls(qualifio, "PUT", VALIDATE_URL) == 2
    make_due(job)
    run_due(case)
    assert Case.objects.get(pk=case.pk).state == S.FINISHED


def test_permanent_error_on_validate_then_retry_reuses_the_rule(
    make_case, qualifio, enqueued, dpo
) -> None:
    qualifio.replace(responses.PUT, VALIDATE_URL, status=401, json={"message": "bad token"})
    case = make_case()
    run_due(case)
    services.approve_case(case, actor=dpo)
    job = run_due(case)
    assert job.step == Step.FAILED and "credentials" in job.last_error
    case.refresh_from_db()
    assert case.state == S.FAILED and "HTTP 401" in case.failure_reason

    qualifio.replace(responses.PUT, VALIDATE_URL, json=RULE_APPROVED)
    qualifio.replace(responses.GET, RULE_URL, json=RULE_NEW)  # checked before re-validating
    services.retry_case(case, actor=dpo)
    job = run_due(case)
    assert job.step == Step.RUNNING
    assert calls(qualifio, "POST", EXPORT_URL) == 1  # the first rule is still usable


def test_retryable_errors_back_off_then_give_up(make_case, qualifio, enqueued, dpo, settings):
    settings.DSAR_MAX_VENDOR_ERRORS = 3
    qualifio.replace(responses.GET, PROFILES_URL, status=503)
    case = make_case()
    job = run_due(case)
    assert job.step == Step.DISCOVER and job.error_count == 1
    assert job.next_attempt_at > timezone.now() + timedelta(seconds=20)
    assert "HTTP 503" in job.last_error
    for _ in range(2):
        make_due(job)
        job = run_due(case)
    assert job.step == Step.FAILED
    assert "gave up after 3 attempts" in job.last_error
    assert calls(qualifio, "GET", PROFILES_URL) == 3 * 4  # 4 tries inside each attempt


def test_long_retry_after_is_honoured_through_the_schedule(make_case, qualifio, enqueued):
    qualifio.replace(responses.GET, PROFILES_URL, status=429, headers={"Retry-After": "600"})
    job = run_due(make_case())
    assert job.step == Step.DISCOVER and job.error_count == 1
    wait = (job.next_attempt_at - timezone.now()).total_seconds()
    assert 590 < wait <= 600
    assert calls(qualifio, "GET", PROFILES_URL) == 1


def test_html_instead_of_json_is_a_readable_error(make_case, qualifio, enqueued, settings):
    settings.DSAR_MAX_VENDOR_ERRORS = 1
    qualifio.replace(
        responses.GET, PROFILES_URL, body="<html>Maintenance</html>", content_type="text/html"
    )
    job = run_due(make_case())
    assert job.step == Step.FAILED
    assert "unreadable content (text/html" in job.last_error


def test_archive_on_a_foreign_host_is_refused(make_case, qualifio, enqueued, dpo) -> None:
    location = copy.deepcopy(ARCHIVE_LOCATION)
    location["url"] = "https://attacker.example/v1/archive/x"
    qualifio.replace(responses.GET, LOCATION_URL, json=location)
    qualifio.add(responses.GET, "https://attacker.example/v1/archive/x", body=b"stolen")
    case = make_case()
    run_due(case)
    services.approve_case(case, actor=dpo)
    job = run_due(case)
    make_due(job)
    job = run_due(case)
    assert job.step == Step.FAILED and "refused" in job.last_error
    assert calls(qualifio, "GET", "https://attacker.example/v1/archive/x") == 0
    assert not Archive.objects.exists()


def test_interrupted_download_keeps_no_partial_archive(make_case, qualifio, enqueued, dpo):
    qualifio.replace(
        responses.GET,
        ARCHIVE_URL,
        body=ZIP_BYTES[:100],
        content_type="application/zip",
        headers={"Content-Length": str(len(ZIP_BYTES))},
        auto_calculate_content_length=False,
    )
    case = make_case()
    run_due(case)
    services.approve_case(case, actor=dpo)
    make_due(run_due(case))
    job = run_due(case)
    assert job.step == Step.DOWNLOAD
    assert "archive download was" in job.last_error  # interrupted / truncated
    assert not Archive.objects.exists()
    root = Path(settings.ARCHIVE_ROOT)
    assert [p for p in root.rglob("*") if p.is_file()] == []
    # The vendor recovers: the next attempt stores the whole archive.
    qualifio.replace(
        responses.GET,
        ARCHIVE_URL,
        body=ZIP_BYTES,
        content_type="application/zip",
        headers={"Content-Length": str(len(ZIP_BYTES))},
    )
    make_due(job)
    assert run_due(case).step == Step.DONE
    assert Archive.objects.get().sha256 == hashlib.sha256(ZIP_BYTES).hexdigest()


def test_callback_refuses_forged_foreign_and_missing_tokens(make_case, qualifio, enqueued):
    first, second = make_case(), make_case()
    job_a, job_b = run_due(first), run_due(second)
    client = Client()
    good = callbacks.url_for(job_a).replace(settings.DSAR_PUBLIC_URL, "")
    forged = reverse("vendor-callback", args=[job_a.callback_id, "0" * 64])
    foreign = reverse(
        "vendor-callback", args=[job_a.callback_id, callbacks.token_for(job_b.callback_id)]
    )
    for url in (forged, foreign, f"/callbacks/{job_a.callback_id}/", "/callbacks/not-a-uuid/x/"):
        response = client.get(url)
        assert response.status_code == 404
        assert response.content in (b"",) or b"DSAR" not in response.content
    assert client.post(good).status_code == 405  # Qualifio calls with GET
    # Valid token, but the job is not waiting on the vendor: still 204, nothing revealed.
    assert client.get(good).status_code == 204


def test_sync_tick_wakes_only_due_in_flight_jobs(make_case, qualifio, enqueued) -> None:
    done_case, waiting, due = make_case(), make_case(), make_case()
    VendorJob.objects.filter(case=done_case).update(step=Step.DONE, next_attempt_at=None)
    VendorJob.objects.filter(case=waiting).update(
        step=Step.RUNNING, next_attempt_at=timezone.now() + timedelta(minutes=5)
    )
    VendorJob.objects.filter(case=due).update(
        step=Step.RUNNING, next_attempt_at=timezone.now() - timedelta(seconds=1)
    )
    leased = make_case()
    VendorJob.objects.filter(case=leased).update(
        step=Step.RUNNING,
        next_attempt_at=timezone.now() - timedelta(seconds=1),
        lease_until=timezone.now() + timedelta(minutes=1),
    )
    enqueued.clear()
    assert pipeline.sync_tick() == 1
    assert enqueued == [job_of(due).pk]


def test_sync_tick_cost_does_not_grow_with_history(make_case, enqueued) -> None:
    def tick_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            pipeline.sync_tick()
        return len(queries)

    make_case()
    baseline = tick_queries()
    for _ in range(25):
        case = make_case()
        Case.objects.filter(pk=case.pk).update(state=S.FINISHED)
    assert tick_queries() == baseline


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_workers_validate_once(make_case, qualifio, enqueued, dpo) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    case = make_case()
    pipeline.advance(job_of(case).pk)
    services.approve_case(case, actor=dpo)
    job_id = job_of(case).pk
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        try:
            pipeline.advance(job_id)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls(qualifio, "PUT", VALIDATE_URL) == 1
    assert job_of(case).step == Step.RUNNING


def test_approving_twice_validates_once(make_case, qualifio, enqueued, dpo, client) -> None:
    case = make_case()
    run_due(case)
    login(client, dpo)
    url = reverse("admin:cases_case_transition", args=[case.pk, "approve"])
    client.post(url)
    client.post(url)
    run_due(case)
    run_due(case)
    assert calls(qualifio, "PUT", VALIDATE_URL) == 1
    assert case.events.filter(kind=CaseEvent.Kind.TRANSITION, to_state=S.APPROVED).count() == 1


def test_worker_killed_after_validate_resumes_without_validating_again(
    make_case, qualifio, enqueued, dpo
) -> None:
    """Simulates a crash between Qualifio's answer and our checkpoint of it."""
    case = make_case()
    run_due(case)
    services.approve_case(case, actor=dpo)
    job = job_of(case)
    # The worker sent validate (marker checkpointed) and died before recording the answer;
    # its lease has expired.
    VendorJob.objects.filter(pk=job.pk).update(
        state={**job.state, "validate_sent": True},
        lease_until=timezone.now() - timedelta(seconds=1),
    )
    qualifio.replace(responses.GET, RULE_URL, json=RULE_APPROVED)
    job = run_due(case)
    assert job.step == Step.RUNNING
    assert calls(qualifio, "PUT", VALIDATE_URL) == 0
    assert calls(qualifio, "POST", EXPORT_URL) == 1


def test_secrets_and_emails_never_reach_the_logs(make_case, qualifio, enqueued, dpo, caplog):
    caplog.set_level("DEBUG")
    case = make_case()
    run_due(case)
    services.approve_case(case, actor=dpo)
    make_due(run_due(case))
    run_due(case)
    from cases.logging import MaskPersonalData

    text = "\n".join(r.getMessage() for r in caplog.records if MaskPersonalData().filter(r) or True)
    assert "tok-2449-very-secret-value" not in text
    assert "joao@qualifio.com" not in text


def test_rejecting_cancels_the_vendor_jobs(make_case, qualifio, enqueued, dpo) -> None:
    waiting, fresh = make_case(), make_case()
    run_due(waiting)  # discovered, rule created, awaiting approval
    services.reject_case(waiting, actor=dpo, reason="Not the subject.")
    services.reject_case(fresh, actor=dpo, reason="Duplicate request.")
    assert job_of(waiting).step == Step.CANCELLED
    assert job_of(fresh).step == Step.CANCELLED
    make_due(job_of(fresh))
    run_due(fresh)  # a stale wake-up asks nothing of the vendor
    assert calls(qualifio, "GET", PROFILES_URL) == 1
    assert calls(qualifio, "POST", EXPORT_URL) == 1
    assert pipeline.due_job_ids() == []


def test_a_job_held_by_a_worker_during_rejection_is_cancelled_when_released(
    make_case, qualifio, enqueued, dpo
) -> None:
    case = make_case()
    job = job_of(case)
    VendorJob.objects.filter(pk=job.pk).update(lease_until=timezone.now() + timedelta(minutes=1))
    services.reject_case(case, actor=dpo, reason="Withdrawn.")
    assert job_of(case).step == Step.DISCOVER  # a worker holds it: left alone
    VendorJob.objects.filter(pk=job.pk).update(lease_until=None)
    assert run_due(case).step == Step.CANCELLED
    assert calls(qualifio, "GET", PROFILES_URL) == 0


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_jobs_of_one_account_are_acquired_concurrently(make_case, qualifio, enqueued) -> None:
    """Taking one job's lease must not lock its case or account (that would make others skip)."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    from django.db import transaction

    second = make_case()
    with transaction.atomic():
        # Hold a lock on the shared account row, as another worker's acquire would have.
        VendorAccount.objects.select_for_update().get()
        outcome: list[object] = []
        thread = threading.Thread(
            target=lambda: (
                outcome.append(pipeline._acquire(job_of(second).pk)),
                connection.close(),
            )
        )
        thread.start()
        thread.join(timeout=10)
    assert outcome and outcome[0] is not None, "the second job was skipped"


@pytest.mark.parametrize("moment", ["during the vendor call", "before the outcome is written"])
def test_approval_during_prepare_is_not_lost(
    make_case, qualifio, enqueued, approver, monkeypatch, moment
):
    """The DPO approves while a worker still holds the job in PREPARE: the job must start,
    in the same pass, validating with that DPO's own Qualifio id (the case is read again)."""
    dpo = approver
    from connectors.qualifio import QualifioConnector

    case = make_case()
    if moment == "during the vendor call":
        target, original = QualifioConnector, QualifioConnector.prepare
        name = "prepare"
    else:  # the bookkeeping between the step and the release of the job
        target, original = pipeline, pipeline._remember_usage
        name = "_remember_usage"

    def then_the_dpo_approves(*args, **kwargs):
        result = original(*args, **kwargs)
        job = args[0] if name == "_remember_usage" else None
        prepared = job is None or job.step == Step.AWAITING_APPROVAL  # right after PREPARE
        if prepared and Case.objects.get(pk=case.pk).state == S.NEW:
            services.approve_case(case, actor=dpo)  # commits while the job is still leased
        return result

    monkeypatch.setattr(target, name, then_the_dpo_approves)
    job = run_due(case)
    assert job.step == Step.RUNNING  # went on through START in the same pass
    assert calls(qualifio, "PUT", VALIDATE_URL) == 1
    validate = next(c for c in qualifio.calls if c.request.method == "PUT")
    assert json.loads(validate.request.body) == {"dpo": 777}  # not the account's default 4321


def test_a_woken_job_is_claimed_so_later_ticks_do_not_queue_duplicates(
    make_case, qualifio, enqueued, monkeypatch
) -> None:
    sent: list[tuple[int, str]] = []
    monkeypatch.setattr(
        tasks.advance_job, "delay", lambda job_id, claim: sent.append((job_id, claim))
    )
    case = make_case()
    job = job_of(case)
    assert pipeline.sync_tick() == 1
    assert pipeline.sync_tick() == 0  # its wake-up is still queued: not sent again
    ((job_id, claim),) = sent
    assert job_id == job.pk
    claimed = job_of(case).next_attempt_at
    assert claimed > timezone.now() and claimed.isoformat() == claim
    pipeline.advance(job.pk)  # an unclaimed duplicate (e.g. the on-commit wake-up) waits
    assert job_of(case).step == Step.DISCOVER
    tasks.advance_job.run(job.pk, claim)  # the tick's own message runs it
    assert job_of(case).step == Step.AWAITING_APPROVAL
    # A lost message costs one claim window: the job is due again afterwards.
    make_due(job_of(case))
    VendorJob.objects.filter(pk=job.pk).update(step=Step.DISCOVER)
    assert pipeline.sync_tick() == 1


def test_steps_due_at_once_run_under_one_lease(make_case, qualifio, enqueued, monkeypatch):
    """discover → prepare → awaiting approval in one pass, taking the job once, and the lease
    is given up at the end (the next step waits for the DPO)."""
    acquired = []
    original = pipeline._acquire
    monkeypatch.setattr(
        pipeline, "_acquire", lambda *a, **k: acquired.append(a) or original(*a, **k)
    )
    job = run_due(make_case())
    assert job.step == Step.AWAITING_APPROVAL
    assert len(acquired) == 1
    assert job.lease_until is None
