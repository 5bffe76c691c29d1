"""Guarantees a regulator would ask about, each proven by a test that fails without it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import responses
from django.conf import settings
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from cases import pipeline, services
from cases.models import Archive, Case, CaseEvent, VendorJob
from connectors.models import VendorAccount

from .conftest import ARCHIVE_LOCATION, LOCATION_URL, PASSWORD, RULE_URL, login

pytestmark = pytest.mark.usefixtures("pipeline_settings")
S = Case.State
Step = VendorJob.Step
ROOT = Path(__file__).resolve().parents[1]

# --- The permission matrix ---------------------------------------------------------------------

ROLES = ("anonymous", "support", "dpo", "superuser")
# action → the status each role gets (302 for anonymous = sent to the login page)
MATRIX = {
    "list": {"anonymous": 302, "support": 200, "dpo": 200, "superuser": 200},
    "view": {"anonymous": 302, "support": 200, "dpo": 200, "superuser": 200},
    "add": {"anonymous": 302, "support": 302, "dpo": 302, "superuser": 302},
    "approve": {"anonymous": 302, "support": 403, "dpo": 302, "superuser": 302},
    "reject": {"anonymous": 302, "support": 403, "dpo": 302, "superuser": 302},
    "retry": {"anonymous": 302, "support": 403, "dpo": 302, "superuser": 302},
    "download": {"anonymous": 302, "support": 403, "dpo": 200, "superuser": 200},
    "account_view": {"anonymous": 302, "support": 403, "dpo": 200, "superuser": 200},
    "account_change": {"anonymous": 302, "support": 403, "dpo": 403, "superuser": 302},
}
# Whether the action took effect for the role.
EFFECT = {
    "add": {"support", "dpo", "superuser"},
    "approve": {"dpo", "superuser"},
    "reject": {"dpo", "superuser"},
    "retry": {"dpo", "superuser"},
    "account_change": {"superuser"},
}


@pytest.fixture
def world(make_case, qualifio_account, dpo, support, superuser):
    new = make_case()
    failed = make_case()
    Case.objects.filter(pk=failed.pk).update(state=S.FAILED, failure_reason="vendor down")
    finished = make_case()
    Case.objects.filter(pk=finished.pk).update(state=S.FINISHED, closed_at=timezone.now())
    job = VendorJob.objects.get(case=finished)
    archive = Archive(job=job, key="a1", filename="export.zip", content_type="application/zip",
                      size=4, sha256="0" * 64)  # fmt: skip
    archive.file.save("export.zip", ContentFile(b"PK.."), save=False)
    archive.save()
    return {"new": new, "failed": failed, "finished": finished, "archive": archive,
            "users": {"dpo": dpo, "support": support, "superuser": superuser}}  # fmt: skip


def _client(role: str, world: dict) -> Client:
    client = Client()
    if role != "anonymous":
        login(client, world["users"][role])
    return client


def _do(client: Client, action: str, world: dict):
    case_url = reverse("admin:cases_case_change", args=[world["new"].pk])
    account = VendorAccount.objects.get()
    account_url = reverse("admin:connectors_vendoraccount_change", args=[account.pk])
    return {
        "list": lambda: client.get(reverse("admin:cases_case_changelist")),
        "view": lambda: client.get(case_url),
        "add": lambda: client.post(
            reverse("admin:cases_case_add"),
            {"email": "new@example.com", "request_type": "access", "received_on": "2026-11-20"},
        ),
        "approve": lambda: client.post(
            reverse("admin:cases_case_transition", args=[world["new"].pk, "approve"])
        ),
        "reject": lambda: client.post(
            reverse("admin:cases_case_transition", args=[world["new"].pk, "reject"]),
            {"reason": "not the subject"},
        ),
        "retry": lambda: client.post(
            reverse("admin:cases_case_transition", args=[world["failed"].pk, "retry"])
        ),
        "download": lambda: client.get(
            reverse("admin:cases_case_archive", args=[world["finished"].pk, world["archive"].pk])
        ),
        "account_view": lambda: client.get(account_url),
        "account_change": lambda: client.post(
            account_url,
            {
                "name": "Renamed",
                "vendor": "qualifio",
                "is_active": "on",
                "client_id": "2449",
                "base_url": "https://api.qualif.io",
                "default_dpo_id": "4321",
                "api_version": "62.0",
            },
        ),
    }[action]()


def _took_effect(action: str, world: dict) -> bool:
    return {
        "add": lambda: Case.objects.filter(email="new@example.com").exists(),
        "approve": lambda: Case.objects.get(pk=world["new"].pk).state == S.APPROVED,
        "reject": lambda: Case.objects.get(pk=world["new"].pk).state == S.REJECTED,
        "retry": lambda: Case.objects.get(pk=world["failed"].pk).state == S.APPROVED,
        "account_change": lambda: VendorAccount.objects.filter(name="Renamed").exists(),
    }[action]()


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("action", list(MATRIX))
def test_permission_matrix(world, role, action) -> None:
    response = _do(_client(role, world), action, world)
    assert response.status_code == MATRIX[action][role], (role, action)
    if role == "anonymous":
        assert response["Location"].startswith(reverse("admin:login"))
    if action in EFFECT:
        assert _took_effect(action, world) == (role in EFFECT[action]), (role, action)
    if action == "download" and response.status_code == 200:
        assert b"".join(response.streaming_content) == b"PK.."
        assert CaseEvent.objects.filter(kind=CaseEvent.Kind.ARCHIVE_DOWNLOADED).count() == 1
    elif action == "download":
        assert not CaseEvent.objects.filter(kind=CaseEvent.Kind.ARCHIVE_DOWNLOADED).exists()


@pytest.mark.parametrize("role", ["dpo", "superuser"])
def test_vendor_secrets_are_never_shown_back(world, role) -> None:
    account = VendorAccount.objects.get()
    page = _do(_client(role, world), "account_view", world).content.decode()
    assert account.api_token not in page
    assert "token-for-account-2449" not in page
    assert "token-for" not in repr(account)


def test_vendor_secret_left_empty_is_kept_and_a_new_one_replaces_it(world) -> None:
    client = _client("superuser", world)
    _do(client, "account_change", world)
    account = VendorAccount.objects.get()
    assert account.name == "Renamed" and account.api_token == "token-for-account-2449"
    url = reverse("admin:connectors_vendoraccount_change", args=[account.pk])
    form = {
        "name": "Renamed",
        "vendor": "qualifio",
        "is_active": "on",
        "client_id": "2449",
        "base_url": "https://api.qualif.io",
        "default_dpo_id": "4321",
        "api_version": "62.0",
    }
    client.post(url, {**form, "api_token": "rotated"})
    assert VendorAccount.objects.get().api_token == "rotated"


# --- Login brute force ----------------------------------------------------------------------


def test_admin_login_locks_out_after_repeated_failures(dpo) -> None:
    client = Client()
    url = reverse("admin:login")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(url, {"username": "dpo", "password": "wrong", "next": "/admin/"})
    response = client.post(url, {"username": "dpo", "password": PASSWORD, "next": "/admin/"})
    assert response.status_code in (403, 429)
    assert "_auth_user_id" not in client.session
    # Another person (other username) is not locked out by it.
    User.objects.create_user("other", password=PASSWORD, is_staff=True)
    ok = Client().post(url, {"username": "other", "password": PASSWORD, "next": "/admin/"})
    assert ok.status_code == 302


# --- Deployment checks ----------------------------------------------------------------------


def test_check_deploy_is_clean_with_production_settings(tmp_path) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("SECURE_SSL_REDIRECT", "DEBUG")},
        "DEBUG": "false",
        "SECRET_KEY": "x7#k2!p9@q4$w8%e3^r6&t1*y5(u0)i-o=p+a[s]d{f}g|h;j:k,l.z/x?c",
        "FIELD_ENCRYPTION_SALT": "prod-salt",
        "ALLOWED_HOSTS": "dsar.example.com",
        "DSAR_PUBLIC_URL": "https://dsar.example.com",
        "DSAR_VAR_DIR": str(tmp_path),
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_secrets(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    env["DSAR_VAR_DIR"] = str(tmp_path)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "SECRET_KEY must be set" in result.stderr


# --- Archive locations, names and sizes -------------------------------------------------------


def _to_download(make_case, dpo) -> Case:
    case = make_case()
    pipeline.advance(VendorJob.objects.get(case=case).pk)
    services.approve_case(case, actor=dpo)
    job = VendorJob.objects.get(case=case)
    pipeline.advance(job.pk)
    VendorJob.objects.filter(pk=job.pk).update(next_attempt_at=timezone.now())
    pipeline.advance(job.pk)
    return case


def test_private_archive_hosts_are_refused_in_production(
    make_case, qualifio, enqueued, dpo, settings, monkeypatch
) -> None:
    settings.DSAR_ALLOW_PRIVATE_VENDOR_HOSTS = False

    def resolve(host, *args, **kwargs):  # api.qualif.io now points into our network
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 443))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    case = _to_download(make_case, dpo)
    job = VendorJob.objects.get(case=case)
    assert job.step == Step.FAILED
    assert "non-public address" in job.last_error
    assert not Archive.objects.exists()


@pytest.mark.parametrize("hostile", ["../../../etc/passwd", "..", "/etc/cron.d/x", "a/../../b.zip"])
def test_archive_names_cannot_escape_storage(
    make_case, qualifio, enqueued, dpo, monkeypatch, hostile
):
    from connectors.qualifio import QualifioConnector

    original = QualifioConnector.poll

    def poll(self, state, *, checkpoint):
        result = original(self, state, checkpoint=checkpoint)
        refs = [type(r)(key=r.key, filename=hostile) for r in result.archives]
        return type(result)(phase=result.phase, detail=result.detail, archives=refs)

    monkeypatch.setattr(QualifioConnector, "poll", poll)
    case = _to_download(make_case, dpo)
    archive = Archive.objects.get(job__case=case)
    root = Path(settings.ARCHIVE_ROOT).resolve()
    stored = Path(archive.file.path).resolve()
    assert root in stored.parents
    assert stored.parent.name == case.reference


def test_archives_over_the_limit_are_refused(make_case, qualifio, enqueued, dpo, settings):
    settings.DSAR_MAX_ARCHIVE_BYTES = 100
    case = _to_download(make_case, dpo)
    job = VendorJob.objects.get(case=case)
    assert job.step == Step.FAILED and "100-byte limit" in job.last_error
    assert not Archive.objects.exists()
    assert not [p for p in Path(settings.ARCHIVE_ROOT).rglob("*") if p.is_file()]


# --- Stuck exports and retention ----------------------------------------------------------------


def test_an_export_that_never_finishes_is_flagged_stuck(make_case, qualifio, enqueued, dpo):
    from .conftest import RULE_APPROVED

    qualifio.replace(responses.GET, RULE_URL, json=RULE_APPROVED)  # forever APPROVED
    case = make_case()
    pipeline.advance(VendorJob.objects.get(case=case).pk)
    services.approve_case(case, actor=dpo)
    job = VendorJob.objects.get(case=case)
    pipeline.advance(job.pk)
    VendorJob.objects.filter(pk=job.pk).update(
        next_attempt_at=timezone.now(),
        started_at=timezone.now() - timedelta(hours=settings.DSAR_STUCK_AFTER_HOURS + 1),
    )
    pipeline.advance(job.pk)
    job.refresh_from_db()
    assert job.step == Step.FAILED and job.last_error.startswith("stuck:")
    assert job.next_attempt_at is None  # not polled any more
    case.refresh_from_db()
    assert case.state == S.FAILED and "stuck" in case.failure_reason
    assert pipeline.due_job_ids() == []
    # Retry waits for it again, with a fresh period, on the same rule.
    services.retry_case(case, actor=dpo)
    job.refresh_from_db()
    assert job.step == Step.RUNNING and job.state.get("rule_id")
    assert timezone.now() - job.started_at < timedelta(minutes=1)


def test_retention_deletes_expired_archives_once_and_records_it(world, settings) -> None:
    settings.DSAR_ARCHIVE_RETENTION_DAYS = 30
    archive, case = world["archive"], world["finished"]
    path = Path(archive.file.path)
    assert pipeline.purge_expired_archives() == 0  # finished just now: kept
    Case.objects.filter(pk=case.pk).update(closed_at=timezone.now() - timedelta(days=31))
    assert pipeline.purge_expired_archives() == 1
    assert not path.exists()
    archive.refresh_from_db()
    assert archive.deleted_at is not None
    assert pipeline.purge_expired_archives() == 0  # safe to run twice
    event = CaseEvent.objects.get(case=case, kind=CaseEvent.Kind.ARCHIVE_DELETED)
    assert "30-day retention" in event.message
    # The admin no longer offers it.
    client = login(Client(), world["users"]["dpo"])
    url = reverse("admin:cases_case_archive", args=[case.pk, archive.pk])
    assert client.get(url).status_code == 404


def test_callback_location_must_match_the_accounts_host(make_case, qualifio, enqueued, dpo):
    """The archive URL Qualifio returns must be on its own API host (no open redirect)."""
    location = dict(ARCHIVE_LOCATION, url="http://api.qualif.io/v1/archive/downgraded")
    qualifio.replace(responses.GET, LOCATION_URL, json=location)
    case = _to_download(make_case, dpo)
    job = VendorJob.objects.get(case=case)
    assert job.step == Step.FAILED and "refused" in job.last_error


def test_log_output_masks_addresses_and_tokens_in_tracebacks_too() -> None:
    import logging

    from cases.logging import MaskingFormatter

    formatter = MaskingFormatter("%(levelname)s %(message)s")
    try:
        raise ValueError("no such subject: ada.lovelace@example.com (Bearer 00Dabc!secret)")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed for %s", ("ada.lovelace@example.com",),
            sys.exc_info(),
        )  # fmt: skip
    output = formatter.format(record)
    assert "ada.lovelace@example.com" not in output
    assert "00Dabc!secret" not in output
    assert "a***@example.com" in output and "Traceback" in output
