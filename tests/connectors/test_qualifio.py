"""Qualifio connector against the vendor doc's exact requests and payloads (no Django, no DB).

The JSON bodies below are copied from shared/vendor-docs/qualifio-gdpr-export-api.txt; the
doc's ``*****`` placeholders are the integer DPO_ID.
"""

from __future__ import annotations

import io
import json
import socket
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from connectors import http
from connectors.base import (
    ArchiveRef,
    AuthenticationError,
    ConnectorError,
    DownloadRefusedError,
    MalformedResponseError,
    Match,
    NotFoundError,
    Phase,
    RateLimitedError,
    Subject,
    VendorError,
    VendorUnavailableError,
)
from connectors.qualifio import QualifioConnector

BASE = "https://api.qualif.io"
CLIENT_ID = 2449
TOKEN = "tok-2449-very-secret-value"
DPO_ID = 4321
APPROVER_ID = 777
EMAIL = "joao@qualifio.com"
RULE_ID = "61f807fd94efba001186ec05"
ARCHIVE_ID = "61f8098ecd9aaf0011efe84a"
CALLBACK = "https://your-service.com/your/params"
ARCHIVE_URL = (
    "https://api.qualif.io/v1/archive/"
    "export_client_2449_process_e187e74f-2bec-44db-a94b-6cf9f05e3a61/y9wGUDY1JRAFDX5XLhNe2Ez1R"
)

PROFILES_URL = f"{BASE}/v1/gdpr/profiles"
EXPORT_URL = f"{BASE}/v1/gdpr/rules/exportData"
RULE_URL = f"{BASE}/v1/gdpr/rules/{RULE_ID}"
VALIDATE_URL = f"{RULE_URL}/validate"
LOCATION_URL = f"{RULE_URL}/archive/{ARCHIVE_ID}"


def _doc(text: str) -> Any:
    return json.loads(text.replace("*****", str(DPO_ID)).replace("****", str(DPO_ID)))


# Step 1 result, verbatim.
PROFILE_99 = _doc("""{
"id": 99,
"firstName": "joao",
"lastName": "pinto",
"function": "",
"gender": "",
"email": "joao@qualifio.com",
"birthDay": null,
"company": "",
"address": "",
"box": "",
"country": "",
"createdAt": "2021-12-14T11:41:06.163Z",
"updatedAt": "2021-12-14T11:41:06.163Z",
"language": "FR",
"ip": "91.183.156.86",
"fb_uid": "0",
"locality": "",
"login": "",
"number": "",
"phone": "",
"trigramme": "joao|pinto|joao@qualifio.com",
"zipcode": "",
"isEmailValid": 0
}""")

# Step 2 request body (with the optional callBackUrl of the doc's second example).
EXPORT_REQUEST = _doc("""{
"ruleType": "GDPR_ExportData",
"clientId": 2449,
"ruleTypePayload": {
"profiles": [99]
},
"justification": "example justification for export",
"callBackUrl": "https://your-service.com/your/params",
"userId": *****
}""")

# Step 2 result, verbatim.
RULE_NEW = _doc("""{
"ruleStatus": {
"status": "NEW",
"updatedAt": "2022-01-28T09:22:54.920Z",
"isAuto": false
},
"_id": "61f807fd94efba001186ec05",
"ruleType": "GDPR_ExportData",
"clientId": 2449,
"ruleTypePayload": {
"profiles": [
{
"crmId": 99,
"crmKey": "joao|pinto|joao@qualifio.com"
}
]
},
"justification": "example justification text",
"callBackUrl": "http://localhost:80/",
"userId": *****,
"createdAt": "2022-01-31T16:02:05.965Z",
"updatedAt": "2022-01-31T16:02:05.965Z",
"__v": 0
}""")

# Step 3 result, verbatim.
RULE_APPROVED = _doc("""{
"ruleStatus": {
"status": "APPROVED",
"updatedAt": "2022-01-31T16:08:42.128Z",
"isAuto": false,
"acceptedBy": ****,
"acceptedAt": "2022-01-31T16:08:42.128Z"
},
"_id": "61f807fd94efba001186ec05",
"ruleType": "GDPR_ExportData",
"clientId": 2449,
"ruleTypePayload": {
"profiles": [
99
],
"clientId": 2449,
"test": false
},
"justification": "example justification text",
"callBackUrl": "http://localhost:80/",
"userId": ****,
"createdAt": "2022-01-31T16:02:05.965Z",
"updatedAt": "2022-01-31T16:02:05.965Z",
"__v": 0
}""")

