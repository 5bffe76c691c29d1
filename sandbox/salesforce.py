"""Fake Salesforce: OAuth token endpoint, SOQL discovery, Portability API, policy file servlet.

Follows ``salesforce-portability-api.txt`` (the ``{status, warnings, result}`` envelope, 15-char
``0je`` policy file ids, ``In Progress`` → ``Complete``/``Failed``) and the REST conventions
every Salesforce client relies on: errors as ``[{"message", "errorCode"}]``, 401
``INVALID_SESSION_ID`` for a stale token, and ``Sforce-Limit-Info`` on every response.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from .httpbase import ClientError, VendorHandler
from .subjects import (
    ORG_ID,
    SALESFORCE_PREFIXES,
    SalesforceRecord,
    is_failing_email,
    normalize_salesforce_id,
    random_salesforce_id15,
)
from .zipstream import StreamingZip, bytes_member, padding_member

if TYPE_CHECKING:
    from .core import Sandbox

CONSUMER_KEY = "sandbox-consumer-key"
CONSUMER_SECRET = "sandbox-consumer-secret"
USERNAME = "dpo@sandbox.example"
POLICY_NAME = "DSAR_Portability"
API_LIMIT = 15000
MIN_PORTABILITY_VERSION = 50.0
DEFAULT_API_VERSION = "59.0"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"

_VERSIONED = re.compile(r"^/services/data/v(\d+\.\d)(/.*)?$")
_FIELDS = {name.lower(): name for name in ("Id", "Name", "FirstName", "LastName", "Email")}
_OBJECTS = {name.lower(): name for name in SALESFORCE_PREFIXES}
_SOQL = re.compile(
    r"^\s*SELECT\s+(?P<fields>\w+(?:\s*,\s*\w+)*)\s+FROM\s+(?P<object>\w+)\s+"
    r"WHERE\s+Email\s*=\s*'(?P<value>(?:[^'\\]|\\.)*)'"
    r"(?:\s+LIMIT\s+(?P<limit>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_SOQL_ESCAPES = {"'": "'", '"': '"', "\\": "\\", "n": "\n", "r": "\r", "t": "\t", "b": "\b"}
_SOQL_ESCAPES |= {"f": "\f", "_": "\\_", "%": "\\%"}
_SUPPORTED_SOQL = (
    "the sandbox supports SELECT <Id, Name, FirstName, LastName, Email> "
    "FROM Contact|Lead|User WHERE Email = '<value>' [LIMIT n]"
)


def _malformed(message: str) -> ClientError:
    return ClientError(400, "MALFORMED_QUERY", message)


def _unescape_soql(value: str) -> str:
    out = []
    chars = iter(value)
    for char in chars:
        if char != "\\":
            out.append(char)
            continue
        escaped = next(chars, "")
        if escaped not in _SOQL_ESCAPES:
            raise _malformed(f"Invalid string literal: unknown escape sequence \\{escaped}")
        out.append(_SOQL_ESCAPES[escaped])
    return "".join(out)


def parse_soql(soql: str) -> tuple[list[str], str, str, int | None]:
    """(fields, sobject, email, limit) of the one query shape the sandbox understands."""
    match = _SOQL.match(soql)
    if not match:
        raise _malformed(f"unsupported query: {_SUPPORTED_SOQL}")
    fields: list[str] = []
    for raw in (part.strip() for part in match["fields"].split(",")):
        name = _FIELDS.get(raw.lower())
        if name is None:
            raise _malformed(f"No such column '{raw}': {_SUPPORTED_SOQL}")
        if name in fields:
            raise _malformed(f"duplicate field selected: {name}")
        fields.append(name)
    sobject = _OBJECTS.get(match["object"].lower())
    if sobject is None:
        raise _malformed(f"sObject type '{match['object']}' is not supported: {_SUPPORTED_SOQL}")
    limit = int(match["limit"]) if match["limit"] is not None else None
    return fields, sobject, _unescape_soql(match["value"]), limit


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@dataclass
class PolicyFile:
    """One Portability API execution."""

    id: str  # 15 characters, prefix 0je
    record: SalesforceRecord
    status: str
    created: dt.datetime


class OAuthError(Exception):
    """An OAuth failure: 400 ``{"error", "error_description"}``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


