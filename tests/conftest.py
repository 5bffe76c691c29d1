"""Shared fixtures: the two roles, a superuser, vendor accounts and a case factory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import responses
from django.contrib.auth.models import Group, Permission, User

from cases import services, tasks
from cases.models import Case
from connectors.models import Vendor, VendorAccount

PASSWORD = "correct horse battery staple"


def _user(username: str, group: str | None = None, **extra: Any) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True, **extra)
    if group:
        user.groups.add(Group.objects.get(name=group))
    return user


@pytest.fixture
def dpo(db: None) -> User:
    return _user("dpo", "DPO")


@pytest.fixture
def support(db: None) -> User:
    return _user("support", "Support")


@pytest.fixture
def superuser(db: None) -> User:
    return User.objects.create_superuser("root", password=PASSWORD)


@pytest.fixture
def editor_without_approval(db: None) -> User:
    """Staff who may view and change cases but holds no cases.approve_case: the forger."""
    user = _user("editor")
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label="cases", codename__in=["view_case", "change_case"]
        )
    )
    return user


@pytest.fixture
def qualifio_account(db: None) -> VendorAccount:
    return VendorAccount.objects.create(
        name="Qualifio EU",
        vendor=Vendor.QUALIFIO,
        base_url="https://api.qualif.io",
        client_id="2449",
        api_token="token-for-account-2449",
        default_dpo_id="4321",
    )


@pytest.fixture
def make_case(db: None) -> Callable[..., Case]:
    def make(**fields: Any) -> Case:
        values: dict[str, Any] = {
            "email": "joao@qualifio.com",
            "first_name": "joao",
            "last_name": "pinto",
            "request_type": Case.RequestType.ACCESS,
            "received_on": date(2026, 11, 2),
        }
        values.update(fields)
        return services.open_case(Case(**values), actor_label="test")

    return make


def login(client: Any, user: User) -> Any:
    """A logged-in client. (Password logins go through django-axes: see test_security.)"""
    client.force_login(user)
    return client


from .connectors.test_qualifio import (  # noqa: E402 - the doc's payloads live with their tests
    ARCHIVE_LOCATION,
    ARCHIVE_URL,
    EXPORT_URL,
    LOCATION_URL,
    PROFILE_99,
    PROFILES_URL,
    RULE_APPROVED,
    RULE_FINISHED,
    RULE_NEW,
    RULE_URL,
    VALIDATE_URL,
    ZIP_BYTES,
)

#: The profile search result of the Qualifio doc, step 1.
PROFILES = [PROFILE_99]


# --- Pipeline fixtures ------------------------------------------------------------------------


@pytest.fixture
def pipeline_settings(settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings.DSAR_ALLOW_PRIVATE_VENDOR_HOSTS = True  # no DNS here; the SSRF test turns it off
    settings.ARCHIVE_ROOT = tmp_path / "archives"
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "archives")},
        },
    }
    monkeypatch.setattr("connectors.http._sleep", lambda seconds: None)


@pytest.fixture
def enqueued(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Celery messages the pipeline sends, recorded instead of published."""
    sent: list[int] = []
    monkeypatch.setattr(tasks.advance_job, "delay", lambda job_id, *a: sent.append(job_id))
    monkeypatch.setattr(
        tasks.advance_job, "delay_on_commit", lambda job_id, *a: sent.append(job_id)
    )
    return sent


@pytest.fixture
def qualifio(qualifio_account):
    """The documented Qualifio API for account 2449, call by call."""
    qualifio_account.api_token = "tok-2449-very-secret-value"
    qualifio_account.save()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        rsps.get(PROFILES_URL, json=PROFILES)
        rsps.post(EXPORT_URL, json=RULE_NEW)
        rsps.put(VALIDATE_URL, json=RULE_APPROVED)
        rsps.get(RULE_URL, json=RULE_FINISHED)
        rsps.get(LOCATION_URL, json=ARCHIVE_LOCATION)
        rsps.get(
            ARCHIVE_URL,
            body=ZIP_BYTES,
            content_type="application/zip",
            headers={"Content-Length": str(len(ZIP_BYTES))},
        )
        yield rsps