# Step 4 result, verbatim.
RULE_FINISHED = _doc("""{
"ruleStatus": {
"status": "FINISHED",
"updatedAt": "2022-01-31T16:08:46.110Z",
"isAuto": false,
"acceptedAt": "2022-01-31T16:08:42.128Z",
"acceptedBy": ****,
"finishedAt": "2022-01-31T16:08:46.110Z"
},
"_id": "61f807fd94efba001186ec05",
"archive": "61f8098ecd9aaf0011efe84a",
"ruleType": "GDPR_ExportData",
"clientId": 2449,
"ruleTypePayload": {
"profiles": [
{
"crmId": 99,
"crmKey": "joao|pinto|joao@qualifio.com"
}
]
},
"justification": "example justification text",
"callBackUrl": "http://localhost:80/",
"userId": ****,
"createdAt": "2022-01-31T16:02:05.965Z",
"updatedAt": "2022-01-31T16:02:05.965Z",
"__v": 0,
"user": {
"firstName": "Joao",
"lastName": "Pinto",
"email": "joao@qualifio.com",
"clientId": 2
}
}""")

# Step 5 result, verbatim.
ARCHIVE_LOCATION = _doc("""{
"downloadCount": 0,
"_id": "61f8098ecd9aaf0011efe84a",
"clientId": 2449,
"url": "https://api.qualif.io/v1/archive/export_client_2449_process_e187e74f-2bec-44db-a94b-6cf9f05e3a61/y9wGUDY1JRAFDX5XLhNe2Ez1R",
"download": [],
"__v": 0
}""")

SUBJECT = Subject(
    reference="DSAR-2024-0001",
    email=EMAIL,
    first_name="Joao",
    last_name="Pinto",
    justification="example justification for export",
)
MATCH_99 = Match(vendor_id="99", name="joao pinto", email=EMAIL, detail="joao|pinto|" + EMAIL)
AUTH = matchers.header_matcher({"x-api-token": TOKEN, "Accept": "application/json"})
CLIENT = matchers.query_param_matcher({"clientId": str(CLIENT_ID)})
ZIP_BYTES = b"PK\x03\x04" + bytes(range(256)) * 40 + b"PK\x05\x06end"


def rule(status: str, **extra: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(RULE_APPROVED))
    body["ruleStatus"]["status"] = status
    body.update(extra)
    return body


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(http, "_sleep", slept.append)
    return slept


@pytest.fixture
def rsps():
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def connector() -> QualifioConnector:
    return QualifioConnector(
        base_url=BASE, client_id=CLIENT_ID, api_token=TOKEN, default_dpo_id=DPO_ID
    )


class Checkpoints:
    """Records a deep copy of the state at every checkpoint call."""

    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def __call__(self, state: dict[str, Any]) -> None:
        self.saved.append(json.loads(json.dumps(state)))


def assert_safe(error: ConnectorError) -> None:
    text = f"{error} {error.message} {error!r}"
    assert TOKEN not in text
    assert EMAIL not in text
    assert "joao@" not in text


# --- discover -----------------------------------------------------------------------------


def test_discover_sends_documented_search_and_maps_profile(rsps, connector) -> None:
    rsps.get(
        PROFILES_URL,
        json=[PROFILE_99],
        match=[
            matchers.query_param_matcher({"clientId": "2449", "email": EMAIL}),
            AUTH,
        ],
    )
    assert connector.discover(SUBJECT) == [MATCH_99]
    sent = rsps.calls[0].request
    assert sent.method == "GET"
    assert sent.url.startswith(PROFILES_URL + "?")
    assert "firstName" not in sent.url and "lastName" not in sent.url


def test_discover_zero_profiles(rsps, connector) -> None:
    rsps.get(PROFILES_URL, json=[], match=[AUTH])
    assert connector.discover(SUBJECT) == []


def test_discover_several_profiles_deduplicated_in_vendor_order(rsps, connector) -> None:
    second = dict(PROFILE_99, id=120, firstName="Joao", lastName="", trigramme="joao||x")
    third = dict(PROFILE_99, id=7, firstName="", lastName="", trigramme="")
    rsps.get(PROFILES_URL, json=[PROFILE_99, second, PROFILE_99, third], match=[AUTH])
    matches = connector.discover(SUBJECT)
    assert [m.vendor_id for m in matches] == ["99", "120", "7"]
    assert matches[1] == Match(vendor_id="120", name="Joao", email=EMAIL, detail="joao||x")
    assert matches[2].name == ""


