"""Shared fixtures: the two roles, a superuser, vendor accounts and a case factory."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from django.contrib.auth.models import Group, Permission, User

from cases import services
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
    client.login(username=user.username, password=PASSWORD)
    return client
