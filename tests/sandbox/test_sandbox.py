"""The sandbox vendors, driven over real HTTP(S) with plain ``requests`` (no Django, no DB).

Each test walks a path of the vendor docs (shared/vendor-docs/*.txt) against one sandbox
started for the whole module, so a regression in the sandbox shows up here before it confuses
a demo or an end-to-end test of the product.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.server import SandboxConfig, SandboxHandle, start_sandbox
from sandbox.subjects import normalize_salesforce_id
from sandbox.zipstream import StreamingZip, bytes_member, padding_member

FINISH_AFTER = 0.4
CLIENT_ID = 2449
TOKEN = "sandbox-qualifio-token"
DPO = 4242
QH = {"x-api-token": TOKEN, "Accept": "application/json"}
CONSUMER_KEY = "sandbox-consumer-key"
CONSUMER_SECRET = "sandbox-consumer-secret"
USERNAME = "dpo@sandbox.example"
POLICY = "DSAR_Portability"
API = "/services/data/v59.0"
ROOT = Path(__file__).resolve().parents[2]

# The doc's example profile, verbatim.
JOAO = {
    "id": 99,
    "firstName": "joao",
    "lastName": "pinto",
    "function": "",
    "gender": "",
    "email": "joao@qualifio.com",
    "birthDay": None,
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
    "isEmailValid": 0,
}
RULE_KEYS = [
    "ruleStatus",
    "_id",
    "ruleType",
    "clientId",
    "ruleTypePayload",
    "justification",
    "callBackUrl",
    "userId",
    "createdAt",
    "updatedAt",
    "__v",
]
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
HEX24 = re.compile(r"^[0-9a-f]{24}$")


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxHandle]:
    handle = start_sandbox(
        SandboxConfig(
            qualifio_port=0,
            salesforce_port=0,
            state_dir=tmp_path_factory.mktemp("sandbox-state"),
            finish_after=FINISH_AFTER,
        )
    )
    yield handle
    handle.stop()


@pytest.fixture(autouse=True)
def _clean(sb: SandboxHandle) -> Iterator[None]:
    """Every test starts from normal modes, startup options and an empty call log."""
    sb.reset()
    yield
    sb.reset()


@pytest.fixture(scope="module")
def http() -> requests.Session:
    """No proxies or CA bundles from the environment: they would override ``verify``."""
    session = requests.Session()
    session.trust_env = False
    return session


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def qget(http: requests.Session, sb: SandboxHandle, path: str, **params: Any) -> requests.Response:
    return http.get(sb.qualifio_url + path, params={"clientId": CLIENT_ID, **params}, headers=QH)


def create_rule(
    http: requests.Session, sb: SandboxHandle, profiles: list[int], **extra: Any
) -> requests.Response:
    body = {
        "ruleType": "GDPR_ExportData",
        "clientId": CLIENT_ID,
        "ruleTypePayload": {"profiles": profiles},
        "justification": "example justification for export",
        "userId": DPO,
        **extra,
    }
    return http.post(
        sb.qualifio_url + "/v1/gdpr/rules/exportData",
        params={"clientId": CLIENT_ID},
        headers=QH,
        json=body,
    )


def validate(http: requests.Session, sb: SandboxHandle, rule_id: str) -> requests.Response:
    return http.put(
        f"{sb.qualifio_url}/v1/gdpr/rules/{rule_id}/validate",
        params={"clientId": CLIENT_ID},
        headers=QH,
        json={"dpo": DPO},
    )


def rule_in(http: requests.Session, sb: SandboxHandle, rule_id: str, *statuses: str) -> Any:
    rule = qget(http, sb, f"/v1/gdpr/rules/{rule_id}").json()
    return rule if rule["ruleStatus"]["status"] in statuses else None


def profile_ids(http: requests.Session, sb: SandboxHandle, email: str) -> list[int]:
    return [p["id"] for p in qget(http, sb, "/v1/gdpr/profiles", email=email).json()]


def sf_token(http: requests.Session, sb: SandboxHandle) -> str:
    response = http.post(
        sb.salesforce_url + "/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(CONSUMER_KEY, CONSUMER_SECRET),
        verify=sb.ca_file,
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def sf(
    http: requests.Session,
    sb: SandboxHandle,
    method: str,
    path: str,
    token: str | None,
    **kwargs: Any,
) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.request(
        method, sb.salesforce_url + path, headers=headers, verify=sb.ca_file, **kwargs
    )


def soql_id(http: requests.Session, sb: SandboxHandle, token: str, sobject: str, email: str) -> str:
    escaped = email.replace("\\", "\\\\").replace("'", "\\'")
    query = f"SELECT Id FROM {sobject} WHERE Email = '{escaped}'"  # noqa: S608 (SOQL, escaped)
    records = sf(http, sb, "GET", f"{API}/query", token, params={"q": query}).json()["records"]
    return records[0]["Id"]


def checksum(id15: str) -> str:
    """Independent re-implementation of Salesforce's case-safe suffix."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
    out = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        out += alphabet[sum(2**i for i, c in enumerate(chunk) if c.isupper())]
    return out