@pytest.mark.parametrize(
    "body",
    [{"id": 99}, [{"firstName": "joao"}], ["99"], [{"id": None}], [{"id": "abc"}], [{"id": True}]],
)
def test_discover_rejects_bodies_that_are_not_profile_lists(rsps, connector, body) -> None:
    rsps.get(PROFILES_URL, json=body)
    with pytest.raises(MalformedResponseError) as exc:
        connector.discover(SUBJECT)
    assert_safe(exc.value)


def test_discover_without_email_sends_nothing(rsps, connector) -> None:
    with pytest.raises(ConnectorError, match="e-mail"):
        connector.discover(Subject(reference="R", email="", first_name="Joao", last_name="P"))
    assert len(rsps.calls) == 0


# --- prepare ------------------------------------------------------------------------------


def test_prepare_creates_rule_with_documented_body(rsps, connector) -> None:
    rsps.post(
        EXPORT_URL,
        json=RULE_NEW,
        match=[CLIENT, AUTH, matchers.json_params_matcher(EXPORT_REQUEST)],
    )
    state: dict[str, Any] = {}
    saved = Checkpoints()
    note = connector.prepare(SUBJECT, [MATCH_99], state, callback_url=CALLBACK, checkpoint=saved)
    assert note == f"Qualifio export rule {RULE_ID} created (status NEW)"
    assert state == {"rule_id": RULE_ID, "rule_status": "NEW", "is_auto": False}
    assert saved.saved == [state]
    assert rsps.calls[0].request.headers["Content-Type"] == "application/json"


def test_prepare_without_callback_omits_callbackurl(rsps, connector) -> None:
    expected = {k: v for k, v in EXPORT_REQUEST.items() if k != "callBackUrl"}
    second = Match(vendor_id="120")
    expected["ruleTypePayload"] = {"profiles": [99, 120]}
    rsps.post(EXPORT_URL, json=RULE_NEW, match=[CLIENT, matchers.json_params_matcher(expected)])
    state: dict[str, Any] = {}
    connector.prepare(
        SUBJECT, [MATCH_99, second, MATCH_99], state, callback_url="", checkpoint=Checkpoints()
    )
    assert state["rule_id"] == RULE_ID


def test_prepare_auto_approved_rule(rsps, connector) -> None:
    body = rule("APPROVED")
    body["ruleStatus"]["isAuto"] = True
    rsps.post(EXPORT_URL, json=body)
    state: dict[str, Any] = {}
    note = connector.prepare(SUBJECT, [MATCH_99], state, callback_url="", checkpoint=Checkpoints())
    assert note == f"Qualifio auto-approved rule {RULE_ID} (isAuto): validate will be skipped"
    assert state["is_auto"] is True and state["rule_status"] == "APPROVED"


def test_prepare_resumed_with_rule_id_sends_nothing(rsps, connector) -> None:
    state = {"rule_id": RULE_ID, "rule_status": "NEW", "is_auto": False}
    saved = Checkpoints()
    assert (
        connector.prepare(SUBJECT, [MATCH_99], state, callback_url=CALLBACK, checkpoint=saved)
        is None
    )
    assert len(rsps.calls) == 0 and saved.saved == []


def test_prepare_without_rule_id_in_answer_is_malformed(rsps, connector) -> None:
    body = {k: v for k, v in RULE_NEW.items() if k != "_id"}
    rsps.post(EXPORT_URL, json=body)
    state: dict[str, Any] = {}
    saved = Checkpoints()
    with pytest.raises(MalformedResponseError):
        connector.prepare(SUBJECT, [MATCH_99], state, callback_url="", checkpoint=saved)
    assert state == {} and saved.saved == []


def test_prepare_without_status_still_records_rule(rsps, connector) -> None:
    rsps.post(EXPORT_URL, json={"_id": RULE_ID})
    state: dict[str, Any] = {}
    saved = Checkpoints()
    connector.prepare(SUBJECT, [MATCH_99], state, callback_url="", checkpoint=saved)
    assert saved.saved[-1]["rule_id"] == RULE_ID and state["rule_status"] is None


