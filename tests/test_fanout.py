"""One case, two vendors: it finishes only when both are done, and fails if either fails."""

from __future__ import annotations

import hashlib
import json

import pytest
import responses
from django.utils import timezone

from cases import pipeline, services
from cases.models import Archive, Case, VendorJob
from connectors.models import Vendor, VendorAccount

from .connectors import test_salesforce as sf

pytestmark = pytest.mark.usefixtures("pipeline_settings")
Step = VendorJob.Step
S = Case.State
SF_FILE = b"PK\x03\x04salesforce-portability-file" + bytes(range(200))


@pytest.fixture
def salesforce_account(db) -> VendorAccount:
    return VendorAccount.objects.create(
        name="Salesforce org",
        vendor=Vendor.SALESFORCE,
        base_url="",
        login_url=sf.LOGIN,
        client_id=sf.CONSUMER_KEY,
        client_secret=sf.CONSUMER_SECRET,
        policy_name=sf.POLICY,
        api_version="62.0",
    )


@pytest.fixture
def salesforce(qualifio, salesforce_account):
    """Salesforce's documented Portability API, on the same mock as Qualifio."""
    qualifio.post(sf.TOKEN_URL, json=sf._token_body())
    qualifio.post(sf.EXECUTE_URL, body=sf.POST_RESPONSE, content_type="application/json")
    qualifio.get(
        sf.EXECUTE_URL, body=sf._get_response("In Progress"), content_type="application/json"
    )
    qualifio.get(
        sf.FILE_URL.split("?")[0],
        body=SF_FILE,
        content_type="application/zip",
        headers={"Content-Length": str(len(SF_FILE))},
    )
    return qualifio


def advance_all(case: Case, *, due: bool = False) -> dict[str, str]:
    if due:
        VendorJob.objects.filter(case=case).update(next_attempt_at=timezone.now())
    for job in VendorJob.objects.filter(case=case):
        pipeline.advance(job.pk)
    return {job.account.vendor: job.step for job in VendorJob.objects.filter(case=case)}


def test_case_finishes_only_when_both_vendors_are_done(
    make_case, salesforce, enqueued, dpo
) -> None:
    case = make_case(salesforce_id=sf.CONTACT_15)
    assert advance_all(case) == {
        "qualifio": Step.AWAITING_APPROVAL,
        "salesforce": Step.AWAITING_APPROVAL,
    }
    sf_job = VendorJob.objects.get(case=case, account__vendor="salesforce")
    assert sf_job.matches[0]["vendor_id"] == sf.CONTACT_18
    assert sf_job.matches[0]["detail"] == "Contact"

    services.approve_case(case, actor=dpo)
    assert advance_all(case) == {"qualifio": Step.RUNNING, "salesforce": Step.RUNNING}
    execute = next(
        c for c in salesforce.calls if c.request.method == "POST" and "rtp" in c.request.url
    )
    assert json.loads(execute.request.body) == {
        "dataSubjectId": sf.CONTACT_18,
        "policyName": sf.POLICY,
    }
    assert Case.objects.get(pk=case.pk).state == S.EXPORTING

    # Qualifio finishes first: the case keeps exporting while Salesforce compiles.
    steps = advance_all(case, due=True)
    assert steps == {"qualifio": Step.DONE, "salesforce": Step.RUNNING}
    assert Case.objects.get(pk=case.pk).state == S.EXPORTING

    salesforce.replace(
        responses.GET,
        sf.EXECUTE_URL,
        body=sf._get_response("Complete"),
        content_type="application/json",
    )
    assert advance_all(case, due=True) == {"qualifio": Step.DONE, "salesforce": Step.DONE}
    case.refresh_from_db()
    assert case.state == S.FINISHED
    stored = Archive.objects.get(job__account__vendor="salesforce")
    assert stored.sha256 == hashlib.sha256(SF_FILE).hexdigest()
    download = next(c for c in salesforce.calls if "policyFileDownload" in c.request.url)
    assert download.request.headers["Authorization"] == f"Bearer {sf.ACCESS_TOKEN}"
    assert VendorJob.objects.get(pk=sf_job.pk).external_ref == sf.FILE_ID


def test_case_fails_when_one_vendor_fails_and_keeps_the_other_archive(
    make_case, salesforce, enqueued, dpo
) -> None:
    case = make_case(salesforce_id=sf.CONTACT_15)
    advance_all(case)
    services.approve_case(case, actor=dpo)
    advance_all(case)
    salesforce.replace(
        responses.GET, sf.EXECUTE_URL, body=sf.GET_RESPONSE_FAILED, content_type="application/json"
    )
    assert advance_all(case, due=True) == {"qualifio": Step.DONE, "salesforce": Step.FAILED}
    case.refresh_from_db()
    assert case.state == S.FAILED
    assert "Salesforce org" in case.failure_reason and "Failed" in case.failure_reason
    assert Archive.objects.filter(job__account__vendor="qualifio").count() == 1

    # Retry: only Salesforce works again (a new execution); Qualifio's archive stays.
    salesforce.replace(
        responses.GET,
        sf.EXECUTE_URL,
        body=sf._get_response("Complete"),
        content_type="application/json",
    )
    services.retry_case(case, actor=dpo)
    advance_all(case)
    assert advance_all(case, due=True) == {"qualifio": Step.DONE, "salesforce": Step.DONE}
    assert Case.objects.get(pk=case.pk).state == S.FINISHED
    executes = [
        c for c in salesforce.calls if c.request.method == "POST" and "rtp" in c.request.url
    ]
    assert len(executes) == 2


def test_salesforce_api_usage_is_visible_to_operators(make_case, salesforce, enqueued, dpo):
    salesforce.replace(
        responses.POST,
        sf.EXECUTE_URL,
        body=sf.POST_RESPONSE,
        content_type="application/json",
        headers={"Sforce-Limit-Info": "api-usage=25/15000"},
    )
    case = make_case(salesforce_id=sf.CONTACT_15)
    advance_all(case)
    services.approve_case(case, actor=dpo)
    advance_all(case)
    account = VendorAccount.objects.get(vendor="salesforce")
    assert account.api_usage == "api-usage=25/15000"