class _CallbackReceiver(BaseHTTPRequestHandler):
    hits: list[str]
    event: threading.Event

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        type(self).event.set()
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[_CallbackReceiver]]]:
    """A tiny local HTTP server that records the callbacks it receives."""
    handler = type("Receiver", (_CallbackReceiver,), {"hits": [], "event": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


# -- Qualifio ----------------------------------------------------------------------------------


def test_qualifio_whole_doc_flow_with_callback(
    sb: SandboxHandle,
    http: requests.Session,
    receiver: tuple[str, type[_CallbackReceiver]],
) -> None:
    base, hook = receiver
    # 1. Search the profile by email: exactly the doc's example.
    found = qget(http, sb, "/v1/gdpr/profiles", email="joao@qualifio.com")
    assert found.status_code == 200
    assert found.json() == [JOAO]

    # 2. Export request: 200 with the rule at NEW, in the doc's shape.
    callback = f"{base}/your/params?case=42"
    created = create_rule(http, sb, [99], callBackUrl=callback)
    assert created.status_code == 200, created.text
    rule = created.json()
    assert list(rule) == RULE_KEYS
    assert HEX24.match(rule["_id"])
    assert rule["ruleStatus"] == {
        "status": "NEW",
        "updatedAt": rule["ruleStatus"]["updatedAt"],
        "isAuto": False,
    }
    assert ISO.match(rule["ruleStatus"]["updatedAt"]) and ISO.match(rule["createdAt"])
    assert rule["ruleTypePayload"] == {
        "profiles": [{"crmId": 99, "crmKey": "joao|pinto|joao@qualifio.com"}]
    }
    assert (rule["ruleType"], rule["clientId"], rule["userId"], rule["__v"]) == (
        "GDPR_ExportData",
        CLIENT_ID,
        DPO,
        0,
    )
    assert rule["callBackUrl"] == callback

    # 3. DPO validation: APPROVED, with the doc's different payload shape.
    approved = validate(http, sb, rule["_id"])
    assert approved.status_code == 200
    body = approved.json()
    assert body["ruleStatus"]["status"] == "APPROVED"
    assert body["ruleStatus"]["acceptedBy"] == DPO
    assert ISO.match(body["ruleStatus"]["acceptedAt"])
    assert body["ruleTypePayload"] == {"profiles": [99], "clientId": CLIENT_ID, "test": False}
    assert not hook.event.is_set()

    # 4. Poll until FINISHED: archive id at the top level, user block.
    finished = wait_for(lambda: rule_in(http, sb, rule["_id"], "FINISHED"))
    assert HEX24.match(finished["archive"])
    assert list(finished)[:3] == ["ruleStatus", "_id", "archive"]
    assert ISO.match(finished["ruleStatus"]["finishedAt"])
    assert finished["ruleStatus"]["acceptedBy"] == DPO
    assert finished["user"] == {
        "firstName": "Joao",
        "lastName": "Pinto",
        "email": "joao@qualifio.com",
        "clientId": CLIENT_ID,
    }

    # The callback URL is called with GET, once, after FINISHED.
    assert hook.event.wait(5)
    assert hook.hits == ["/your/params?case=42"]
    assert ("qualifio-callback", "GET", callback) in sb.calls()

    # 5. Archive location, then the download itself.
    info = qget(http, sb, f"/v1/gdpr/rules/{rule['_id']}/archive/{finished['archive']}")
    assert info.status_code == 200
    archive = info.json()
    assert list(archive) == ["downloadCount", "_id", "clientId", "url", "download", "__v"]
    assert archive["_id"] == finished["archive"] and archive["downloadCount"] == 0
    assert re.fullmatch(
        re.escape(sb.qualifio_url)
        + r"/v1/archive/export_client_2449_process_[0-9a-f-]{36}/[A-Za-z0-9]{25}",
        archive["url"],
    )
    download = http.get(archive["url"])
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "application/zip"
    assert int(download.headers["Content-Length"]) == len(download.content)
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        assert zf.testzip() is None
        assert json.loads(zf.read("profiles/profile_99.json")) == JOAO
        assert "joao@qualifio.com" in zf.read("participations.csv").decode()

    again = qget(http, sb, f"/v1/gdpr/rules/{rule['_id']}/archive/{finished['archive']}")
    assert again.json()["downloadCount"] == 1
    time.sleep(0.1)
    assert hook.hits == ["/your/params?case=42"]  # once only


def test_qualifio_auth_failures(sb: SandboxHandle, http: requests.Session) -> None:
    url = sb.qualifio_url + "/v1/gdpr/profiles"
    params = {"clientId": CLIENT_ID, "email": "ada@example.com"}
    missing = http.get(url, params=params)
    assert missing.status_code == 401 and "message" in missing.json()
    wrong = http.get(url, params=params, headers={"x-api-token": "nope"})
    assert wrong.status_code == 401 and "message" in wrong.json()
    other_client = http.get(url, params={**params, "clientId": 1}, headers=QH)
    assert other_client.status_code == 403 and "message" in other_client.json()
    no_client = http.get(url, params={"email": "ada@example.com"}, headers=QH)
    assert no_client.status_code == 403
    rule_without_token = http.get(
        sb.qualifio_url + "/v1/gdpr/rules/" + "0" * 24, params={"clientId": CLIENT_ID}
    )
    assert rule_without_token.status_code == 401


def test_qualifio_profile_search(sb: SandboxHandle, http: requests.Session) -> None:
    grace = qget(http, sb, "/v1/gdpr/profiles", email="GRACE@example.com").json()
    assert len(grace) == 2 and len({p["id"] for p in grace}) == 2
    assert all(list(p) == list(JOAO) for p in grace)
    assert grace[0]["trigramme"] == "Grace|Hopper|grace@example.com"
    by_name = qget(http, sb, "/v1/gdpr/profiles", firstName="ada", lastName="LOVELACE").json()
    assert [p["email"] for p in by_name] == ["ada@example.com"]
    mismatch = qget(http, sb, "/v1/gdpr/profiles", email="ada@example.com", firstName="Grace")
    assert mismatch.json() == []
    assert qget(http, sb, "/v1/gdpr/profiles", email="nobody@example.com").json() == []
    auto = qget(http, sb, "/v1/gdpr/profiles", email="load.test+7@auto.example").json()
    assert [(p["firstName"], p["lastName"]) for p in auto] == [("Load", "Test 7")]
    assert qget(http, sb, "/v1/gdpr/profiles").status_code == 400


@pytest.mark.parametrize(
    "change",
    [
        {"ruleType": "GDPR_DeleteData"},
        {"clientId": "2449"},
        {"clientId": 1},
        {"ruleTypePayload": {"profiles": []}},
        {"ruleTypePayload": {"profiles": ["99"]}},
        {"ruleTypePayload": {"profiles": [123456]}},
        {"justification": "  "},
        {"userId": "4242"},
        {"callBackUrl": "ftp://example.com/"},
    ],
)
def test_qualifio_export_rejects_bad_bodies(
    sb: SandboxHandle, http: requests.Session, change: dict[str, Any]
) -> None:
    response = create_rule(http, sb, [99], **change)
    assert response.status_code == 400
    assert isinstance(response.json()["message"], str)


def test_qualifio_validate_twice_and_unknown(sb: SandboxHandle, http: requests.Session) -> None:
    rule_id = create_rule(http, sb, profile_ids(http, sb, "ada@example.com")).json()["_id"]
    assert validate(http, sb, rule_id).status_code == 200
    second = validate(http, sb, rule_id)
    assert second.status_code == 400 and "NEW" in second.json()["message"]
    assert validate(http, sb, "0" * 24).status_code == 404
    assert qget(http, sb, "/v1/gdpr/rules/" + "0" * 24).status_code == 404
    bad_body = http.put(
        f"{sb.qualifio_url}/v1/gdpr/rules/{rule_id}/validate",
        params={"clientId": CLIENT_ID},
        headers=QH,
        json={"dpo": "x"},
    )
    assert bad_body.status_code == 400


def test_qualifio_auto_approve(sb: SandboxHandle, http: requests.Session) -> None:
    sb.configure(qualifio_auto_approve=True)
    rule = create_rule(http, sb, profile_ids(http, sb, "grace@example.com")).json()
    assert rule["ruleStatus"]["status"] == "APPROVED"
    assert rule["ruleStatus"]["isAuto"] is True
    assert validate(http, sb, rule["_id"]).status_code == 400
    finished = wait_for(lambda: rule_in(http, sb, rule["_id"], "FINISHED"))
    assert finished["ruleStatus"]["isAuto"] is True
    assert len(finished["ruleTypePayload"]["profiles"]) == 2


def test_qualifio_failing_subject_ends_in_error(
    sb: SandboxHandle, http: requests.Session, receiver: tuple[str, type[_CallbackReceiver]]
) -> None:
    base, hook = receiver
    ids = profile_ids(http, sb, "fail@example.com")
    rule_id = create_rule(http, sb, ids, callBackUrl=base + "/cb").json()["_id"]
    validate(http, sb, rule_id)
    assert rule_in(http, sb, rule_id, "APPROVED")  # not lazily finished by polling
    errored = wait_for(lambda: rule_in(http, sb, rule_id, "ERROR", "FINISHED"))
    assert errored["ruleStatus"]["status"] == "ERROR"
    assert str(ids[0]) in errored["ruleStatus"]["reason"]
    assert "archive" not in errored
    time.sleep(0.2)
    assert not hook.hits  # the doc calls back when the archive is ready, never on ERROR


def test_qualifio_finishes_without_polling(sb: SandboxHandle, http: requests.Session) -> None:
    rule_id = create_rule(http, sb, [99]).json()["_id"]
    validate(http, sb, rule_id)
    time.sleep(FINISH_AFTER + 0.3)
    calls_before = len(sb.calls())
    finished = rule_in(http, sb, rule_id, "FINISHED")
    assert finished, "the scheduler, not the GET, moves the rule"
    assert len(sb.calls()) == calls_before + 1


def test_qualifio_archive_padding_is_streamed_and_valid(
    sb: SandboxHandle, http: requests.Session
) -> None:
    padding = 3 * 1024 * 1024 + 17
    sb.configure(archive_padding_bytes=padding)
    rule_id = create_rule(http, sb, [99]).json()["_id"]
    validate(http, sb, rule_id)
    archive_id = wait_for(lambda: rule_in(http, sb, rule_id, "FINISHED"))["archive"]
    url = qget(http, sb, f"/v1/gdpr/rules/{rule_id}/archive/{archive_id}").json()["url"]
    with http.get(url, stream=True) as response:
        length = int(response.headers["Content-Length"])
        data = b"".join(response.iter_content(256 * 1024))
    assert length == len(data) > padding
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.getinfo("padding.bin").file_size == padding


@pytest.mark.parametrize("force_zip64", [False, True])
def test_streaming_zip_layout(force_zip64: bool) -> None:
    archive = StreamingZip(
        [bytes_member("a.json", b'{"a": 1}' * 50), padding_member("pad.bin", 70_001)],
        when=dt.datetime(2024, 5, 6, 7, 8, 10),
        force_zip64=force_zip64,
    )
    data = b"".join(archive)
    assert len(data) == len(archive)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.read("pad.bin") == bytes(70_001)
        assert zf.getinfo("a.json").date_time == (2024, 5, 6, 7, 8, 10)


def test_control_plane_subjects_reset_and_calls(sb: SandboxHandle, http: requests.Session) -> None:
    added = http.post(
        sb.qualifio_url + "/__sandbox__/subjects",
        json={
            "email": "new@example.com",
            "firstName": "New",
            "lastName": "Person",
            "vendors": ["qualifio", "salesforce"],
        },
    )
    assert added.status_code == 201
    assert profile_ids(http, sb, "new@example.com") == added.json()["qualifioProfileIds"]
    token = sf_token(http, sb)
    assert (
        soql_id(http, sb, token, "Contact", "new@example.com")
        == (added.json()["salesforceIds"]["Contact"])
    )
    rule_id = create_rule(http, sb, [99]).json()["_id"]
    calls = http.get(sb.salesforce_url + "/__sandbox__/calls", verify=sb.ca_file).json()
    assert {"vendor": "qualifio", "method": "POST", "path": "/v1/gdpr/rules/exportData"} in calls
    assert all(not c["path"].startswith("/__sandbox__") for c in calls)
    assert http.post(sb.qualifio_url + "/__sandbox__/reset").status_code == 200
    assert sb.calls() == []
    assert qget(http, sb, f"/v1/gdpr/rules/{rule_id}").status_code == 404
    assert profile_ids(http, sb, "new@example.com")  # subjects survive a reset
    bad = http.post(sb.qualifio_url + "/__sandbox__/mode", json={"vendor": "x", "mode": "slow"})
    assert bad.status_code == 400


# -- Salesforce --------------------------------------------------------------------------------


def test_salesforce_tls_needs_the_sandbox_ca(sb: SandboxHandle, http: requests.Session) -> None:
    fresh = requests.Session()  # a pooled connection verified earlier would be reused
    fresh.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        fresh.get(sb.salesforce_url + "/__sandbox__/info", verify=True)
    port = sb.salesforce_url.rsplit(":", 1)[1]
    by_name = http.get(f"https://localhost:{port}/__sandbox__/info", verify=sb.ca_file)
    assert by_name.status_code == 200
    assert by_name.json()["ca_file"] == str(sb.ca_file)


def test_salesforce_client_credentials(sb: SandboxHandle, http: requests.Session) -> None:
    url = sb.salesforce_url + "/services/oauth2/token"
    basic = http.post(
        url,
        data={"grant_type": "client_credentials"},
        auth=(CONSUMER_KEY, CONSUMER_SECRET),
        verify=sb.ca_file,
    )
    assert basic.status_code == 200
    body = basic.json()
    assert set(body) == {
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
    }
    assert body["instance_url"] == sb.salesforce_url and body["token_type"] == "Bearer"
    form = http.post(
        url,
        data={
            "grant_type": "client_credentials",
            "client_id": CONSUMER_KEY,
            "client_secret": CONSUMER_SECRET,
        },
        verify=sb.ca_file,
    )
    assert form.status_code == 200
    bad = http.post(
        url,
        data={"grant_type": "client_credentials"},
        auth=(CONSUMER_KEY, "wrong"),
        verify=sb.ca_file,
    )
    assert bad.status_code == 400 and bad.json()["error"] == "invalid_client"
    grant = http.post(url, data={"grant_type": "password"}, verify=sb.ca_file)
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"


def _assertion(sb: SandboxHandle, key: Any = None, **claims: Any) -> str:
    if key is None:
        key = Path(sb.credentials["salesforce"]["jwt_private_key_file"]).read_bytes()
    payload = {
        "iss": CONSUMER_KEY,
        "sub": USERNAME,
        "aud": sb.salesforce_url,
        "exp": int(time.time()) + 180,
        **claims,
    }
    return jwt.encode(payload, key, algorithm="RS256")


def test_salesforce_jwt_bearer(sb: SandboxHandle, http: requests.Session) -> None:
    url = sb.salesforce_url + "/services/oauth2/token"
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"

    def post(assertion: str) -> requests.Response:
        return http.post(url, data={"grant_type": grant, "assertion": assertion}, verify=sb.ca_file)

    ok = post(_assertion(sb))
    assert ok.status_code == 200, ok.text
    token = ok.json()["access_token"]
    assert soql_id(http, sb, token, "User", USERNAME).startswith("005")

    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = _assertion(
        sb,
        key=other_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    cases = {
        forged: "invalid_grant",
        _assertion(sb, aud="https://login.salesforce.com"): "invalid_grant",
        _assertion(sb, exp=int(time.time()) - 5): "invalid_grant",
        _assertion(sb, sub="someone@else.example"): "invalid_grant",
        _assertion(sb, iss="other-key"): "invalid_client",
        "not.a.jwt": "invalid_grant",
    }
    for assertion, error in cases.items():
        refused = post(assertion)
        assert refused.status_code == 400
        assert refused.json()["error"] == error
        assert refused.json()["error_description"]


def test_salesforce_soql_discovery(sb: SandboxHandle, http: requests.Session) -> None:
    token = sf_token(http, sb)

    def query(q: str) -> requests.Response:
        return sf(http, sb, "GET", f"{API}/query/", token, params={"q": q})

    ada = query(
        "SELECT Id, FirstName, LastName, Email FROM Contact WHERE Email = 'ada@example.com'"
    )
    assert ada.status_code == 200
    body = ada.json()
    assert body["totalSize"] == 1 and body["done"] is True
    record = body["records"][0]
    contact_id = record["Id"]
    assert record == {
        "attributes": {"type": "Contact", "url": f"{API}/sobjects/Contact/{contact_id}"},
        "Id": contact_id,
        "FirstName": "Ada",
        "LastName": "Lovelace",
        "Email": "ada@example.com",
    }
    lead = query("select id, name from lead where email = 'grace@example.com'").json()
    assert lead["records"][0]["Name"] == "Grace Hopper"
    user = soql_id(http, sb, token, "User", USERNAME)
    assert query("SELECT Id FROM Lead WHERE Email = 'ada@example.com'").json()["totalSize"] == 0
    assert query("SELECT Id FROM Contact WHERE Email = 'joao@qualifio.com'").json()["records"] == []
    for prefix, sf_id in (("003", contact_id), ("00Q", lead["records"][0]["Id"]), ("005", user)):
        assert sf_id.startswith(prefix) and len(sf_id) == 18
        assert sf_id[15:] == checksum(sf_id[:15])
        assert normalize_salesforce_id(sf_id.lower()) == sf_id[:15]

    sb.add_subject("o'brien@example.com", "Pat", "O'Brien")
    escaped = query("SELECT Id, Name FROM Contact WHERE Email = 'o\\'brien@example.com'").json()
    assert escaped["records"][0]["Name"] == "Pat O'Brien"

    for bad in (
        "SELECT Id FROM Contact",
        "SELECT Phone FROM Contact WHERE Email = 'ada@example.com'",
        "SELECT Id FROM Account WHERE Email = 'ada@example.com'",
        "SELECT Id FROM Contact WHERE Email = 'unterminated",
    ):
        refused = query(bad)
        assert refused.status_code == 400
        assert refused.json()[0]["errorCode"] == "MALFORMED_QUERY"


def test_salesforce_portability_flow(sb: SandboxHandle, http: requests.Session) -> None:
    token = sf_token(http, sb)
    contact = soql_id(http, sb, token, "Contact", "grace@example.com")
    execute = f"{API}/consent/dsr/rtp/execute"
    started = sf(
        http, sb, "POST", execute, token, json={"dataSubjectId": contact, "policyName": POLICY}
    )
    assert started.status_code == 200, started.text
    envelope = started.json()
    file_id = envelope["result"]["policyFileId"]
    assert envelope == {
        "status": "SUCCESS",
        "warnings": [],
        "result": {
            "policyFileStatus": "In Progress",
            "policyFileUrl": f"{sb.salesforce_url}/servlet/policyFileDownload?file={file_id}",
            "policyFileId": file_id,
        },
    }
    assert len(file_id) == 15 and file_id.startswith("0je")
    download_url = envelope["result"]["policyFileUrl"]
    early = http.get(download_url, headers={"Authorization": f"Bearer {token}"}, verify=sb.ca_file)
    assert early.status_code == 404

    def status() -> str:
        got = sf(http, sb, "GET", execute, token, params={"policyFileId": file_id})
        assert got.status_code == 200
        return got.json()["result"]["policyFileStatus"]

    assert wait_for(lambda: status() == "Complete")
    unauthenticated = http.get(download_url, verify=sb.ca_file)
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    download = http.get(
        download_url, headers={"Authorization": f"Bearer {token}"}, verify=sb.ca_file
    )
    assert download.status_code == 200
    assert download.headers["Content-Type"] == "application/zip"
    assert int(download.headers["Content-Length"]) == len(download.content)
    with zipfile.ZipFile(io.BytesIO(download.content)) as zf:
        rows = json.loads(zf.read("Contact.json"))
    assert rows[0]["Id"] == contact and rows[0]["Email"] == "grace@example.com"

    # The doc example's spelling and a 15-character id are accepted too.
    lead = soql_id(http, sb, token, "Lead", "grace@example.com")[:15]
    doc_spelling = sf(
        http, sb, "POST", execute, token, json={"dataSubjectID": lead, "policyName": POLICY}
    )
    assert doc_spelling.status_code == 200

    sb.configure(expire_files=True)
    expired = http.get(
        download_url, headers={"Authorization": f"Bearer {token}"}, verify=sb.ca_file
    )
    assert expired.status_code == 404


def test_salesforce_portability_refusals(sb: SandboxHandle, http: requests.Session) -> None:
    token = sf_token(http, sb)
    contact = soql_id(http, sb, token, "Contact", "ada@example.com")
    body = {"dataSubjectId": contact, "policyName": POLICY}
    old = sf(http, sb, "POST", "/services/data/v49.0/consent/dsr/rtp/execute", token, json=body)
    assert old.status_code == 404
    assert old.json() == [
        {"message": "The requested resource does not exist", "errorCode": "NOT_FOUND"}
    ]
    execute = f"{API}/consent/dsr/rtp/execute"
    for bad in (
        {**body, "policyName": "Other"},
        {"dataSubjectId": "003000000000000AAA", "policyName": POLICY},
        {"dataSubjectId": "003Sb0000000000", "policyName": POLICY},
        {"policyName": POLICY},
    ):
        refused = sf(http, sb, "POST", execute, token, json=bad)
        assert refused.status_code == 400
        assert refused.json()[0]["errorCode"] == "INVALID_INPUT"
    unknown = sf(http, sb, "GET", execute, token, params={"policyFileId": "0jeSb0000000000"})
    assert unknown.status_code == 404
    assert sf(http, sb, "POST", execute, None, json=body).status_code == 401


def test_salesforce_failing_subject(sb: SandboxHandle, http: requests.Session) -> None:
    token = sf_token(http, sb)
    contact = soql_id(http, sb, token, "Contact", "fail@example.com")
    execute = f"{API}/consent/dsr/rtp/execute"
    file_id = sf(
        http, sb, "POST", execute, token, json={"dataSubjectId": contact, "policyName": POLICY}
    ).json()["result"]["policyFileId"]

    def final() -> str | None:
        got = sf(http, sb, "GET", execute, token, params={"policyFileId": file_id}).json()
        status = got["result"]["policyFileStatus"]
        return status if status != "In Progress" else None

    assert wait_for(final) == "Failed"
    download = sf(http, sb, "GET", f"/servlet/policyFileDownload?file={file_id}", token)
    assert download.status_code == 404


def test_salesforce_expired_token(sb: SandboxHandle, http: requests.Session) -> None:
    sb.configure(token_ttl=0.2)
    token = sf_token(http, sb)
    query = {"q": "SELECT Id FROM Contact WHERE Email = 'ada@example.com'"}
    assert sf(http, sb, "GET", f"{API}/query", token, params=query).status_code == 200
    time.sleep(0.3)
    stale = sf(http, sb, "GET", f"{API}/query", token, params=query)
    assert stale.status_code == 401
    assert stale.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    sb.configure(token_ttl=3600)
    fresh = sf_token(http, sb)
    sb.expire_tokens()
    assert sf(http, sb, "GET", f"{API}/query", fresh, params=query).status_code == 401
    assert sf(http, sb, "GET", f"{API}/query", "garbage", params=query).status_code == 401


def test_salesforce_limit_info_header(sb: SandboxHandle, http: requests.Session) -> None:
    token = sf_token(http, sb)
    seen = []
    for _ in range(3):
        response = sf(http, sb, "GET", f"{API}/query", token, params={"q": "bad"})
        match = re.fullmatch(r"api-usage=(\d+)/15000", response.headers["Sforce-Limit-Info"])
        assert match
        seen.append(int(match.group(1)))
    assert seen == [seen[0], seen[0] + 1, seen[0] + 2]
    refused = http.post(sb.salesforce_url + "/services/oauth2/token", verify=sb.ca_file)
    assert "Sforce-Limit-Info" in refused.headers


# -- failure modes -----------------------------------------------------------------------------


def _qualifio_call(sb: SandboxHandle, http: requests.Session) -> requests.Response:
    return qget(http, sb, "/v1/gdpr/profiles", email="ada@example.com")


def _salesforce_call(sb: SandboxHandle, http: requests.Session) -> requests.Response:
    return http.post(
        sb.salesforce_url + "/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(CONSUMER_KEY, CONSUMER_SECRET),
        verify=sb.ca_file,
    )


CALLS = {"qualifio": _qualifio_call, "salesforce": _salesforce_call}


@pytest.mark.parametrize("vendor", ["qualifio", "salesforce"])
def test_failure_modes(sb: SandboxHandle, http: requests.Session, vendor: str) -> None:
    call = CALLS[vendor]
    other = CALLS["salesforce" if vendor == "qualifio" else "qualifio"]

    sb.set_mode(vendor, "slow", delay=0.3)
    started = time.monotonic()
    assert call(sb, http).status_code == 200
    assert time.monotonic() - started >= 0.3

    sb.set_mode(vendor, "failing")
    assert call(sb, http).status_code == 503
    assert other(sb, http).status_code == 200  # modes are per vendor
    control = http.get(sb.salesforce_url + "/__sandbox__/calls", verify=sb.ca_file)
    assert control.status_code == 200  # the control plane ignores failure modes

    sb.set_mode(vendor, "rate_limited", retry_after=3)
    limited = call(sb, http)
    if vendor == "qualifio":
        assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    else:
        assert limited.status_code == 403
        assert limited.json() == [
            {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
        ]

    sb.set_mode(vendor, "flaky")
    assert [call(sb, http).status_code for _ in range(4)] == [500, 200, 500, 200]

    response = http.post(
        sb.qualifio_url + "/__sandbox__/mode", json={"vendor": vendor, "mode": "html"}
    )
    assert response.json()[vendor]["mode"] == "html"
    page = call(sb, http)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    with pytest.raises(ValueError):
        page.json()

    sb.set_mode("all", "normal")
    assert call(sb, http).status_code == 200
    assert all(not path.startswith("/__sandbox__") for _, _, path in sb.calls())


# -- command line ------------------------------------------------------------------------------


def test_cli_prints_startup_line_and_exits_cleanly(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "--qualifio-port",
            "0",
            "--salesforce-port",
            "0",
            "--state-dir",
            str(tmp_path),
            "--quiet",
            "--mode",
            "qualifio=flaky",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        info = json.loads(process.stdout.readline())
        assert info["ca_file"] == str(tmp_path / "sandbox-ca.pem")
        assert info["credentials"]["qualifio"]["api_token"] == TOKEN
        assert info["credentials"]["salesforce"]["consumer_key"] == CONSUMER_KEY
        assert Path(info["credentials"]["salesforce"]["jwt_private_key_file"]).exists()
        session = requests.Session()
        session.trust_env = False
        url = info["qualifio_url"] + "/v1/gdpr/profiles"
        params = {"clientId": CLIENT_ID, "email": "ada@example.com"}
        assert session.get(url, params=params, headers=QH).status_code == 500
        assert session.get(url, params=params, headers=QH).status_code == 200
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