def test_prepare_requires_default_dpo(rsps) -> None:
    connector = QualifioConnector(client_id=CLIENT_ID, api_token=TOKEN, default_dpo_id=None)
    with pytest.raises(ConnectorError, match="DPO"):
        connector.prepare(SUBJECT, [MATCH_99], {}, callback_url="", checkpoint=Checkpoints())
    assert len(rsps.calls) == 0


def test_prepare_requires_a_match(rsps, connector) -> None:
    with pytest.raises(ConnectorError, match="profile"):
        connector.prepare(SUBJECT, [], {}, callback_url="", checkpoint=Checkpoints())
    assert len(rsps.calls) == 0


def test_prepare_500_is_not_retried(rsps, connector) -> None:
    rsps.post(EXPORT_URL, status=500, body="oops")
    state: dict[str, Any] = {}
    with pytest.raises(VendorUnavailableError) as exc:
        connector.prepare(SUBJECT, [MATCH_99], state, callback_url="", checkpoint=Checkpoints())
    assert len(rsps.calls) == 1
    assert state == {}
    assert_safe(exc.value)


def test_prepare_timeout_is_not_retried(rsps, connector) -> None:
    rsps.post(EXPORT_URL, body=requests.exceptions.ReadTimeout())
    with pytest.raises(VendorUnavailableError):
        connector.prepare(SUBJECT, [MATCH_99], {}, callback_url="", checkpoint=Checkpoints())
    assert len(rsps.calls) == 1


def test_prepare_429_is_retried_after_retry_after(rsps, connector, no_sleep) -> None:
    rsps.post(EXPORT_URL, status=429, headers={"Retry-After": "2"})
    rsps.post(EXPORT_URL, json=RULE_NEW)
    state: dict[str, Any] = {}
    connector.prepare(SUBJECT, [MATCH_99], state, callback_url="", checkpoint=Checkpoints())
    assert len(rsps.calls) == 2 and no_sleep == [2.0]
    assert state["rule_id"] == RULE_ID


# --- start (validate) ---------------------------------------------------------------------


def new_state(**extra: Any) -> dict[str, Any]:
    return {"rule_id": RULE_ID, "rule_status": "NEW", "is_auto": False, **extra}


def test_start_validates_once_with_approver(rsps, connector) -> None:
    rsps.put(
        VALIDATE_URL,
        json=RULE_APPROVED,
        match=[CLIENT, AUTH, matchers.json_params_matcher({"dpo": APPROVER_ID})],
    )
    state = new_state()
    saved = Checkpoints()
    note = connector.start(
        SUBJECT, [MATCH_99], state, approver_id=str(APPROVER_ID), checkpoint=saved
    )
    assert note == f"Qualifio rule {RULE_ID} validated by DPO {APPROVER_ID}"
    # validate_sent is persisted before the PUT goes out.
    assert saved.saved[0]["validate_sent"] is True and "validated" not in saved.saved[0]
    assert saved.saved[-1]["validated"] is True and saved.saved[-1]["rule_status"] == "APPROVED"
    assert len(rsps.calls) == 1
    # Second call: nothing sent.
    again = connector.start(SUBJECT, [], state, approver_id="1", checkpoint=saved)
    assert again == f"Qualifio rule {RULE_ID} was validated before a restart: not sent again"
    assert len(rsps.calls) == 1


def test_start_falls_back_to_default_dpo(rsps, connector) -> None:
    rsps.put(
        VALIDATE_URL, json=rule("FINISHED"), match=[matchers.json_params_matcher({"dpo": DPO_ID})]
    )
    state = new_state()
    note = connector.start(SUBJECT, [], state, approver_id=None, checkpoint=Checkpoints())
    assert note == f"Qualifio rule {RULE_ID} validated by DPO {DPO_ID}"
    assert state["rule_status"] == "FINISHED"


def test_start_rejects_non_numeric_approver_without_echoing_it(rsps, connector) -> None:
    with pytest.raises(ConnectorError) as exc:
        connector.start(SUBJECT, [], new_state(), approver_id=EMAIL, checkpoint=Checkpoints())
    assert_safe(exc.value)
    assert len(rsps.calls) == 0


def test_start_skips_validate_for_auto_approved_rule(rsps, connector) -> None:
    state = new_state(is_auto=True, rule_status="APPROVED")
    saved = Checkpoints()
    note = connector.start(SUBJECT, [], state, approver_id="1", checkpoint=saved)
    assert note == f"validate skipped: Qualifio auto-approved rule {RULE_ID} (isAuto)"
    assert state["validated"] is True and saved.saved[-1]["validated"] is True
    assert len(rsps.calls) == 0


