"""Concurrency: 20 DPOs' browsers press Approve on one case at the same instant, over real HTTP.

Twenty threads, each with its own logged-in ``requests.Session`` (password login through
/admin/login/, CSRF token from the confirmation page, exactly what the Approve button posts),
release their POSTs together through a barrier against the live server. The real Celery worker
then drives the case through the sandbox vendors. One transition, one audit event, one validate.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
import requests
from django.contrib.auth.models import User
from django.urls import reverse

from cases.models import Case, CaseEvent

from ..conftest import PASSWORD
from .conftest import open_prepared_case, sandbox_accounts, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]
S = Case.State
CLICKS = 20
_CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def csrf_token(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def logged_in_session(base: str, username: str) -> requests.Session:
    """A browser-like session logged in through the admin's login form."""
    http = requests.Session()
    page = http.get(f"{base}/admin/login/", timeout=30)
    response = http.post(
        f"{base}/admin/login/?next=/admin/",
        data={
            "username": username,
            "password": PASSWORD,
            "csrfmiddlewaretoken": csrf_token(page.text),
            "next": "/admin/",
        },
        headers={"Referer": f"{base}/admin/login/"},
        timeout=30,
    )
    assert response.status_code == 200 and response.url.endswith("/admin/"), username
    return http


def test_twenty_simultaneous_approvals_make_one_transition(
    sandbox: Any, worker: Any, live_server: Any, dpo: User, settings: Any
) -> None:
    # The live server speaks plain HTTP; with DEBUG off the session and CSRF cookies are
    # Secure, which a client (rightly) never sends over http://. Nothing else is relaxed.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    # Twenty real password logins: a fast hasher keeps them cheap (the dpo fixture's PBKDF2
    # hash still verifies). Login itself is the ordinary form, CSRF and django-axes included.
    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]
    sandbox_accounts(sandbox)
    dpos = [dpo] + [
        User.objects.create_user(f"dpo{n}", password=PASSWORD, is_staff=True)
        for n in range(1, CLICKS)
    ]
    for user in dpos[1:]:
        user.groups.add(*dpo.groups.all())
    case = open_prepared_case(dpo)

    base = live_server.url
    url = base + reverse("admin:cases_case_transition", args=[case.pk, "approve"])
    sessions: list[requests.Session] = [None] * CLICKS  # type: ignore[list-item]
    tokens: list[str] = [""] * CLICKS
    barrier = threading.Barrier(CLICKS)
    results: list[dict[str, Any]] = [{} for _ in range(CLICKS)]

    def click(n: int) -> None:
        try:
            http = sessions[n] = logged_in_session(base, dpos[n].username)
            confirm = http.get(url, timeout=30)
            assert "Approve the export" in confirm.text
            tokens[n] = csrf_token(confirm.text)
            barrier.wait(timeout=120)  # every browser ready: press the button together
            results[n]["sent"] = time.monotonic()
            response = http.post(
                url,
                data={"csrfmiddlewaretoken": tokens[n]},
                headers={"Referer": url},
                timeout=60,
            )
            results[n]["done"] = time.monotonic()
            results[n]["status"] = response.status_code
            results[n]["page"] = response.text  # the case page the redirect leads to
        except BaseException as exc:  # reported below, with the thread it happened in
            results[n]["error"] = repr(exc)
            barrier.abort()

    threads = [threading.Thread(target=click, args=(n,)) for n in range(CLICKS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    errors = [r["error"] for r in results if "error" in r]
    assert not errors, errors
    assert [r["status"] for r in results] == [200] * CLICKS  # each followed its redirect

    # Everybody was answered, and the requests really overlapped.
    first_done = min(r["done"] for r in results)
    in_flight_together = sum(1 for r in results if r["sent"] < first_done)
    assert in_flight_together > 1, "the approvals did not overlap"
    print(f"{in_flight_together} of {CLICKS} approvals in flight at the same time")

    # One person's click approved; every other one was told it can no longer be approved.
    approved = [r for r in results if f"Case {case.reference} approved." in r["page"]]
    refused = [r for r in results if "it cannot be approved now" in r["page"]]
    assert (len(approved), len(refused)) == (1, CLICKS - 1)

    def finished() -> bool:
        """the case to finish"""
        state = Case.objects.get(pk=case.pk).state
        assert state != S.FAILED, worker.tail()
        return state == S.FINISHED

    wait_until(finished, timeout=60)

    transitions = list(
        CaseEvent.objects.filter(case=case, kind=CaseEvent.Kind.TRANSITION)
        .order_by("id")
        .values_list("from_state", "to_state", "actor__username")
    )
    to_approved = [t for t in transitions if t[1] == S.APPROVED]
    assert len(to_approved) == 1
    assert to_approved[0][0] == S.NEW and to_approved[0][2] in {u.username for u in dpos}
    assert [t[:2] for t in transitions] == [
        (S.NEW, S.APPROVED),
        (S.APPROVED, S.EXPORTING),
        (S.EXPORTING, S.FINISHED),
    ]
    case.refresh_from_db()
    assert case.approved_by is not None and case.approved_by.username == to_approved[0][2]

    calls = sandbox.calls()
    assert sum(1 for c in calls if c.method == "PUT" and c.path.endswith("/validate")) == 1
    assert sum(1 for c in calls if c.method == "POST" and c.path.endswith("/rtp/execute")) == 1
    assert sum(1 for c in calls if c.method == "POST" and c.path.endswith("/exportData")) == 1
