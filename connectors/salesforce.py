"""Salesforce connector: the Portability API (``consent/dsr/rtp/execute``) of one org.

Salesforce compiles the subject's PII (Account, Contact, Individual, Lead, Person account, User)
into one "policy file" per root record: ``POST`` starts the compilation and returns a policy file
id, ``GET ?policyFileId=`` reports ``In Progress`` / ``Complete`` / ``Failed``, and the file is
then downloaded from the returned ``policyFileUrl`` with the session's bearer token. Salesforce
keeps these files for 60 days after completion.

OAuth and REST go through simple-salesforce (``token_login`` and ``Salesforce.restful``), with
the token URL built from the account's stored login URL rather than simple-salesforce's
hardcoded ``https://{domain}.salesforce.com``, so My Domain and local sandboxes work too.

State kept on the vendor job (JSON)::

    {
        "executions": {
            "<18-char record id>": {
                "policy_file_id": "0jeS70000004CBO",
                "policy_file_url": "https://…/servlet/policyFileDownload?file=…",
                "status": "In Progress" | "Complete" | "Failed",
                "warnings": ["…"],
                "executed_at": "2024-05-01T10:00:00+00:00",
                "completed_at": "2024-05-01T10:05:00+00:00",  # first poll that saw Complete
            },
        },
        "api_usage": "api-usage=25/15000",  # latest Sforce-Limit-Info header
    }
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

import jwt
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)
from simple_salesforce.format import quote_soql_value
from simple_salesforce.login import token_login

from . import base, http
from .salesforce_ids import (
    KEY_PREFIXES,
    is_valid_salesforce_id,
    object_type,
    same_salesforce_id,
    to_18,
)

__all__ = [
    "KEY_PREFIXES",
    "SalesforceConnector",
    "is_valid_salesforce_id",
    "object_type",
    "same_salesforce_id",
    "to_18",
]

logger = logging.getLogger(__name__)

VENDOR = "Salesforce"
MIN_API_VERSION = 50.0  # the Portability API exists since 50.0
EXECUTE_PATH = "consent/dsr/rtp/execute"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
JWT_LIFETIME = timedelta(minutes=3)
#: Objects searched by e-mail. Individual has no Email field: it is reached through its Contact
#: or Lead, whose policy covers the linked Individual.
DISCOVERY_OBJECTS = ("Contact", "Lead", "User")
MAX_QUERY_PAGES = 10
ATTEMPTS = 4  # in-process attempts for REQUEST_LIMIT_EXCEEDED, and 5xx/timeouts on GET
FILE_RETENTION = timedelta(days=60)
MAX_ERROR_TEXT = 300

STATUS_IN_PROGRESS = "In Progress"
STATUS_COMPLETE = "Complete"
STATUS_FAILED = "Failed"

_API_VERSION = re.compile(r"^\d{2}\.\d$")
_EMAIL_LIKE = re.compile(r"[^\s'\"<>()\[\],;:]*@[^\s'\"<>()\[\],;:]+")
T = TypeVar("T")


def _utcnow() -> datetime:
    """Current time; a function so tests can move the clock."""
    return datetime.now(UTC)


class _TimeoutSession:
    """``token_login`` posts without a timeout; this passes ours and remembers the status
    (simple-salesforce's SalesforceAuthenticationFailed does not keep it)."""

    def __init__(self, session: requests.Session) -> None:
        self._session = session
        self.status: int | None = None

    def post(self, url: str, data: Any = None, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", http.DEFAULT_TIMEOUT)
        response = self._session.post(url, data=data, **kwargs)
        self.status = response.status_code
        return response


class SalesforceConnector(base.Connector):
    """One Salesforce org, logged in with client credentials or a JWT bearer assertion."""

    vendor = "salesforce"

    def __init__(
        self,
        *,
        login_url: str,
        client_id: str,
        client_secret: str | None = None,
        username: str | None = None,
        private_key: str | None = None,
        policy_name: str,
        api_version: str = "62.0",
        ca_file: str | None = None,
        session: requests.Session | None = None,
        max_archive_bytes: int | None = None,
        allow_private_hosts: bool = True,
    ) -> None:
        self.login_url = _normalise_login_url(login_url)
        if not client_id:
            raise base.ConnectorError("Salesforce account has no consumer key (client id)")
        if not policy_name:
            raise base.ConnectorError("Salesforce account has no portability policy name")
        if not _API_VERSION.match(api_version or "") or float(api_version) < MIN_API_VERSION:
            raise base.ConnectorError(
                f"Salesforce API version {api_version!r} is not usable: expected NN.N, "
                f"at least {MIN_API_VERSION} (the Portability API's first release)"
            )
        if client_secret and (username or private_key):
            raise base.ConnectorError(
                "Salesforce account configures both client credentials (consumer secret) and "
                "JWT bearer (username, private key): keep exactly one"
            )
        if client_secret:
            self.flow = "client credentials"
        elif username and private_key:
            self.flow = "JWT bearer"
        elif username or private_key:
            raise base.ConnectorError(
                "Salesforce JWT bearer login needs both a username and a private key"
            )
        else:
            raise base.ConnectorError(
                "Salesforce account has no login configured: set a consumer secret (client "
                "credentials) or a username and private key (JWT bearer)"
            )
        self.client_id = client_id
        self._client_secret = client_secret or None
        self._username = username or None
        self._private_key = private_key or None
        self.policy_name = policy_name
        self.api_version = api_version
        self.max_archive_bytes = max_archive_bytes
        self.allow_private_hosts = allow_private_hosts
        self.session = session or http.build_session()
        if ca_file:
            if not os.path.isfile(ca_file):
                raise base.ConnectorError("Salesforce CA bundle file does not exist")
            self.session.verify = ca_file
        #: Latest ``Sforce-Limit-Info`` header value, e.g. ``api-usage=25/15000``.
        self.api_usage: str | None = None
        self._sf: Salesforce | None = None
        self._instance_url: str | None = None
        self._last_content_type = ""

    def __repr__(self) -> str:
        host = urlsplit(self.login_url).hostname
        return f"<SalesforceConnector {host} ({self.flow}, API v{self.api_version})>"

    # --- login -----------------------------------------------------------------------------

    @property
    def token_url(self) -> str:
        return f"{self.login_url}/services/oauth2/token"

    @property
    def instance_url(self) -> str:
        """The org's REST host as the token endpoint announced it (logs in if needed)."""
        self._client()
        return cast(str, self._instance_url)

    def _client(self) -> Salesforce:
        """The logged-in simple-salesforce client; logs in lazily, once per session."""
        if self._sf is None:
            self._sf = self._login()
        return self._sf

    def _login(self) -> Salesforce:
        """Get an access token from the account's own token URL, using simple-salesforce."""
        if self._client_secret:
            data: dict[str, Any] = {"grant_type": "client_credentials"}
            pair = f"{self.client_id}:{self._client_secret}".encode()
            headers: dict[str, str] | None = {
                "Authorization": "Basic " + base64.b64encode(pair).decode()
            }
        else:
            data = {"grant_type": JWT_GRANT, "assertion": self._jwt_assertion()}
            headers = None
        what = http.describe("POST", self.token_url)
        token_session = _TimeoutSession(self.session)
        try:
            token, instance = token_login(
                token_url=self.token_url,
                token_data=data,
                domain=self._domain(),
                consumer_key=self.client_id,
                headers=headers,
                proxies=None,
                session=cast(requests.Session, token_session),
            )
        except SalesforceAuthenticationFailed as exc:
            raise self._login_error(exc, what, token_session.status) from None
        except (AttributeError, TypeError):  # token_login read a 200 without instance_url
            raise base.MalformedResponseError(
                f"{VENDOR} token response on {what} has no instance_url"
            ) from None
        except requests.Timeout:
            raise base.VendorUnavailableError(f"{VENDOR} did not answer {what} in time") from None
        except requests.ConnectionError:
            raise base.VendorUnavailableError(f"{VENDOR} unreachable for {what}") from None
        except requests.RequestException as exc:
            raise base.VendorUnavailableError(
                f"{VENDOR} request {what} failed: {type(exc).__name__}"
            ) from None
        host = str(instance or "").split("/")[0]
        if not token or not isinstance(token, str) or not urlsplit(f"https://{host}").hostname:
            raise base.MalformedResponseError(
                f"{VENDOR} token response on {what} lacks access_token or instance_url"
            )
        # simple-salesforce's REST client always speaks https to the instance host.
        self._instance_url = f"https://{host}"
        logger.info("Salesforce login (%s) succeeded; instance host %s", self.flow, host)
        return Salesforce(
            instance_url=self._instance_url,
            session_id=token,
            version=self.api_version,
            session=self.session,
        )

    def _jwt_assertion(self) -> str:
        """RS256 assertion whose audience is the login URL itself (login, test or My Domain)."""
        payload = {
            "iss": self.client_id,
            "sub": self._username,
            "aud": self.login_url,
            "exp": int((_utcnow() + JWT_LIFETIME).timestamp()),
        }
        try:
            return jwt.encode(payload, cast(str, self._private_key), algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            raise base.AuthenticationError(
                f"{VENDOR} JWT login: the private key could not be used "
                "(expected an RSA private key in PEM format)"
            ) from None

    def _domain(self) -> str:
        """simple-salesforce's ``domain`` (only used in its hints): host minus .salesforce.com."""
        host = urlsplit(self.login_url).hostname or ""
        return host.removesuffix(".salesforce.com")

    def _login_error(
        self, exc: SalesforceAuthenticationFailed, what: str, status: int | None
    ) -> base.ConnectorError:
        """The token endpoint's ``{"error", "error_description"}`` as a typed error."""
        if status is not None and status >= 500:
            return base.VendorUnavailableError(
                f"{VENDOR} failed on {what} (HTTP {status})", status_code=status
            )
        if isinstance(exc.__cause__, ValueError):  # the body was not JSON
            return base.MalformedResponseError(
                f"{VENDOR} answered {what} with unreadable content (HTTP {status})",
                status_code=status,
            )
        error = _scrub(str(exc.code or "unknown_error"))
        description = _scrub(exc.auth_message or "")
        detail = f"{error}: {description}" if description else error
        return base.AuthenticationError(
            f"{VENDOR} login ({self.flow}) refused on {what} (HTTP {status}): {detail}",
            status_code=status,
        )

    # --- REST calls ------------------------------------------------------------------------

    def _record_limit_info(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """Response hook: remember API usage and the content type (for unreadable bodies)."""
        value = response.headers.get("Sforce-Limit-Info")
        if value:
            self.api_usage = value
        self._last_content_type = response.headers.get("Content-Type", "")

    def _rest(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        state: base.State | None = None,
    ) -> Any:
        """One REST call relative to ``/services/data/vXX.X/``."""
        url_path = f"/services/data/v{self.api_version}/{path}"
        return self._call(
            method,
            url_path,
            lambda sf: sf.restful(
                path,
                method=method,
                params=params,
                json=json,
                timeout=http.DEFAULT_TIMEOUT,
                hooks={"response": self._record_limit_info},
            ),
            state=state,
        )

    def _call(
        self,
        method: str,
        url_path: str,
        call: Callable[[Salesforce], T],
        *,
        state: base.State | None = None,
        redact: tuple[str, ...] = (),
    ) -> T:
        """Run ``call`` with our error mapping, session refresh and retries.

        ``url_path`` is for messages only (never a query string: SOQL carries the e-mail).
        POST is retried only on REQUEST_LIMIT_EXCEEDED, which Salesforce did not process.
        ``redact`` lists strings (the subject's e-mail) to blank out of vendor error text.
        """
        what = f"{method} {url_path}"
        idempotent = method.upper() != "POST"
        relogged = False
        attempt = 1
        while True:
            sf = self._client()
            retry = False
            try:
                return call(sf)
            except SalesforceExpiredSession as exc:
                if relogged:
                    raise base.AuthenticationError(
                        f"{VENDOR} rejected a fresh session on {what} (HTTP 401)"
                        f"{_detail(exc.content, redact)}",
                        status_code=401,
                    ) from None
                logger.info("Salesforce session expired; logging in again")
                self._sf, relogged = None, True
                continue
            except SalesforceRefusedRequest as exc:
                if "REQUEST_LIMIT_EXCEEDED" not in _error_codes(exc.content):
                    raise base.AuthenticationError(
                        f"{VENDOR} refused {what} (HTTP 403){_detail(exc.content, redact)}",
                        status_code=403,
                    ) from None
                if attempt >= ATTEMPTS:
                    raise base.RateLimitedError(
                        f"{VENDOR} API request limit exceeded on {what} (HTTP 403)"
                        f"{_detail(exc.content, redact)}",
                        status_code=403,
                    ) from None
                retry = True
            except SalesforceResourceNotFound as exc:
                raise base.NotFoundError(
                    f"{VENDOR} found nothing at {what} (HTTP 404){_detail(exc.content, redact)}",
                    status_code=404,
                ) from None
            except (SalesforceMalformedRequest, SalesforceMoreThanOneRecord) as exc:
                raise base.VendorError(
                    f"{VENDOR} rejected {what} (HTTP {exc.status}){_detail(exc.content, redact)}",
                    status_code=exc.status,
                ) from None
            except SalesforceError as exc:  # SalesforceGeneralError: any other status
                status = exc.status
                if status >= 500 and idempotent and attempt < ATTEMPTS:
                    retry = True
                elif status >= 500:
                    raise base.VendorUnavailableError(
                        f"{VENDOR} failed on {what} (HTTP {status}){_detail(exc.content, redact)}",
                        status_code=status,
                    ) from None
                elif status == 429:
                    raise base.RateLimitedError(
                        f"{VENDOR} rate limited {what} (HTTP 429){_detail(exc.content, redact)}",
                        status_code=429,
                    ) from None
                else:
                    raise base.VendorError(
                        f"{VENDOR} rejected {what} (HTTP {status}){_detail(exc.content, redact)}",
                        status_code=status,
                    ) from None
            except ValueError:  # a 2xx whose body is not JSON (requests' JSONDecodeError)
                kind = self._last_content_type.split(";")[0] or "an unknown content type"
                raise base.MalformedResponseError(
                    f"{VENDOR} answered {what} with unreadable content ({kind})"
                ) from None
            except requests.Timeout:
                if not (idempotent and attempt < ATTEMPTS):
                    raise base.VendorUnavailableError(
                        f"{VENDOR} did not answer {what} in time"
                    ) from None
                retry = True
            except requests.ConnectionError:
                if not (idempotent and attempt < ATTEMPTS):
                    raise base.VendorUnavailableError(f"{VENDOR} unreachable for {what}") from None
                retry = True
            except requests.RequestException as exc:
                raise base.VendorUnavailableError(
                    f"{VENDOR} request {what} failed: {type(exc).__name__}"
                ) from None
            finally:
                if state is not None and self.api_usage:
                    state["api_usage"] = self.api_usage
            if retry:
                http._sleep(http.backoff_delay(attempt))
                attempt += 1

    # --- Connector -------------------------------------------------------------------------

    def external_reference(self, state: base.State) -> str:
        """The first policy file id, which a DPO may paste into the case search."""
        executions = state.get("executions") or {}
        ids = [str(e.get("policy_file_id") or "") for e in executions.values()]
        return next((i for i in ids if i), "")

    def discover(self, subject: base.Subject) -> list[base.Match]:
        """Records to export: the case's record id as given, else Contacts, Leads and Users
        with the subject's e-mail (SOQL).

        Individual has no Email field, so it is not searched: it is reached through the
        Contact or Lead it is linked to, whose portability policy includes it. A person
        account's contact side is found by the Contact search; to start from the Account
        itself, record its 001 id on the case. Results are de-duplicated by 18-char id.
        """
        if subject.salesforce_id:
            if not is_valid_salesforce_id(subject.salesforce_id):
                raise base.ConnectorError(
                    "the case's Salesforce record id is not a valid 15- or 18-character id"
                )
            record_id = to_18(subject.salesforce_id)
            return [
                base.Match(vendor_id=record_id, email=subject.email, detail=object_type(record_id))
            ]
        if not subject.email:
            return []
        matches: dict[str, base.Match] = {}
        literal = quote_soql_value(subject.email)  # escapes \\ and ' (and " \\n …) per SOQL
        redact = (subject.email, literal, literal[1:-1])
        for sobject in DISCOVERY_OBJECTS:
            # The object name is one of our constants and the value is a quoted SOQL literal.
            soql = f"SELECT Id, FirstName, LastName, Email FROM {sobject} WHERE Email = {literal}"  # noqa: S608
            for record in self._query(soql, redact):
                raw_id = str(record.get("Id") or "")
                if not is_valid_salesforce_id(raw_id):
                    raise base.MalformedResponseError(
                        f"{VENDOR} returned a {sobject} without a valid Id"
                    )
                record_id = to_18(raw_id)
                if any(same_salesforce_id(record_id, known) for known in matches):
                    continue
                name = " ".join(
                    str(record.get(key) or "").strip() for key in ("FirstName", "LastName")
                ).strip()
                matches[record_id] = base.Match(
                    vendor_id=record_id,
                    name=name,
                    email=str(record.get("Email") or ""),
                    detail=sobject,
                )
        return list(matches.values())

    def _query(self, soql: str, redact: tuple[str, ...]) -> list[dict[str, Any]]:
        """All records of a SOQL query, following ``nextRecordsUrl`` for a few pages."""
        path = f"/services/data/v{self.api_version}/query"
        kwargs: dict[str, Any] = {
            "timeout": http.DEFAULT_TIMEOUT,
            "hooks": {"response": self._record_limit_info},
        }
        page = self._call("GET", path, lambda sf: sf.query(soql, **kwargs), redact=redact)
        records: list[dict[str, Any]] = []
        for _ in range(MAX_QUERY_PAGES):
            if not isinstance(page, dict) or not isinstance(page.get("records"), list):
                raise base.MalformedResponseError(f"{VENDOR} answered GET {path} without records")
            records.extend(r for r in page["records"] if isinstance(r, dict))
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not isinstance(next_url, str):
                return records
            if not next_url.startswith("/services/data/"):
                raise base.MalformedResponseError(f"{VENDOR} query paging left the data API")
            page = self._call(
                "GET",
                path,
                lambda sf, url=next_url: sf.query_more(url, identifier_is_url=True, **kwargs),
                redact=redact,
            )
        return records

    def prepare(
        self,
        subject: base.Subject,
        matches: list[base.Match],
        state: base.State,
        *,
        callback_url: str,
        checkpoint: base.Checkpoint,
    ) -> str | None:
        """Nothing to create before approval: Salesforce has no pre-approval step."""
        return None

    def start(
        self,
        subject: base.Subject,
        matches: list[base.Match],
        state: base.State,
        *,
        approver_id: str | None,
        checkpoint: base.Checkpoint,
    ) -> str | None:
        """Execute the portability policy once per matched record.

        Each execution is checkpointed right after its POST, so a worker killed mid-way
        never executes a finished record again. ``approver_id`` is unused: Salesforce has no
        approval step of its own (the DPO's approval happened in our admin).
        """
        executions: dict[str, Any] = state.setdefault("executions", {})
        executed = skipped = 0
        for match in matches:
            if not is_valid_salesforce_id(match.vendor_id):
                raise base.ConnectorError("a Salesforce match has an invalid record id")
            record_id = to_18(match.vendor_id)
            if any(same_salesforce_id(record_id, known) for known in executions):
                skipped += 1
                continue
            # The doc's parameter table spells "dataSubjectId"; its example body spells
            # "dataSubjectID". We follow the table (the normative part).
            envelope = self._rest(
                "POST",
                EXECUTE_PATH,
                json={"dataSubjectId": record_id, "policyName": self.policy_name},
                state=state,
            )
            result = self._envelope_result(envelope, f"POST {self._execute_url_path()}")
            now = _utcnow().isoformat(timespec="seconds")
            execution: dict[str, Any] = {
                "policy_file_id": result["policy_file_id"],
                "policy_file_url": result["policy_file_url"],
                "status": result["status"],
                "warnings": result["warnings"],
                "executed_at": now,
            }
            if result["status"] == STATUS_COMPLETE:
                execution["completed_at"] = now
            executions[record_id] = execution
            checkpoint(state)
            executed += 1
        note = f"Salesforce portability request executed for {executed} record(s)"
        if skipped:
            note += f"; {skipped} already executed earlier"
        return note

    def poll(self, state: base.State, *, checkpoint: base.Checkpoint) -> base.PollResult:
        """Ask for the status of every policy file that is not Complete yet."""
        executions: dict[str, dict[str, Any]] = state.get("executions") or {}
        if not executions:
            raise base.ConnectorError("no Salesforce portability execution to poll")
        try:
            for execution in executions.values():
                if execution.get("status") == STATUS_COMPLETE:
                    execution.setdefault("completed_at", _utcnow().isoformat(timespec="seconds"))
                    continue
                file_id = str(execution["policy_file_id"])
                envelope = self._rest(
                    "GET", EXECUTE_PATH, params={"policyFileId": file_id}, state=state
                )
                what = f"GET {self._execute_url_path()}"
                result = self._envelope_result(envelope, what)
                execution["status"] = result["status"]
                execution["warnings"] = result["warnings"]
                if result["policy_file_url"]:
                    execution["policy_file_url"] = result["policy_file_url"]
                status = result["status"]
                if status == STATUS_COMPLETE:
                    execution.setdefault("completed_at", _utcnow().isoformat(timespec="seconds"))
                elif status == STATUS_FAILED:
                    return base.PollResult(
                        base.Phase.FAILED,
                        f"policy file {file_id} Failed{_warnings_text(result['warnings'])}",
                    )
                elif status != STATUS_IN_PROGRESS:
                    raise base.VendorError(
                        f"{VENDOR} reported an unknown policyFileStatus {_scrub(status)!r}"
                    )
        finally:
            checkpoint(state)
        pending = [e for e in executions.values() if e.get("status") != STATUS_COMPLETE]
        done = len(executions) - len(pending)
        if pending:
            return base.PollResult(
                base.Phase.RUNNING,
                f"policy file In Progress ({done} of {len(executions)} Complete)",
            )
        archives = [
            base.ArchiveRef(
                key=str(e["policy_file_id"]), filename=f"salesforce-{e['policy_file_id']}.zip"
            )
            for e in executions.values()
        ]
        return base.PollResult(
            base.Phase.READY, f"{len(archives)} policy file(s) Complete", archives
        )

    def download(
        self, state: base.State, archive: base.ArchiveRef, sink: BinaryIO
    ) -> base.DownloadInfo:
        """Stream one policy file from the org's own host, with the session's bearer token.

        Redirects are followed only while they stay on that host.
        """
        execution = next(
            (
                e
                for e in (state.get("executions") or {}).values()
                if str(e.get("policy_file_id")) == archive.key
            ),
            None,
        )
        if execution is None:
            raise base.NotFoundError(f"no Salesforce execution in this job has file {archive.key}")
        url = str(execution.get("policy_file_url") or "")
        for attempt in range(2):  # a second time after logging in again on a 401
            sf = self._client()
            response = http.get_archive(
                self.session,
                VENDOR,
                url,
                allowed_base_url=cast(str, self._instance_url),
                allow_private_hosts=self.allow_private_hosts,
                headers={"Authorization": f"Bearer {sf.session_id}"},
                hooks={"response": self._record_limit_info},
            )
            if self.api_usage:
                state["api_usage"] = self.api_usage
            if response.status_code == 401 and attempt == 0:
                response.close()
                self._sf = None
                continue
            break
        if response.status_code == 404:
            response.close()
            raise self._missing_file_error(archive.key, execution)
        if response.status_code >= 300:
            response.close()
            http.raise_for_status(response, VENDOR)
            raise base.VendorError(
                f"{VENDOR} redirected the policy file download too often",
                status_code=response.status_code,
            )
        content_type = response.headers.get("Content-Type", "") or "application/octet-stream"
        if content_type.split(";")[0].strip().lower() == "text/html":
            response.close()
            raise base.MalformedResponseError(
                f"{VENDOR} answered the policy file download with an HTML page, not the file"
            )
        announced = response.headers.get("Content-Length", "")
        http.stream_to(response, sink, vendor=VENDOR, max_bytes=self.max_archive_bytes)
        return base.DownloadInfo(
            content_type=content_type,
            announced_size=int(announced) if announced.isdigit() else None,
        )

    # --- helpers ---------------------------------------------------------------------------

    def _missing_file_error(self, file_id: str, execution: dict[str, Any]) -> base.ConnectorError:
        completed_at = execution.get("completed_at")
        if completed_at:
            try:
                completed = datetime.fromisoformat(str(completed_at))
            except ValueError:
                completed = None
            if completed is not None and _utcnow() - completed > FILE_RETENTION:
                return base.VendorError(
                    f"{VENDOR} deleted policy file {file_id} (files are kept 60 days after "
                    f"completion; it completed on {completed.date().isoformat()})",
                    status_code=404,
                )
        return base.NotFoundError(
            f"{VENDOR} found no policy file {file_id} (HTTP 404)", status_code=404
        )

    def _execute_url_path(self) -> str:
        return f"/services/data/v{self.api_version}/{EXECUTE_PATH}"

    def _envelope_result(self, envelope: Any, what: str) -> dict[str, Any]:
        """Validate ``{"status", "warnings", "result": {...}}`` and return its fields.

        The doc's GET table spells policyFileURL/policyFileID while its examples spell
        policyFileUrl/policyFileId: both are accepted.
        """
        if not isinstance(envelope, dict):
            raise base.MalformedResponseError(f"{VENDOR} answered {what} without a JSON object")
        warnings = _warnings_list(envelope.get("warnings"))
        status = envelope.get("status")
        if status != "SUCCESS":
            raise base.VendorError(
                f"{VENDOR} did not accept {what}: status {_scrub(str(status))!r}"
                f"{_warnings_text(warnings)}"
            )
        result = envelope.get("result")
        if not isinstance(result, dict):
            raise base.MalformedResponseError(f"{VENDOR} answered {what} without a result")
        file_id = result.get("policyFileId", result.get("policyFileID"))
        file_status = result.get("policyFileStatus")
        file_url = result.get("policyFileUrl", result.get("policyFileURL")) or ""
        if not isinstance(file_id, str) or not file_id or not isinstance(file_status, str):
            raise base.MalformedResponseError(
                f"{VENDOR} answered {what} without policyFileId or policyFileStatus"
            )
        return {
            "policy_file_id": file_id,
            "policy_file_url": str(file_url),
            "status": file_status,
            "warnings": warnings,
        }


def _normalise_login_url(login_url: str) -> str:
    """``https://host[:port]`` without a trailing slash; anything else is a config error."""
    parts = urlsplit((login_url or "").strip())
    if (
        parts.scheme != "https"
        or not parts.hostname
        or parts.username
        or parts.password
        or parts.query
        or parts.fragment
        or parts.path not in ("", "/")
    ):
        raise base.ConnectorError(
            "Salesforce login URL must look like https://login.salesforce.com, "
            "https://test.salesforce.com or https://<my-domain>.my.salesforce.com"
        )
    return f"https://{parts.netloc}"


def _scrub(text: str, redact: tuple[str, ...] = ()) -> str:
    """Vendor text for our messages: no e-mail addresses (SOQL errors echo the query), short."""
    text = str(text)
    for secret in sorted(filter(None, redact), key=len, reverse=True):
        text = text.replace(secret, "[email]")
    text = _EMAIL_LIKE.sub("[email]", " ".join(text.split()))
    return text if len(text) <= MAX_ERROR_TEXT else text[: MAX_ERROR_TEXT - 1] + "…"


def _error_codes(content: Any) -> set[str]:
    if isinstance(content, list):
        return {str(e.get("errorCode")) for e in content if isinstance(e, dict)}
    return set()


def _detail(content: Any, redact: tuple[str, ...] = ()) -> str:
    """The REST error array ``[{"message", "errorCode"}]`` as ``: errorCode: message; …``."""
    if isinstance(content, list):
        parts = [
            f"{e.get('errorCode', 'ERROR')}: {e.get('message', '')}".rstrip(": ")
            for e in content
            if isinstance(e, dict)
        ]
        return f": {_scrub('; '.join(parts), redact)}" if parts else ""
    if isinstance(content, dict) and ("error" in content or "message" in content):
        code = content.get("error") or content.get("errorCode") or "ERROR"
        message = content.get("error_description") or content.get("message") or ""
        return f": {_scrub(f'{code}: {message}', redact)}"
    return ""  # HTML or text bodies are not repeated: they can be long and carry anything


def _warnings_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        return []
    return [_scrub(w if isinstance(w, str) else str(w)) for w in value]


def _warnings_text(warnings: list[str]) -> str:
    return f" (warnings: {'; '.join(warnings)})" if warnings else ""