def test_start_after_crash_checks_rule_and_does_not_validate_again(rsps, connector) -> None:
    rsps.get(RULE_URL, json=RULE_APPROVED, match=[CLIENT, AUTH])
    state = new_state(validate_sent=True)
    saved = Checkpoints()
    note = connector.start(SUBJECT, [], state, approver_id="1", checkpoint=saved)
    assert "validate not repeated" in (note or "")
    assert state["validated"] is True and saved.saved[-1]["validated"] is True
    assert [c.request.method for c in rsps.calls] == ["GET"]


def test_start_after_crash_validates_if_rule_still_new(rsps, connector) -> None:
    rsps.get(RULE_URL, json=RULE_NEW, match=[CLIENT, AUTH])
    rsps.put(VALIDATE_URL, json=RULE_APPROVED, match=[CLIENT, AUTH])
    state = new_state(validate_sent=True)
    connector.start(SUBJECT, [], state, approver_id="1", checkpoint=Checkpoints())
    assert [c.request.method for c in rsps.calls] == ["GET", "PUT"]
    assert state["validated"] is True


def test_start_validate_500_is_not_retried_then_resumes_safely(rsps, connector) -> None:
    rsps.put(VALIDATE_URL, status=500)
    state = new_state()
    saved = Checkpoints()
    with pytest.raises(VendorUnavailableError):
        connector.start(SUBJECT, [], state, approver_id="1", checkpoint=saved)
    assert len(rsps.calls) == 1
    assert saved.saved[-1]["validate_sent"] is True and not state.get("validated")
    # The PUT had in fact gone through: the retry finds the rule APPROVED and sends no PUT.
    rsps.get(RULE_URL, json=RULE_APPROVED)
    connector.start(SUBJECT, [], state, approver_id="1", checkpoint=saved)
    assert [c.request.method for c in rsps.calls] == ["PUT", "GET"]
    assert state["validated"] is True


def test_start_validate_429_is_retried_after_retry_after(rsps, connector, no_sleep) -> None:
    # A 429 means Qualifio did not process the validate: waiting and sending it again is safe.
    rsps.put(VALIDATE_URL, status=429, headers={"Retry-After": "5"})
    rsps.put(VALIDATE_URL, json=RULE_APPROVED)
    state = new_state()
    connector.start(SUBJECT, [], state, approver_id="1", checkpoint=Checkpoints())
    assert len(rsps.calls) == 2 and no_sleep == [5.0]
    assert state["validated"] is True


def test_start_validate_500_is_not_retried_inline(rsps, connector, no_sleep) -> None:
    # A 5xx may hide a processed validate: never repeated blindly (checked by GET next time).
    rsps.put(VALIDATE_URL, status=500)
    state = new_state()
    with pytest.raises(VendorUnavailableError):
        connector.start(SUBJECT, [], state, approver_id="1", checkpoint=Checkpoints())
    assert len(rsps.calls) == 1 and no_sleep == []
    assert state["validate_sent"] is True and not state.get("validated")


def test_start_validate_answer_still_new_is_an_error(rsps, connector) -> None:
    rsps.put(VALIDATE_URL, json=RULE_NEW)
    state = new_state()
    with pytest.raises(VendorError, match="did not approve"):
        connector.start(SUBJECT, [], state, approver_id="1", checkpoint=Checkpoints())
    assert not state.get("validated") and state["validate_sent"] is True


def test_start_validate_answer_rejected_is_recorded(rsps, connector) -> None:
    rsps.put(VALIDATE_URL, json=rule("REJECTED", reason="no consent"))
    state = new_state()
    with pytest.raises(VendorError, match="no consent"):
        connector.start(SUBJECT, [], state, approver_id="1", checkpoint=Checkpoints())
    assert state["validated"] is True  # processed at Qualifio: never sent again


def test_start_without_rule_sends_nothing(rsps, connector) -> None:
    with pytest.raises(ConnectorError, match="prepare"):
        connector.start(SUBJECT, [], {}, approver_id="1", checkpoint=Checkpoints())
    assert len(rsps.calls) == 0


# --- poll ---------------------------------------------------------------------------------