class SalesforceState:
    """Tokens, API usage and policy files of the fake Salesforce org."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._lock = threading.Lock()
        self._tokens: dict[str, float] = {}  # access token → monotonic expiry
        self._files: dict[str, PolicyFile] = {}
        self._usage = 0

    @property
    def user_id(self) -> str:
        """The 18-character User id of the integration user (``dpo@sandbox.example``)."""
        users = self._sandbox.subjects.query_records("User", USERNAME)
        return users[0].id if users else ""

    def reset(self) -> None:
        """Forget policy files and the API usage counter (tokens stay valid)."""
        with self._lock:
            self._files.clear()
            self._usage = 0

    def count_call(self) -> int:
        """One more API call against the daily limit."""
        with self._lock:
            self._usage += 1
            return self._usage

    @property
    def usage(self) -> int:
        """API calls counted so far."""
        with self._lock:
            return self._usage

    # -- OAuth ----------------------------------------------------------------------------

    def token(self, form: Mapping[str, str], authorization: str | None) -> dict[str, Any]:
        """The token endpoint: client credentials or JWT bearer."""
        grant = form.get("grant_type")
        if grant == "client_credentials":
            self._check_client_credentials(form, authorization)
        elif grant == JWT_GRANT:
            self._check_assertion(form.get("assertion"))
        else:
            raise OAuthError("unsupported_grant_type", "grant type not supported")
        access_token = f"{ORG_ID[:15]}!{secrets.token_urlsafe(48)}"
        with self._lock:
            self._tokens[access_token] = time.monotonic() + self._sandbox.options.token_ttl
        base = self._sandbox.salesforce_url
        identity = f"{base}/id/{ORG_ID}/{self.user_id}"
        issued_at = str(int(time.time() * 1000))
        signature = base64.b64encode(
            hmac.new(
                CONSUMER_SECRET.encode(), (identity + issued_at).encode(), hashlib.sha256
            ).digest()
        ).decode()
        return {
            "access_token": access_token,
            "instance_url": base,
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": signature,
        }

    @staticmethod
    def _check_client_credentials(form: Mapping[str, str], authorization: str | None) -> None:
        client_id = form.get("client_id")
        client_secret = form.get("client_secret")
        if authorization and authorization.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                raise OAuthError("invalid_client", "invalid client credentials") from None
            client_id, _, client_secret = decoded.partition(":")
        if not client_id:
            raise OAuthError("invalid_client_id", "client identifier invalid")
        if not (
            hmac.compare_digest(client_id.encode(), CONSUMER_KEY.encode())
            and hmac.compare_digest((client_secret or "").encode(), CONSUMER_SECRET.encode())
        ):
            raise OAuthError("invalid_client", "invalid client credentials")

    def _check_assertion(self, assertion: str | None) -> None:
        """Verify an RS256 JWT the way Salesforce's JWT bearer flow does."""
        if not assertion:
            raise OAuthError("invalid_grant", "invalid assertion: assertion is required")
        try:
            header_b64, payload_b64, signature_b64 = assertion.split(".")
            header = json.loads(_b64url_decode(header_b64))
            claims = json.loads(_b64url_decode(payload_b64))
            signature = _b64url_decode(signature_b64)
        except (ValueError, binascii.Error):
            raise OAuthError("invalid_grant", "invalid assertion: not a JWT") from None
        if not isinstance(header, dict) or header.get("alg") != "RS256":
            raise OAuthError("invalid_grant", "invalid assertion: alg must be RS256")
        try:
            self._sandbox.keys.jwt_public_key.verify(
                signature,
                f"{header_b64}.{payload_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            raise OAuthError("invalid_grant", "invalid assertion: bad signature") from None
        if not isinstance(claims, dict):
            raise OAuthError("invalid_grant", "invalid assertion: claims must be an object")
        if claims.get("iss") != CONSUMER_KEY:
            raise OAuthError("invalid_client", "client identifier invalid")
        subject = claims.get("sub")
        if not isinstance(subject, str) or subject.lower() != USERNAME:
            raise OAuthError("invalid_grant", "user hasn't approved this consumer")
        audiences = claims.get("aud")
        audiences = audiences if isinstance(audiences, list) else [audiences]
        accepted = self._sandbox.salesforce_audiences()
        if not any(isinstance(aud, str) and aud.rstrip("/") in accepted for aud in audiences):
            raise OAuthError("invalid_grant", f"audience is invalid (expected {accepted[0]})")
        expires = claims.get("exp")
        if isinstance(expires, bool) or not isinstance(expires, int | float):
            raise OAuthError("invalid_grant", "invalid assertion: exp is required")
        if expires <= time.time():
            raise OAuthError("invalid_grant", "expired authorization code")

    def check_bearer(self, authorization: str | None) -> None:
        """401 INVALID_SESSION_ID unless the header carries a live access token."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() in ("bearer", "oauth") and token.strip():
            with self._lock:
                expiry = self._tokens.get(token.strip())
            if expiry is not None and expiry > time.monotonic():
                return
        raise ClientError(401, "INVALID_SESSION_ID", "Session expired or invalid")

    def expire_tokens(self) -> None:
        """Make every issued token stale, as a session timeout or revocation would."""
        with self._lock:
            self._tokens = dict.fromkeys(self._tokens, 0.0)

    # -- Portability API ------------------------------------------------------------------

    def _envelope(self, policy_file: PolicyFile) -> dict[str, Any]:
        return {
            "status": "SUCCESS",
            "warnings": [],
            "result": {
                "policyFileStatus": policy_file.status,
                "policyFileUrl": (
                    f"{self._sandbox.salesforce_url}/servlet/policyFileDownload"
                    f"?file={policy_file.id}"
                ),
                "policyFileId": policy_file.id,
            },
        }

    def execute(self, body: Any) -> dict[str, Any]:
        """Start compiling a policy file for one data subject."""
        if not isinstance(body, dict):
            raise ClientError(400, "JSON_PARSER_ERROR", "request body must be a JSON object")
        subject_id = body.get("dataSubjectId", body.get("dataSubjectID"))
        policy_name = body.get("policyName")
        if not isinstance(subject_id, str) or not subject_id:
            raise ClientError(400, "INVALID_INPUT", "dataSubjectId is required")
        if not isinstance(policy_name, str) or not policy_name:
            raise ClientError(400, "INVALID_INPUT", "policyName is required")
        if policy_name != POLICY_NAME:
            raise ClientError(400, "INVALID_INPUT", f"No active policy named {policy_name}")
        if normalize_salesforce_id(subject_id) is None:
            raise ClientError(
                400, "INVALID_INPUT", "dataSubjectId must be a 15- or 18-character record id"
            )
        record = self._sandbox.subjects.record(subject_id)
        if record is None:
            raise ClientError(
                400,
                "INVALID_INPUT",
                f"dataSubjectId {subject_id} does not match a record covered by {POLICY_NAME}",
            )
        policy_file = PolicyFile(
            random_salesforce_id15("0je"), record, "In Progress", dt.datetime.now(dt.UTC)
        )
        with self._lock:
            self._files[policy_file.id] = policy_file
            envelope = self._envelope(policy_file)
        file_id = policy_file.id
        self._sandbox.scheduler.call_later(
            self._sandbox.options.finish_after, lambda: self._complete(file_id)
        )
        return envelope

    def _file(self, file_id: str | None) -> PolicyFile | None:
        id15 = normalize_salesforce_id(file_id)
        return self._files.get(id15) if id15 else None

    def status(self, file_id: str | None) -> dict[str, Any]:
        """The execution's current status, in the same envelope."""
        if not file_id:
            raise ClientError(400, "INVALID_INPUT", "policyFileId is required")
        with self._lock:
            policy_file = self._file(file_id)
            if policy_file is None:
                raise ClientError(404, "NOT_FOUND", f"No policy file with id {file_id}")
            return self._envelope(policy_file)

    def _complete(self, file_id: str) -> None:
        """Scheduler job: In Progress → Complete, or Failed for failing subjects."""
        with self._lock:
            policy_file = self._files.get(file_id)
            if policy_file is None or policy_file.status != "In Progress":
                return
            failing = is_failing_email(policy_file.record.email)
            policy_file.status = "Failed" if failing else "Complete"

    def open_file(self, file_id: str | None) -> tuple[str, StreamingZip]:
        """The compiled file of a Complete execution; 404 otherwise (or when expired)."""
        with self._lock:
            policy_file = self._file(file_id)
            if policy_file is None or policy_file.status != "Complete":
                raise ClientError(404, "NOT_FOUND", "The requested resource does not exist")
            if self._sandbox.options.expire_files:
                raise ClientError(
                    404, "NOT_FOUND", "The policy file has expired (deleted after 60 days)"
                )
        record = policy_file.record
        rows = [
            {
                "attributes": {"type": record.sobject},
                **record.fields(),
                "CreatedDate": "2023-01-15T10:00:00.000+0000",
            }
        ]
        manifest = {
            "policyName": POLICY_NAME,
            "policyFileId": policy_file.id,
            "dataSubjectId": record.id,
            "generatedAt": policy_file.created.isoformat(),
            "objects": [record.sobject],
        }
        members = [
            bytes_member(f"{record.sobject}.json", json.dumps(rows, indent=2).encode()),
            bytes_member("manifest.json", json.dumps(manifest, indent=2).encode()),
        ]
        padding_size = self._sandbox.options.policy_file_padding_bytes
        if padding_size:
            members.append(padding_member("padding.bin", padding_size))
        return f"{policy_file.id}.zip", StreamingZip(members, when=policy_file.created)


def _rest_error(code: str, message: str) -> list[dict[str, str]]:
    return [{"message": message, "errorCode": code}]


class SalesforceHandler(VendorHandler):
    """HTTP routes of the fake Salesforce org (served over HTTPS)."""

    vendor = "salesforce"
    json_content_type = "application/json;charset=UTF-8"  # what Salesforce sends

    def count_api_call(self) -> None:
        """Each API call counts against the 15000/day allocation shown in the header."""
        self.sandbox.salesforce.count_call()

    def extra_headers(self) -> Mapping[str, str]:
        """Every response reports API usage, as Salesforce does."""
        return {"Sforce-Limit-Info": f"api-usage={self.sandbox.salesforce.usage}/{API_LIMIT}"}

    def send_error_body(self, status: int, code: str, message: str) -> None:
        """REST errors are a JSON array of ``{message, errorCode}``."""
        self.send_json(status, _rest_error(code, message))

    def send_rate_limited(self, retry_after: int) -> None:
        """Salesforce signals its API limit with 403 REQUEST_LIMIT_EXCEEDED."""
        self.send_json(403, _rest_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."))

    def route(self, method: str, path: str, query: Mapping[str, str], body: bytes) -> None:
        """Dispatch to the token endpoint, the REST API or the download servlet."""
        path = path.rstrip("/") or "/"
        state = self.sandbox.salesforce
        if path == "/services/oauth2/token":
            self._token(method, query, body)
        elif path == "/servlet/policyFileDownload":
            if method != "GET":
                raise ClientError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed")
            state.check_bearer(self.headers.get("Authorization"))
            name, archive = state.open_file(query.get("file"))
            self.send_stream(
                200,
                "application/zip",
                len(archive),
                archive,
                {"Content-Disposition": f'attachment; filename="{name}"'},
            )
        elif match := _VERSIONED.match(path):
            state.check_bearer(self.headers.get("Authorization"))
            self._rest(method, match.group(1), match.group(2) or "", query, body)
        else:
            raise ClientError(404, "NOT_FOUND", "The requested resource does not exist")

    def _token(self, method: str, query: Mapping[str, str], body: bytes) -> None:
        if method != "POST":
            self.send_json(
                405, {"error": "invalid_request", "error_description": "must use HTTP POST"}
            )
            return
        form = dict(query)
        try:
            text = body.decode()
        except UnicodeDecodeError:
            text = ""
        form |= {key: values[0] for key, values in parse_qs(text, keep_blank_values=True).items()}
        try:
            payload = self.sandbox.salesforce.token(form, self.headers.get("Authorization"))
        except OAuthError as exc:
            self.send_json(exc.status, {"error": exc.error, "error_description": exc.description})
            return
        self.send_json(200, payload)

    def _rest(
        self, method: str, version: str, resource: str, query: Mapping[str, str], body: bytes
    ) -> None:
        state = self.sandbox.salesforce
        if resource == "/query":
            if method != "GET":
                raise ClientError(
                    405,
                    "METHOD_NOT_ALLOWED",
                    f"HTTP Method '{method}' not allowed. Allowed are GET",
                )
            self.send_json(200, self._query(version, query.get("q", "")))
        elif resource == "/consent/dsr/rtp/execute":
            if float(version) < MIN_PORTABILITY_VERSION:
                raise ClientError(404, "NOT_FOUND", "The requested resource does not exist")
            if method == "POST":
                self.send_json(200, state.execute(self.json_body(body)))
            elif method == "GET":
                self.send_json(200, state.status(query.get("policyFileId")))
            else:
                raise ClientError(
                    405,
                    "METHOD_NOT_ALLOWED",
                    f"HTTP Method '{method}' not allowed. Allowed are GET,POST",
                )
        else:
            raise ClientError(404, "NOT_FOUND", "The requested resource does not exist")

    def _query(self, version: str, soql: str) -> dict[str, Any]:
        if not soql.strip():
            raise _malformed("the q parameter with a SOQL query is required")
        fields, sobject, email, limit = parse_soql(soql)
        records = self.sandbox.subjects.query_records(sobject, email)
        if limit is not None:
            records = records[:limit]
        rows = []
        for record in records:
            values = record.fields()
            row: dict[str, Any] = {
                "attributes": {
                    "type": sobject,
                    "url": f"/services/data/v{version}/sobjects/{sobject}/{record.id}",
                }
            }
            row |= {name: values[name] for name in fields}
            rows.append(row)
        return {"totalSize": len(rows), "done": True, "records": rows}
