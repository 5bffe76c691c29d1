"""Salesforce connector against the vendor doc's exact requests and payloads (no Django, no DB).

The POST and GET envelopes below are the examples of
shared/vendor-docs/salesforce-portability-api.txt, verbatim apart from the doc's curly quotes.
The token endpoint answers like Salesforce's OAuth server; the instance URL is the host of the
doc's policyFileUrl so the download's same-host rule holds for the doc's own example.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
import requests
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
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
from connectors.salesforce import (
    SalesforceConnector,
    is_valid_salesforce_id,
    object_type,
    same_salesforce_id,
    to_18,
)

LOGIN = "https://login.salesforce.com"
TOKEN_URL = f"{LOGIN}/services/oauth2/token"
INSTANCE = "https://na45.stmfb.stm.salesforce.com"
CONSUMER_KEY = "3MVG9consumer-key-abc"
CONSUMER_SECRET = "s3cr3t-consumer-secret-value"
USERNAME = "integration@acme.example"
ACCESS_TOKEN = "00DTOKENFIRST!AQ0AQsecretaccesstoken1"
ACCESS_TOKEN_2 = "00DTOKENSECOND!AQ0AQsecretaccesstoken2"
POLICY = "DSAR_Portability"
EMAIL = "o'brien@example.com"
CONTACT_15 = "003D000000QEq3m"
CONTACT_18 = "003D000000QEq3mIAD"
LEAD_18 = "00Q5e00000AbCdEEAV"
FILE_ID = "0jeS70000004CBO"
FILE_URL = f"{INSTANCE}/servlet/policyFileDownload?file={FILE_ID}"
EXECUTE_URL = f"{INSTANCE}/services/data/v62.0/consent/dsr/rtp/execute"
QUERY_URL = f"{INSTANCE}/services/data/v62.0/query/"

# POST Example → Response, verbatim.
POST_RESPONSE = """{ "status" : "SUCCESS", "warnings" : [ ], "result" : { "policyFileStatus" : \
"In Progress", "policyFileUrl" : \
"https://na45.stmfb.stm.salesforce.com/servlet/policyFileDownload?file=0jeS70000004CBO", \
"policyFileId" : "0jeS70000004CBO" } }"""
# GET Example → Response, verbatim (it shows a Failed file).
GET_RESPONSE_FAILED = """{ "status" : "SUCCESS", "warnings" : [ ], "result" : { \
"policyFileStatus" : "Failed", "policyFileUrl" : \
"https://na45.stmfb.stm.salesforce.com/servlet/policyFileDownload?file=0jeS70000004CBO", \
"policyFileId" : "0jeS70000004CBO" } }"""


def _get_response(status: str, warnings: list[str] | None = None) -> str:
    body = json.loads(GET_RESPONSE_FAILED)
    body["result"]["policyFileStatus"] = status
    body["warnings"] = warnings or []
    return json.dumps(body)


def _token_body(token: str = ACCESS_TOKEN) -> dict[str, Any]:
    return {
        "access_token": token,
        "signature": "c2lnbmF0dXJl",
        "scope": "api",
        "instance_url": INSTANCE,
        "id": f"{LOGIN}/id/00Dxx0000001gPLEAY/005xx000001SwiUAAS",
        "token_type": "Bearer",
        "issued_at": "1715000000000",
    }


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(http, "_sleep", slept.append)
    return slept


@pytest.fixture
def rsps() -> Any:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture(scope="module")
def keypair() -> tuple[str, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def make(**overrides: Any) -> SalesforceConnector:
    options: dict[str, Any] = {
        "login_url": LOGIN,
        "client_id": CONSUMER_KEY,
        "client_secret": CONSUMER_SECRET,
        "policy_name": POLICY,
    }
    options.update(overrides)
    return SalesforceConnector(**options)


def add_token(rsps: responses.RequestsMock, token: str = ACCESS_TOKEN, url: str = TOKEN_URL):
    return rsps.post(url, json=_token_body(token))


def executing_state(**execution: Any) -> dict[str, Any]:
    entry = {
        "policy_file_id": FILE_ID,
        "policy_file_url": FILE_URL,
        "status": "In Progress",
        "warnings": [],
    }
    entry.update(execution)
    return {"executions": {CONTACT_18: entry}}


class Checkpoints:
    """Records a JSON snapshot of every checkpointed state (what the pipeline would persist)."""

    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def __call__(self, state: dict[str, Any]) -> None:
        self.saved.append(json.loads(json.dumps(state)))


SUBJECT = Subject(reference="DSAR-2024-0001", email=EMAIL, first_name="Siobhan")
MATCH = Match(vendor_id=CONTACT_18, email=EMAIL, detail="Contact")


# --- record ids ---------------------------------------------------------------------------


# Suffixes worked out by hand: per 5-character chunk, bit i is set when character i is an
# uppercase letter, and the sum indexes "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345".
@pytest.mark.parametrize(
    ("id15", "id18"),
    [
        ("001A0000006Vm9r", "001A0000006Vm9rIAC"),  # A at 3 → 8=I; none → A; V at 1 → 2=C
        ("003D000000QEq3m", "003D000000QEq3mIAD"),  # Q,E at 0,1 → 3=D
        ("00570000001ZwTi", "00570000001ZwTiAAK"),
        ("0010X00004ZrTqD", "0010X00004ZrTqDQAV"),
        ("00QABCDEFGHIJKL", "00QABCDEFGHIJKL255"),
        ("0PK000000000001", "0PK000000000001GAA"),
        ("001000000000000", "001000000000000AAA"),
    ],
)
def test_to_18(id15: str, id18: str) -> None:
    assert to_18(id15) == id18
    assert to_18(id18) == id18
    assert is_valid_salesforce_id(id15)
    assert is_valid_salesforce_id(id18)
    assert is_valid_salesforce_id(id18[:15] + id18[15:].lower())  # the suffix is case-blind
    assert same_salesforce_id(id15, id18)


@pytest.mark.parametrize(
    "value",
    ["", "003D000000QEq3", "003D000000QEq3mI", "003D000000QEq3mIAC", "003D000000QEq3-", None],
)
def test_invalid_ids(value: Any) -> None:
    assert not is_valid_salesforce_id(value)
    with pytest.raises(ValueError):
        to_18(value)


def test_ids_compare_case_insensitively_via_18_chars() -> None:
    assert same_salesforce_id("003D000000QEq3m", "003D000000QEq3mIAD")
    assert same_salesforce_id("003D000000QEq3mIAD", "003D000000QEq3miad")
    # Two 15-character ids that differ only by case are two different records.
    assert not same_salesforce_id("003D000000QEq3m", "003d000000QEq3m")
    assert not same_salesforce_id("003D000000QEq3m", "not-an-id")


@pytest.mark.parametrize(
    ("record_id", "kind"),
    [
        ("001A0000006Vm9r", "Account"),
        (CONTACT_18, "Contact"),
        (LEAD_18, "Lead"),
        ("00570000001ZwTi", "User"),
        ("0PK000000000001", "Individual"),
        ("a0B000000000001", "Record"),
    ],
)
def test_object_type(record_id: str, kind: str) -> None:
    assert object_type(record_id) == kind


# --- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"username": USERNAME, "private_key": "pem"}, "keep exactly one"),
        ({"client_secret": None}, "no login configured"),
        ({"client_secret": None, "username": USERNAME}, "both a username and a private key"),
        ({"api_version": "49.0"}, "at least 50.0"),
        ({"api_version": "v62.0"}, "expected NN.N"),
        ({"api_version": "62"}, "expected NN.N"),
        ({"login_url": "http://login.salesforce.com"}, "login URL"),
        ({"login_url": "https://login.salesforce.com/services/oauth2/token"}, "login URL"),
        ({"policy_name": ""}, "policy name"),
        ({"ca_file": "/nonexistent/ca.pem"}, "CA bundle"),
    ],
)
def test_configuration_errors(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConnectorError) as caught:
        make(**overrides)
    assert fragment in caught.value.message
    assert CONSUMER_SECRET not in caught.value.message


def test_repr_and_constructor_keep_secrets_out(tmp_path: Any) -> None:
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text("-----BEGIN CERTIFICATE-----\n")
    connector = make(login_url="https://127.0.0.1:8702/", ca_file=str(ca_file))
    assert connector.session.verify == str(ca_file)
    assert connector.login_url == "https://127.0.0.1:8702"
    assert CONSUMER_SECRET not in repr(connector)
    assert repr(connector) == "<SalesforceConnector 127.0.0.1 (client credentials, API v62.0)>"


# --- OAuth ----------------------------------------------------------------------------------


def test_client_credentials_token_request(rsps: responses.RequestsMock) -> None:
    token = add_token(rsps)
    rsps.get(EXECUTE_URL, body=POST_RESPONSE, content_type="application/json")
    make().poll(executing_state(), checkpoint=lambda state: None)

    request = token.calls[0].request
    assert parse_qs(request.body) == {"grant_type": ["client_credentials"]}
    expected = base64.b64encode(f"{CONSUMER_KEY}:{CONSUMER_SECRET}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {expected}"
    rest = rsps.calls[1].request
    assert rest.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"


@pytest.mark.parametrize(
    "login_url",
    [
        LOGIN,
        "https://test.salesforce.com",
        "https://acme.my.salesforce.com",
        "https://127.0.0.1:8702",
    ],
)
def test_jwt_bearer_token_request(
    rsps: responses.RequestsMock, keypair: tuple[str, bytes], login_url: str
) -> None:
    private_pem, public_pem = keypair
    token = add_token(rsps, url=f"{login_url}/services/oauth2/token")
    rsps.get(EXECUTE_URL, body=POST_RESPONSE, content_type="application/json")
    connector = make(
        login_url=login_url, client_secret=None, username=USERNAME, private_key=private_pem
    )
    before = int(time.time())
    connector.poll(executing_state(), checkpoint=lambda state: None)

    form = parse_qs(token.calls[0].request.body)
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    assert "Authorization" not in token.calls[0].request.headers
    claims = jwt.decode(form["assertion"][0], public_pem, algorithms=["RS256"], audience=login_url)
    assert claims["iss"] == CONSUMER_KEY
    assert claims["sub"] == USERNAME
    assert claims["aud"] == login_url
    assert before + 170 <= claims["exp"] <= int(time.time()) + 181
    assert jwt.get_unverified_header(form["assertion"][0])["alg"] == "RS256"


def test_jwt_with_unusable_key_is_an_authentication_error(rsps: responses.RequestsMock) -> None:
    connector = make(client_secret=None, username=USERNAME, private_key="not a pem")
    with pytest.raises(AuthenticationError, match="private key could not be used"):
        connector.discover(SUBJECT)


def test_token_endpoint_error(rsps: responses.RequestsMock) -> None:
    rsps.post(
        TOKEN_URL,
        status=400,
        json={"error": "invalid_client", "error_description": "invalid client credentials"},
    )
    with pytest.raises(AuthenticationError) as caught:
        make().poll(executing_state(), checkpoint=lambda state: None)
    message = caught.value.message
    assert "invalid_client: invalid client credentials" in message
    assert "client credentials" in message
    assert CONSUMER_SECRET not in message and CONSUMER_KEY not in message


def test_token_endpoint_html_outage(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, status=503, body="<html>Maintenance</html>", content_type="text/html")
    with pytest.raises(VendorUnavailableError, match="HTTP 503"):
        make().poll(executing_state(), checkpoint=lambda state: None)


def test_token_response_without_instance_url(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json={"access_token": ACCESS_TOKEN})
    with pytest.raises(MalformedResponseError, match="instance_url") as caught:
        make().poll(executing_state(), checkpoint=lambda state: None)
    assert ACCESS_TOKEN not in caught.value.message


def test_expired_session_logs_in_again_and_retries(rsps: responses.RequestsMock) -> None:
    tokens = [
        rsps.post(TOKEN_URL, json=_token_body(ACCESS_TOKEN)),
        rsps.post(TOKEN_URL, json=_token_body(ACCESS_TOKEN_2)),
    ]
    expired = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    rsps.get(EXECUTE_URL, status=401, json=expired)
    rsps.get(EXECUTE_URL, body=_get_response("In Progress"), content_type="application/json")
    result = make().poll(executing_state(), checkpoint=lambda s: None)

    assert result.phase is Phase.RUNNING
    assert [len(t.calls) for t in tokens] == [1, 1]
    rest = [c.request for c in rsps.calls if "/services/data/" in c.request.url]
    assert [r.headers["Authorization"] for r in rest] == [
        f"Bearer {ACCESS_TOKEN}",
        f"Bearer {ACCESS_TOKEN_2}",
    ]


def test_expired_twice_is_an_authentication_error(rsps: responses.RequestsMock) -> None:
    expired = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    token = add_token(rsps)
    rsps.get(EXECUTE_URL, status=401, json=expired)
    with pytest.raises(AuthenticationError, match="INVALID_SESSION_ID") as caught:
        make().poll(executing_state(), checkpoint=lambda s: None)
    assert len(token.calls) == 2
    assert ACCESS_TOKEN not in caught.value.message


# --- discover ------------------------------------------------------------------------------


def _soql(sobject: str) -> str:
    return (
        f"SELECT Id, FirstName, LastName, Email FROM {sobject} "  # noqa: S608
        "WHERE Email = 'o\\'brien@example.com'"
    )


def _records(*records: dict[str, Any]) -> dict[str, Any]:
    return {"totalSize": len(records), "done": True, "records": list(records)}


def _record(sobject: str, record_id: str, first: str, last: str) -> dict[str, Any]:
    return {
        "attributes": {
            "type": sobject,
            "url": f"/services/data/v62.0/sobjects/{sobject}/{record_id}",
        },
        "Id": record_id,
        "FirstName": first,
        "LastName": last,
        "Email": EMAIL,
    }


def test_discover_by_salesforce_id_makes_no_call(rsps: responses.RequestsMock) -> None:
    subject = Subject(reference="R1", email=EMAIL, salesforce_id=CONTACT_15)
    assert make().discover(subject) == [Match(vendor_id=CONTACT_18, email=EMAIL, detail="Contact")]
    person = Subject(reference="R2", email=EMAIL, salesforce_id="001A0000006Vm9r")
    assert make().discover(person)[0].detail == "Account"
    assert len(rsps.calls) == 0


def test_discover_by_email_escapes_the_quote_and_deduplicates(
    rsps: responses.RequestsMock,
) -> None:
    add_token(rsps)
    contact = _record("Contact", CONTACT_18, "Siobhan", "O'Brien")
    rsps.get(
        QUERY_URL,
        match=[matchers.query_param_matcher({"q": _soql("Contact")})],
        json=_records(contact, contact),
        headers={"Sforce-Limit-Info": "api-usage=24/15000"},
    )
    rsps.get(
        QUERY_URL,
        match=[matchers.query_param_matcher({"q": _soql("Lead")})],
        json=_records(_record("Lead", LEAD_18, "", "O'Brien")),
        headers={"Sforce-Limit-Info": "api-usage=25/15000"},
    )
    rsps.get(
        QUERY_URL,
        match=[matchers.query_param_matcher({"q": _soql("User")})],
        json=_records(),
        headers={"Sforce-Limit-Info": "api-usage=26/15000"},
    )
    connector = make()
    matches = connector.discover(SUBJECT)

    assert matches == [
        Match(vendor_id=CONTACT_18, name="Siobhan O'Brien", email=EMAIL, detail="Contact"),
        Match(vendor_id=LEAD_18, name="O'Brien", email=EMAIL, detail="Lead"),
    ]
    assert connector.api_usage == "api-usage=26/15000"


def test_discover_follows_next_records_url(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    next_url = "/services/data/v62.0/query/01gD0000002HU6KIAW-2000"
    rsps.get(
        QUERY_URL,
        match=[matchers.query_param_matcher({"q": _soql("Contact")})],
        json={
            "totalSize": 2,
            "done": False,
            "nextRecordsUrl": next_url,
            "records": [_record("Contact", CONTACT_18, "A", "B")],
        },
    )
    rsps.get(
        f"{INSTANCE}{next_url}",
        json=_records(_record("Contact", "003D000000QEq3nIAD", "C", "D")),
    )
    rsps.get(QUERY_URL, match=[matchers.query_param_matcher({"q": _soql("Lead")})], json=_records())
    rsps.get(QUERY_URL, match=[matchers.query_param_matcher({"q": _soql("User")})], json=_records())
    assert [m.vendor_id for m in make().discover(SUBJECT)] == [CONTACT_18, "003D000000QEq3nIAD"]


def test_malformed_query_error_array_without_the_email(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(
        QUERY_URL,
        status=400,
        json=[
            {
                "message": "\nWHERE Email = 'o\\'brien@example.com'\n ^\nERROR at Row:1:Column:52\n"
                "unexpected token: brien",
                "errorCode": "MALFORMED_QUERY",
            }
        ],
    )
    with pytest.raises(VendorError) as caught:
        make().discover(SUBJECT)
    message = caught.value.message
    assert message.startswith("Salesforce rejected GET /services/data/v62.0/query (HTTP 400): ")
    assert "MALFORMED_QUERY: WHERE Email = [email] ^ ERROR at Row:1:Column:52" in message
    assert "brien@" not in message and "example.com" not in message
    assert caught.value.status_code == 400


# --- prepare / start ---------------------------------------------------------------------


def test_prepare_is_a_no_op(rsps: responses.RequestsMock) -> None:
    state: dict[str, Any] = {}
    assert make().prepare(SUBJECT, [MATCH], state, callback_url="x", checkpoint=None) is None  # type: ignore[arg-type]
    assert state == {}


def test_start_executes_with_the_documented_body(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    execute = rsps.post(
        EXECUTE_URL,
        body=POST_RESPONSE,
        content_type="application/json",
        headers={"Sforce-Limit-Info": "api-usage=25/15000"},
    )
    state: dict[str, Any] = {}
    checkpoints = Checkpoints()
    connector = make()
    note = connector.start(SUBJECT, [MATCH], state, approver_id=None, checkpoint=checkpoints)

    assert note == "Salesforce portability request executed for 1 record(s)"
    request = execute.calls[0].request
    assert request.url == EXECUTE_URL
    assert json.loads(request.body) == {"dataSubjectId": CONTACT_18, "policyName": POLICY}
    assert request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    execution = state["executions"][CONTACT_18]
    assert execution["policy_file_id"] == FILE_ID
    assert execution["policy_file_url"] == FILE_URL
    assert execution["status"] == "In Progress"
    assert execution["warnings"] == []
    assert state["api_usage"] == connector.api_usage == "api-usage=25/15000"
    assert checkpoints.saved == [state]


def test_api_version_is_pinned(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    execute = rsps.post(
        f"{INSTANCE}/services/data/v58.0/consent/dsr/rtp/execute",
        body=POST_RESPONSE,
        content_type="application/json",
    )
    make(api_version="58.0").start(
        SUBJECT, [MATCH], {}, approver_id=None, checkpoint=lambda s: None
    )
    assert len(execute.calls) == 1


def test_start_checkpoints_each_execution_before_the_next(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.post(EXECUTE_URL, body=POST_RESPONSE, content_type="application/json")
    rsps.post(EXECUTE_URL, status=500, json=[{"message": "boom", "errorCode": "UNKNOWN_EXCEPTION"}])
    lead = Match(vendor_id=LEAD_18, detail="Lead")
    state: dict[str, Any] = {}
    checkpoints = Checkpoints()
    with pytest.raises(VendorUnavailableError, match="UNKNOWN_EXCEPTION: boom"):
        make().start(SUBJECT, [MATCH, lead], state, approver_id=None, checkpoint=checkpoints)
    # The first execution was persisted before the second POST failed; the POST was not retried.
    assert list(checkpoints.saved[-1]["executions"]) == [CONTACT_18]
    assert len(rsps.calls) == 3


def test_start_never_executes_twice(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    execute = rsps.post(EXECUTE_URL, body=POST_RESPONSE, content_type="application/json")
    state = executing_state()
    lead = Match(vendor_id=LEAD_18[:15], detail="Lead")
    same_contact = Match(vendor_id=CONTACT_15, detail="Contact")
    note = make().start(
        SUBJECT, [same_contact, lead], state, approver_id="7", checkpoint=lambda s: None
    )
    assert len(execute.calls) == 1
    assert json.loads(execute.calls[0].request.body)["dataSubjectId"] == LEAD_18
    assert (
        note
        == "Salesforce portability request executed for 1 record(s); 1 already executed earlier"
    )


def test_start_with_everything_executed_makes_no_call(rsps: responses.RequestsMock) -> None:
    state = executing_state()
    make().start(SUBJECT, [MATCH], state, approver_id=None, checkpoint=lambda s: None)
    assert len(rsps.calls) == 0


def test_execute_status_not_success(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    body = json.loads(POST_RESPONSE)
    body["status"] = "ERROR"
    body["warnings"] = ["No active policy named DSAR_Portability"]
    rsps.post(EXECUTE_URL, json=body)
    state: dict[str, Any] = {}
    checkpoints = Checkpoints()
    with pytest.raises(VendorError) as caught:
        make().start(SUBJECT, [MATCH], state, approver_id=None, checkpoint=checkpoints)
    assert caught.value.message == (
        "Salesforce did not accept POST /services/data/v62.0/consent/dsr/rtp/execute: "
        "status 'ERROR' (warnings: No active policy named DSAR_Portability)"
    )
    assert state == {"executions": {}}
    assert checkpoints.saved == []


def test_request_limit_exceeded_then_success(
    rsps: responses.RequestsMock, no_sleep: list[float]
) -> None:
    add_token(rsps)
    limited = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    rsps.post(EXECUTE_URL, status=403, json=limited)
    rsps.post(EXECUTE_URL, body=POST_RESPONSE, content_type="application/json")
    state: dict[str, Any] = {}
    make().start(SUBJECT, [MATCH], state, approver_id=None, checkpoint=lambda s: None)
    assert state["executions"][CONTACT_18]["policy_file_id"] == FILE_ID
    assert len(no_sleep) == 1


def test_request_limit_exceeded_gives_up(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    limited = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    rsps.get(EXECUTE_URL, status=403, json=limited)
    with pytest.raises(RateLimitedError, match="REQUEST_LIMIT_EXCEEDED: TotalRequests"):
        make().poll(executing_state(), checkpoint=lambda s: None)
    assert len(rsps.calls) == 1 + 4


def test_other_403_is_an_authentication_error(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    refused = [{"message": "Insufficient privileges", "errorCode": "INSUFFICIENT_ACCESS"}]
    rsps.post(EXECUTE_URL, status=403, json=refused)
    with pytest.raises(AuthenticationError, match="INSUFFICIENT_ACCESS: Insufficient privileges"):
        make().start(SUBJECT, [MATCH], {}, approver_id=None, checkpoint=lambda s: None)
    assert len(rsps.calls) == 2


@pytest.mark.parametrize(
    "failure",
    [requests.exceptions.ReadTimeout("read timed out"), requests.exceptions.ConnectionError()],
)
def test_post_execute_is_not_retried_on_transport_errors(
    rsps: responses.RequestsMock, failure: Exception
) -> None:
    add_token(rsps)
    rsps.post(EXECUTE_URL, body=failure)
    with pytest.raises(VendorUnavailableError):
        make().start(SUBJECT, [MATCH], {}, approver_id=None, checkpoint=lambda s: None)
    assert len(rsps.calls) == 2


# --- poll ----------------------------------------------------------------------------------


def test_poll_in_progress(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    get = rsps.get(
        EXECUTE_URL,
        match=[matchers.query_param_matcher({"policyFileId": FILE_ID})],
        body=_get_response("In Progress"),
        content_type="application/json",
        headers={"Sforce-Limit-Info": "api-usage=30/15000"},
    )
    state = executing_state()
    checkpoints = Checkpoints()
    result = make().poll(state, checkpoint=checkpoints)
    assert result.phase is Phase.RUNNING
    assert result.detail == "policy file In Progress (0 of 1 Complete)"
    assert result.archives == []
    assert len(get.calls) == 1
    assert checkpoints.saved[-1]["api_usage"] == "api-usage=30/15000"


def test_poll_complete(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(EXECUTE_URL, body=_get_response("Complete"), content_type="application/json")
    state = executing_state()
    checkpoints = Checkpoints()
    result = make().poll(state, checkpoint=checkpoints)
    assert result.phase is Phase.READY
    assert result.archives == [ArchiveRef(key=FILE_ID, filename=f"salesforce-{FILE_ID}.zip")]
    completed_at = datetime.fromisoformat(state["executions"][CONTACT_18]["completed_at"])
    assert abs(datetime.now(UTC) - completed_at) < timedelta(minutes=1)
    assert checkpoints.saved[-1] == state


def test_poll_waits_for_all_and_skips_complete_ones(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    state = executing_state(status="Complete", completed_at="2024-05-01T10:00:00+00:00")
    state["executions"][LEAD_18] = {
        "policy_file_id": "0jeS70000004CBP",
        "policy_file_url": f"{INSTANCE}/servlet/policyFileDownload?file=0jeS70000004CBP",
        "status": "In Progress",
        "warnings": [],
    }
    get = rsps.get(
        EXECUTE_URL,
        match=[matchers.query_param_matcher({"policyFileId": "0jeS70000004CBP"})],
        body=_get_response("In Progress"),
        content_type="application/json",
    )
    result = make().poll(state, checkpoint=lambda s: None)
    assert result.phase is Phase.RUNNING
    assert result.detail == "policy file In Progress (1 of 2 Complete)"
    assert len(get.calls) == 1
    assert state["executions"][CONTACT_18]["completed_at"] == "2024-05-01T10:00:00+00:00"


def test_poll_failed_verbatim_doc_example(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(EXECUTE_URL, body=GET_RESPONSE_FAILED, content_type="application/json")
    result = make().poll(executing_state(), checkpoint=lambda s: None)
    assert result.phase is Phase.FAILED
    assert result.detail == f"policy file {FILE_ID} Failed"


def test_poll_failed_keeps_warnings(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(
        EXECUTE_URL,
        body=_get_response("Failed", ["Policy DSAR_Portability is inactive"]),
        content_type="application/json",
    )
    state = executing_state()
    result = make().poll(state, checkpoint=lambda s: None)
    assert result.phase is Phase.FAILED
    assert result.detail == (
        f"policy file {FILE_ID} Failed (warnings: Policy DSAR_Portability is inactive)"
    )
    assert state["executions"][CONTACT_18]["warnings"] == ["Policy DSAR_Portability is inactive"]


def test_poll_unknown_status(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(EXECUTE_URL, body=_get_response("Queued"), content_type="application/json")
    with pytest.raises(VendorError) as caught:
        make().poll(executing_state(), checkpoint=lambda s: None)
    assert caught.value.message == "Salesforce reported an unknown policyFileStatus 'Queued'"


def test_poll_not_found_error_array(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(
        EXECUTE_URL,
        status=404,
        json=[{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}],
    )
    with pytest.raises(NotFoundError) as caught:
        make().poll(executing_state(), checkpoint=lambda s: None)
    assert caught.value.message == (
        "Salesforce found nothing at GET /services/data/v62.0/consent/dsr/rtp/execute "
        "(HTTP 404): NOT_FOUND: The requested resource does not exist"
    )


def test_poll_retries_503_on_get(rsps: responses.RequestsMock, no_sleep: list[float]) -> None:
    add_token(rsps)
    rsps.get(EXECUTE_URL, status=503, body="<html>Service Unavailable</html>")
    rsps.get(EXECUTE_URL, body=_get_response("In Progress"), content_type="application/json")
    assert make().poll(executing_state(), checkpoint=lambda s: None).phase is Phase.RUNNING
    assert len(no_sleep) == 1


def test_poll_gives_up_after_repeated_503(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(EXECUTE_URL, status=503, body="<html>Service Unavailable</html>")
    with pytest.raises(VendorUnavailableError) as caught:
        make().poll(executing_state(), checkpoint=lambda s: None)
    assert caught.value.message == (
        "Salesforce failed on GET /services/data/v62.0/consent/dsr/rtp/execute (HTTP 503)"
    )
    assert len(rsps.calls) == 1 + 4


def test_poll_timeout_then_success(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(EXECUTE_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    rsps.get(EXECUTE_URL, body=_get_response("In Progress"), content_type="application/json")
    assert make().poll(executing_state(), checkpoint=lambda s: None).phase is Phase.RUNNING


def test_poll_timeout_gives_up(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(EXECUTE_URL, body=requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(VendorUnavailableError, match=r"did not answer GET .* in time"):
        make().poll(executing_state(), checkpoint=lambda s: None)


def test_poll_html_body_is_malformed(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(EXECUTE_URL, body="<html><body>Login</body></html>", content_type="text/html")
    with pytest.raises(MalformedResponseError, match=r"unreadable content \(text/html\)"):
        make().poll(executing_state(), checkpoint=lambda s: None)


def test_every_rest_call_passes_the_timeout(
    rsps: responses.RequestsMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_token(rsps)
    rsps.get(EXECUTE_URL, body=_get_response("In Progress"), content_type="application/json")
    timeouts: list[Any] = []
    original = requests.Session.request

    def spy(self: requests.Session, method: str, url: str, **kwargs: Any) -> Any:
        timeouts.append(kwargs.get("timeout"))
        return original(self, method, url, **kwargs)

    monkeypatch.setattr(requests.Session, "request", spy)
    make().poll(executing_state(), checkpoint=lambda s: None)
    assert timeouts == [http.DEFAULT_TIMEOUT, http.DEFAULT_TIMEOUT]


# --- download -------------------------------------------------------------------------------

ARCHIVE = ArchiveRef(key=FILE_ID, filename=f"salesforce-{FILE_ID}.zip")
ZIP_BYTES = b"PK\x03\x04" + bytes(range(256)) * 40


def test_download_streams_with_the_bearer_token(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    file = rsps.get(
        FILE_URL,
        body=ZIP_BYTES,
        content_type="application/zip",
        auto_calculate_content_length=True,
    )
    sink = io.BytesIO()
    info = make().download(executing_state(status="Complete"), ARCHIVE, sink)
    assert sink.getvalue() == ZIP_BYTES
    assert info.content_type == "application/zip"
    assert info.announced_size == len(ZIP_BYTES)
    assert file.calls[0].request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert file.calls[0].request.url == FILE_URL


def test_download_refuses_a_foreign_host(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    state = executing_state(policy_file_url=f"https://evil.example/servlet?file={FILE_ID}")
    with pytest.raises(DownloadRefusedError, match=r"evil\.example"):
        make().download(state, ARCHIVE, io.BytesIO())
    assert [c.request.url for c in rsps.calls] == [TOKEN_URL]  # nothing sent to the foreign host


def test_download_follows_redirects_only_on_the_same_host(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(FILE_URL, status=302, headers={"Location": "https://evil.example/file.zip"})
    with pytest.raises(DownloadRefusedError, match=r"evil\.example"):
        make().download(executing_state(), ARCHIVE, io.BytesIO())


def test_download_refuses_private_address_in_production(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    connector = make(allow_private_hosts=False)
    # Pretend the instance host resolves to a private address (DNS rebinding, split horizon).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", lambda *a, **k: [(2, 1, 6, "", ("10.0.0.5", 0))])
        with pytest.raises(DownloadRefusedError, match="non-public"):
            connector.download(executing_state(), ARCHIVE, io.BytesIO())
    assert [c.request.url for c in rsps.calls] == [TOKEN_URL]


def test_download_over_size_is_refused(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(FILE_URL, body=ZIP_BYTES, auto_calculate_content_length=True)
    sink = io.BytesIO()
    with pytest.raises(DownloadRefusedError, match="over the 1000-byte limit"):
        make(max_archive_bytes=1000).download(executing_state(), ARCHIVE, sink)
    assert sink.getvalue() == b""


def test_download_after_60_days_explains_the_deletion(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(FILE_URL, status=404, body="")
    completed = datetime.now(UTC) - timedelta(days=61)
    state = executing_state(status="Complete", completed_at=completed.isoformat())
    with pytest.raises(VendorError) as caught:
        make().download(state, ARCHIVE, io.BytesIO())
    assert not isinstance(caught.value, NotFoundError)
    assert caught.value.message == (
        f"Salesforce deleted policy file {FILE_ID} (files are kept 60 days after completion; "
        f"it completed on {completed.date().isoformat()})"
    )


def test_download_recent_404_is_not_found(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(FILE_URL, status=404, body="")
    state = executing_state(status="Complete", completed_at=datetime.now(UTC).isoformat())
    with pytest.raises(NotFoundError):
        make().download(state, ARCHIVE, io.BytesIO())


def test_download_html_login_page_is_refused(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.get(FILE_URL, body="<html>Login</html>", content_type="text/html")
    with pytest.raises(MalformedResponseError, match="HTML page"):
        make().download(executing_state(), ARCHIVE, io.BytesIO())


def test_download_expired_session_logs_in_again(rsps: responses.RequestsMock) -> None:
    rsps.post(TOKEN_URL, json=_token_body(ACCESS_TOKEN))
    rsps.post(TOKEN_URL, json=_token_body(ACCESS_TOKEN_2))
    rsps.get(FILE_URL, status=401, body="")
    rsps.get(FILE_URL, body=ZIP_BYTES, content_type="application/zip")
    sink = io.BytesIO()
    make().download(executing_state(), ARCHIVE, sink)
    assert sink.getvalue() == ZIP_BYTES
    assert rsps.calls[-1].request.headers["Authorization"] == f"Bearer {ACCESS_TOKEN_2}"


# --- nothing secret or personal in messages ----------------------------------------------


def test_no_secret_token_or_email_in_error_messages(
    rsps: responses.RequestsMock, keypair: tuple[str, bytes]
) -> None:
    private_pem, _ = keypair
    messages: list[str] = []

    def collect(call: Any) -> None:
        with pytest.raises(ConnectorError) as caught:
            call()
        messages.append(caught.value.message)
        messages.append(str(caught.value))

    rsps.post(TOKEN_URL, status=400, json={"error": "invalid_grant", "error_description": "bad"})
    jwt_connector = make(client_secret=None, username=USERNAME, private_key=private_pem)
    collect(lambda: jwt_connector.discover(SUBJECT))
    rsps.replace(responses.POST, TOKEN_URL, json=_token_body())
    rsps.get(
        QUERY_URL,
        status=400,
        json=[{"errorCode": "INVALID_FIELD", "message": f"no such user {EMAIL} or {USERNAME}"}],
    )
    collect(lambda: make().discover(SUBJECT))
    rsps.post(
        EXECUTE_URL,
        status=401,
        json=[{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}],
    )
    collect(lambda: make().start(SUBJECT, [MATCH], {}, approver_id=None, checkpoint=lambda s: None))
    rsps.get(FILE_URL, status=500, body="")
    collect(lambda: make().download(executing_state(), ARCHIVE, io.BytesIO()))

    forbidden = [
        CONSUMER_SECRET,
        ACCESS_TOKEN,
        ACCESS_TOKEN_2,
        EMAIL,
        "brien@",
        USERNAME,
        "PRIVATE KEY",
    ]
    for message in messages:
        for secret in forbidden:
            assert secret not in message, (secret, message)
    assert len(messages) == 8