def test_poll_finished_is_ready_with_archive(rsps, connector) -> None:
    rsps.get(RULE_URL, json=RULE_FINISHED, match=[CLIENT, AUTH])
    state = new_state(validated=True)
    result = connector.poll(state, checkpoint=Checkpoints())
    assert result.phase is Phase.READY
    assert result.detail == f"Qualifio rule {RULE_ID}: FINISHED"
    assert result.archives == [ArchiveRef(key=ARCHIVE_ID, filename=f"qualifio-rule-{RULE_ID}.zip")]
    assert state["rule_status"] == "FINISHED"


def test_poll_finished_without_archive_is_malformed(rsps, connector) -> None:
    rsps.get(RULE_URL, json=rule("FINISHED"))
    with pytest.raises(MalformedResponseError):
        connector.poll(new_state(), checkpoint=Checkpoints())


@pytest.mark.parametrize(
    "status", ["NEW", "APPROVED", "PENDING", "IN_PROGRESS", "PROCESSING", "RUNNING"]
)
def test_poll_in_progress_statuses_are_running(rsps, connector, status) -> None:
    rsps.get(RULE_URL, json=rule(status))
    state = new_state()
    result = connector.poll(state, checkpoint=Checkpoints())
    assert result.phase is Phase.RUNNING
    assert result.detail == f"Qualifio rule {RULE_ID}: {status}"
    assert result.archives == [] and state["rule_status"] == status


@pytest.mark.parametrize(
    "status", ["ERROR", "FAILED", "REJECTED", "CANCELLED", "CANCELED", "EXPIRED"]
)
def test_poll_failure_statuses_are_failed_with_reason(rsps, connector, status) -> None:
    body = rule(status)
    body["ruleStatus"]["message"] = f"export aborted for {EMAIL}"
    rsps.get(RULE_URL, json=body)
    result = connector.poll(new_state(), checkpoint=Checkpoints())
    assert result.phase is Phase.FAILED
    assert result.detail.startswith(f"Qualifio rule {RULE_ID}: {status} (export aborted")
    assert EMAIL not in result.detail


def test_poll_failure_without_reason(rsps, connector) -> None:
    rsps.get(RULE_URL, json=rule("ERROR"))
    result = connector.poll(new_state(), checkpoint=Checkpoints())
    assert result.detail == f"Qualifio rule {RULE_ID}: ERROR"


def test_poll_unknown_status_needs_a_human(rsps, connector) -> None:
    rsps.get(RULE_URL, json=rule("ARCHIVED_SOMEWHERE"))
    with pytest.raises(VendorError) as exc:
        connector.poll(new_state(), checkpoint=Checkpoints())
    assert exc.value.message == "Qualifio reported an unknown rule status 'ARCHIVED_SOMEWHERE'"
    assert type(exc.value) is VendorError


def test_poll_missing_status_is_malformed(rsps, connector) -> None:
    rsps.get(RULE_URL, json={"_id": RULE_ID})
    with pytest.raises(MalformedResponseError):
        connector.poll(new_state(), checkpoint=Checkpoints())


# --- transport errors (shared plumbing as seen through the connector) ------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AuthenticationError), (403, AuthenticationError), (404, NotFoundError)],
)
def test_http_errors_are_typed(rsps, connector, status, error) -> None:
    rsps.get(PROFILES_URL, status=status, json={"message": "nope"})
    with pytest.raises(error) as exc:
        connector.discover(SUBJECT)
    assert exc.value.status_code == status
    assert "Qualifio" in exc.value.message
    assert_safe(exc.value)
    assert len(rsps.calls) == 1


def test_400_is_vendor_error(rsps, connector) -> None:
    rsps.post(EXPORT_URL, status=400, json={"message": "bad"})
    with pytest.raises(VendorError) as exc:
        connector.prepare(SUBJECT, [MATCH_99], {}, callback_url="", checkpoint=Checkpoints())
    assert exc.value.status_code == 400


def test_429_short_retry_after_then_success(rsps, connector, no_sleep) -> None:
    rsps.get(RULE_URL, status=429, headers={"Retry-After": "3"})
    rsps.get(RULE_URL, json=RULE_APPROVED)
    assert connector.poll(new_state(), checkpoint=Checkpoints()).phase is Phase.RUNNING
    assert no_sleep == [3.0] and len(rsps.calls) == 2


def test_429_long_retry_after_is_rate_limited(rsps, connector, no_sleep) -> None:
    rsps.get(PROFILES_URL, status=429, headers={"Retry-After": "120"})
    with pytest.raises(RateLimitedError) as exc:
        connector.discover(SUBJECT)
    assert exc.value.retry_after == 120.0 and exc.value.retryable
    assert len(rsps.calls) == 1 and no_sleep == []
    assert_safe(exc.value)


def test_5xx_then_success_for_get(rsps, connector) -> None:
    rsps.get(RULE_URL, status=500)
    rsps.get(RULE_URL, status=503)
    rsps.get(RULE_URL, json=RULE_FINISHED)
    assert connector.poll(new_state(), checkpoint=Checkpoints()).phase is Phase.READY
    assert len(rsps.calls) == 3


@pytest.mark.parametrize(
    "timeout", [requests.exceptions.ConnectTimeout, requests.exceptions.ReadTimeout]
)
def test_get_timeouts_become_unavailable_after_retries(rsps, connector, timeout) -> None:
    rsps.get(PROFILES_URL, body=timeout())
    with pytest.raises(VendorUnavailableError) as exc:
        connector.discover(SUBJECT)
    assert exc.value.retryable
    assert len(rsps.calls) == 4
    assert_safe(exc.value)


def test_html_instead_of_json_is_malformed(rsps, connector) -> None:
    rsps.get(
        PROFILES_URL,
        body="<html><body>Maintenance</body></html>",
        content_type="text/html",
    )
    with pytest.raises(MalformedResponseError) as exc:
        connector.discover(SUBJECT)
    assert "text/html" in exc.value.message
    assert_safe(exc.value)


def test_truncated_json_is_malformed(rsps, connector) -> None:
    rsps.get(RULE_URL, body=json.dumps(RULE_FINISHED)[:120], content_type="application/json")
    with pytest.raises(MalformedResponseError):
        connector.poll(new_state(), checkpoint=Checkpoints())


def test_api_redirect_is_not_followed(rsps, connector) -> None:
    rsps.get(PROFILES_URL, status=302, headers={"Location": "https://evil.example.com/steal"})
    with pytest.raises(VendorError, match="redirect"):
        connector.discover(SUBJECT)
    assert len(rsps.calls) == 1


# --- download -----------------------------------------------------------------------------


def test_download_streams_exact_bytes(rsps, connector) -> None:
    rsps.get(LOCATION_URL, json=ARCHIVE_LOCATION, match=[CLIENT, AUTH])
    rsps.get(
        ARCHIVE_URL,
        body=ZIP_BYTES,
        content_type="application/zip",
        auto_calculate_content_length=True,
        match=[matchers.header_matcher({"x-api-token": TOKEN})],
    )
    sink = io.BytesIO()
    info = connector.download(
        new_state(), ArchiveRef(key=ARCHIVE_ID, filename="qualifio-rule.zip"), sink
    )
    assert sink.getvalue() == ZIP_BYTES
    assert info.content_type == "application/zip"
    assert info.announced_size == len(ZIP_BYTES)


def test_download_defaults_content_type(rsps, connector) -> None:
    rsps.get(LOCATION_URL, json=ARCHIVE_LOCATION)
    rsps.get(ARCHIVE_URL, body=b"abc", content_type=None)
    sink = io.BytesIO()
    info = connector.download(new_state(), ArchiveRef(key=ARCHIVE_ID, filename="x.zip"), sink)
    assert info.content_type == "application/zip" and sink.getvalue() == b"abc"


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example.com/v1/archive/x",
        "http://api.qualif.io/v1/archive/x",
        "https://api.qualif.io:8443/v1/archive/x",
        "file:///etc/passwd",
    ],
)
def test_download_from_foreign_host_is_refused(rsps, connector, url) -> None:
    rsps.get(LOCATION_URL, json=dict(ARCHIVE_LOCATION, url=url))
    with pytest.raises(DownloadRefusedError) as exc:
        connector.download(new_state(), ArchiveRef(key=ARCHIVE_ID, filename="x.zip"), io.BytesIO())
    assert [c.request.url.split("?")[0] for c in rsps.calls] == [LOCATION_URL]
    assert_safe(exc.value)


def test_download_redirect_to_foreign_host_is_refused(rsps, connector) -> None:
    rsps.get(LOCATION_URL, json=ARCHIVE_LOCATION)
    rsps.get(ARCHIVE_URL, status=302, headers={"Location": "https://evil.example.com/a.zip"})
    with pytest.raises(DownloadRefusedError):
        connector.download(new_state(), ArchiveRef(key=ARCHIVE_ID, filename="x.zip"), io.BytesIO())
    assert len(rsps.calls) == 2


def test_download_follows_same_host_redirect(rsps, connector) -> None:
    rsps.get(LOCATION_URL, json=ARCHIVE_LOCATION)
    rsps.get(ARCHIVE_URL, status=302, headers={"Location": "/v1/archive/final.zip"})
    rsps.get(f"{BASE}/v1/archive/final.zip", body=b"zipdata")
    sink = io.BytesIO()
    connector.download(new_state(), ArchiveRef(key=ARCHIVE_ID, filename="x.zip"), sink)
    assert sink.getvalue() == b"zipdata"


def test_download_private_address_refused_in_production(rsps, monkeypatch) -> None:
    connector = QualifioConnector(
        client_id=CLIENT_ID, api_token=TOKEN, default_dpo_id=DPO_ID, allow_private_hosts=False
    )
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, port: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.8", 0))],
    )
    rsps.get(LOCATION_URL, json=ARCHIVE_LOCATION)
    with pytest.raises(DownloadRefusedError):
        connector.download(new_state(), ArchiveRef(key=ARCHIVE_ID, filename="x.zip"), io.BytesIO())
    assert len(rsps.calls) == 1


def test_download_over_announced_limit_is_refused(rsps) -> None:
    connector = QualifioConnector(
        client_id=CLIENT_ID, api_token=TOKEN, default_dpo_id=DPO_ID, max_archive_bytes=1000
    )
    rsps.get(LOCATION_URL, json=ARCHIVE_LOCATION)
    rsps.get(ARCHIVE_URL, body=ZIP_BYTES, auto_calculate_content_length=True)
    sink = io.BytesIO()
    with pytest.raises(DownloadRefusedError):
        connector.download(new_state(), ArchiveRef(key=ARCHIVE_ID, filename="x.zip"), sink)
    assert sink.getvalue() == b""


def test_download_over_streamed_limit_is_refused(rsps) -> None:
    connector = QualifioConnector(
        client_id=CLIENT_ID, api_token=TOKEN, default_dpo_id=DPO_ID, max_archive_bytes=1000
    )
    rsps.get(LOCATION_URL, json=ARCHIVE_LOCATION)
    rsps.get(ARCHIVE_URL, body=ZIP_BYTES)  # no Content-Length announced
    with pytest.raises(DownloadRefusedError):
        connector.download(new_state(), ArchiveRef(key=ARCHIVE_ID, filename="x.zip"), io.BytesIO())


def test_download_location_without_url_is_malformed(rsps, connector) -> None:
    rsps.get(LOCATION_URL, json={k: v for k, v in ARCHIVE_LOCATION.items() if k != "url"})
    with pytest.raises(MalformedResponseError):
        connector.download(new_state(), ArchiveRef(key=ARCHIVE_ID, filename="x.zip"), io.BytesIO())


def test_download_archive_404(rsps, connector) -> None:
    rsps.get(LOCATION_URL, json=ARCHIVE_LOCATION)
    rsps.get(ARCHIVE_URL, status=404)
    with pytest.raises(NotFoundError) as exc:
        connector.download(new_state(), ArchiveRef(key=ARCHIVE_ID, filename="x.zip"), io.BytesIO())
    assert_safe(exc.value)


def test_download_escapes_vendor_ids_in_path(rsps, connector) -> None:
    rsps.get(f"{RULE_URL}/archive/..%2F..%2Fprofiles", json=ARCHIVE_LOCATION)
    rsps.get(ARCHIVE_URL, body=b"z")
    connector.download(new_state(), ArchiveRef(key="../../profiles", filename="x"), io.BytesIO())


# --- secrets ------------------------------------------------------------------------------


def test_token_never_in_repr(connector) -> None:
    assert TOKEN not in repr(connector)
    assert TOKEN not in str(vars(connector).get("api_token", ""))


def test_bad_configuration_is_reported_without_token() -> None:
    with pytest.raises(ConnectorError) as exc:
        QualifioConnector(client_id="abc", api_token=TOKEN, default_dpo_id=None)  # type: ignore[arg-type]
    assert_safe(exc.value)
    with pytest.raises(ConnectorError):
        QualifioConnector(client_id=CLIENT_ID, api_token="", default_dpo_id=None)
