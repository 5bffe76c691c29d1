"""Qualifio GDPR "Data access and Portability" export, as the vendor documents it.

The flow is: search profiles by e-mail → create a ``GDPR_ExportData`` rule → validate it as the
DPO (unless Qualifio auto-approved it) → poll the rule until it is FINISHED with an ``archive``
→ ask for the archive location → stream the archive. Every call carries the account's
``clientId`` query parameter, the ``x-api-token`` header and ``Accept: application/json``.

Two calls change things at Qualifio and must never be repeated: creating the rule (a second
rule would export the data twice) and validating it. Both are checkpointed in ``state``.
The API token is never put in a message, a repr or a log line; e-mails are never logged.
"""

from __future__ import annotations

import logging
import re
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import requests

from . import http
from .base import (
    ArchiveRef,
    Checkpoint,
    Connector,
    ConnectorError,
    DownloadInfo,
    MalformedResponseError,
    Match,
    Phase,
    PollResult,
    State,
    Subject,
    VendorError,
)

logger = logging.getLogger(__name__)

VENDOR = "Qualifio"
DEFAULT_BASE_URL = "https://api.qualif.io"
RULE_TYPE = "GDPR_ExportData"

STATUS_NEW = "NEW"
STATUS_APPROVED = "APPROVED"
STATUS_FINISHED = "FINISHED"
#: Statuses meaning "accepted, the export is under way". Only NEW and APPROVED are documented;
#: the others are obvious in-progress names we accept rather than alarm a human about.
IN_PROGRESS_STATUSES = frozenset(
    {STATUS_NEW, STATUS_APPROVED, "PENDING", "IN_PROGRESS", "PROCESSING", "RUNNING"}
)
FAILURE_STATUSES = frozenset({"ERROR", "FAILED", "REJECTED", "CANCELLED", "CANCELED", "EXPIRED"})
#: What a successful validate may answer: approved, or already further along.
VALIDATED_STATUSES = (IN_PROGRESS_STATUSES - {STATUS_NEW}) | {STATUS_FINISHED}
#: Where a failed rule may explain itself (top level or inside ``ruleStatus``).
REASON_FIELDS = ("reason", "message", "error", "errorMessage", "comment", "rejectionReason")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")


class QualifioConnector(Connector):
    """One Qualifio account (a ``clientId`` and its API token)."""

    vendor = "qualifio"

    def __init__(
        self,
        *,
        base_url: str = DEFAULT_BASE_URL,
        client_id: int,
        api_token: str,
        default_dpo_id: int | None,
        session: requests.Session | None = None,
        max_archive_bytes: int | None = None,
        allow_private_hosts: bool = True,
    ) -> None:
        parts = urlsplit(base_url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectorError(f"{VENDOR} account is misconfigured: base URL is not http(s)")
        self.base_url = base_url.rstrip("/")
        self.client_id = _as_int(client_id, f"{VENDOR} account is misconfigured: client id")
        if not api_token:
            raise ConnectorError(f"{VENDOR} account is misconfigured: no API token")
        self._api_token = api_token
        self.default_dpo_id = (
            None
            if default_dpo_id is None
            else _as_int(default_dpo_id, f"{VENDOR} account is misconfigured: default DPO id")
        )
        self.session = session if session is not None else http.build_session()
        self.max_archive_bytes = max_archive_bytes
        self.allow_private_hosts = allow_private_hosts

    def __repr__(self) -> str:
        # Deliberately without the token.
        return f"QualifioConnector(base_url={self.base_url!r}, client_id={self.client_id})"

    # --- Connector interface ---------------------------------------------------------------

    def external_reference(self, state: State) -> str:
        """The export rule's id, which a DPO may paste into the case search."""
        return str(state.get("rule_id") or "")

    def discover(self, subject: Subject) -> list[Match]:
        """Profiles Qualifio holds for the subject's e-mail address.

        The search is by e-mail only, never by first/last name: a name-only search could match
        a namesake, and we would then export someone else's personal data to the requester.
        """
        if not subject.email.strip():
            raise ConnectorError(
                f"{VENDOR} profiles can only be searched by e-mail, and the subject has none"
            )
        body = self._call("GET", "/v1/gdpr/profiles", params={"email": subject.email.strip()})
        if not isinstance(body, list):
            raise MalformedResponseError(f"{VENDOR} profile search did not return a JSON array")
        matches: list[Match] = []
        seen: set[str] = set()
        for profile in body:
            if not isinstance(profile, dict) or _profile_id(profile.get("id")) is None:
                raise MalformedResponseError(
                    f"{VENDOR} profile search returned an entry without a numeric id"
                )
            vendor_id = str(_profile_id(profile["id"]))
            if vendor_id in seen:
                continue
            seen.add(vendor_id)
            name = " ".join(
                str(profile.get(key) or "").strip() for key in ("firstName", "lastName")
            ).strip()
            matches.append(
                Match(
                    vendor_id=vendor_id,
                    name=name,
                    email=str(profile.get("email") or ""),
                    detail=str(profile.get("trigramme") or ""),
                )
            )
        logger.info("%s profile search found %d profile(s)", VENDOR, len(matches))
        return matches

    def prepare(
        self,
        subject: Subject,
        matches: list[Match],
        state: State,
        *,
        callback_url: str,
        checkpoint: Checkpoint,
    ) -> str | None:
        """Create the export rule, once: a rule already in ``state`` is never created again."""
        if state.get("rule_id"):
            return None
        if self.default_dpo_id is None:
            raise ConnectorError(
                f"{VENDOR} account has no default DPO user id: it is required to create "
                "an export rule"
            )
        profiles = _profile_ids(matches)
        if not profiles:
            raise ConnectorError(f"{VENDOR} export needs at least one matched profile")
        payload: dict[str, Any] = {
            "ruleType": RULE_TYPE,
            "clientId": self.client_id,
            "ruleTypePayload": {"profiles": profiles},
            "justification": subject.justification,
            "userId": self.default_dpo_id,
        }
        if callback_url:
            payload["callBackUrl"] = callback_url
        body = self._call("POST", "/v1/gdpr/rules/exportData", json=payload)
        rule_id = body.get("_id") if isinstance(body, dict) else None
        if not isinstance(rule_id, str) or not rule_id:
            raise MalformedResponseError(
                f"{VENDOR} created an export rule but did not return its _id: check the "
                "account's rules before retrying, a rule may exist"
            )
        # Record the rule before looking at anything else so a surprise below cannot lead to a
        # second rule on the next attempt.
        state["rule_id"] = rule_id
        status, is_auto = _rule_status(body)
        state["rule_status"] = status
        state["is_auto"] = is_auto
        checkpoint(state)
        logger.info("%s export rule %s created (status %s)", VENDOR, rule_id, status)
        if _auto_approved(state):
            return f"{VENDOR} auto-approved rule {rule_id} (isAuto): validate will be skipped"
        return f"{VENDOR} export rule {rule_id} created (status {status or 'unknown'})"

    def start(
        self,
        subject: Subject,
        matches: list[Match],
        state: State,
        *,
        approver_id: str | None,
        checkpoint: Checkpoint,
    ) -> str | None:
        """Validate the rule as the DPO, exactly once, even across a crash mid-call."""
        if state.get("validated"):  # only on a resume: say so in the audit trail
            rule = state.get("rule_id")
            return f"{VENDOR} rule {rule} was validated before a restart: not sent again"
        rule_id = self._rule_id(state)
        if _auto_approved(state):
            state["validated"] = True
            checkpoint(state)
            return f"validate skipped: {VENDOR} auto-approved rule {rule_id} (isAuto)"
        dpo = self._dpo_id(approver_id)
        if state.get("validate_sent") or state.get("rule_status") is None:
            # A previous attempt may have reached Qualifio before we could record the answer
            # (or the creation answer lacked a status): ask before validating again.
            body = self._call("GET", f"/v1/gdpr/rules/{_segment(rule_id)}")
            status, _ = _rule_status(body)
            if status is None:
                raise MalformedResponseError(f"{VENDOR} rule {rule_id} has no status")
            state["rule_status"] = status
            if status.upper() != STATUS_NEW:
                state["validated"] = True
                checkpoint(state)
                return f"{VENDOR} rule {rule_id} already {status}: validate not repeated"
        state["validate_sent"] = True
        checkpoint(state)
        # Not idempotent: a validate that half-succeeded (5xx, timeout) must be checked with a
        # GET (above) before it is ever sent again. A 429 was not processed and is retried.
        body = self._call(
            "PUT",
            f"/v1/gdpr/rules/{_segment(rule_id)}/validate",
            json={"dpo": dpo},
            idempotent=False,
        )
        status, _ = _rule_status(body)
        if status is None:
            raise MalformedResponseError(f"{VENDOR} validate of rule {rule_id} returned no status")
        state["rule_status"] = status
        upper = status.upper()
        if upper in FAILURE_STATUSES:
            # Qualifio processed the validate: never send it again; poll reports the failure.
            state["validated"] = True
            checkpoint(state)
            raise VendorError(
                f"{VENDOR} rule {rule_id} is {_short(status)} after validation"
                f"{_reason_suffix(body)}"
            )
        if upper not in VALIDATED_STATUSES:
            checkpoint(state)
            raise VendorError(
                f"{VENDOR} did not approve rule {rule_id} on validate (status {_short(status)})"
            )
        state["validated"] = True
        checkpoint(state)
        logger.info("%s rule %s validated by DPO %s", VENDOR, rule_id, dpo)
        return f"{VENDOR} rule {rule_id} validated by DPO {dpo}"

    def poll(self, state: State, *, checkpoint: Checkpoint) -> PollResult:
        """Read the rule; FINISHED with an ``archive`` id means the export can be downloaded.

        Read-only at Qualifio, so ``state`` is updated (rule_status, archive_id) without a
        checkpoint: losing it only costs one more poll.
        """
        rule_id = self._rule_id(state)
        body = self._call("GET", f"/v1/gdpr/rules/{_segment(rule_id)}")
        status, _ = _rule_status(body)
        if status is None:
            raise MalformedResponseError(f"{VENDOR} rule {rule_id} has no status")
        state["rule_status"] = status
        upper = status.upper()
        detail = f"{VENDOR} rule {rule_id}: {status}"
        if upper == STATUS_FINISHED:
            archive = body.get("archive")
            if isinstance(archive, int) and not isinstance(archive, bool):
                archive = str(archive)
            if not isinstance(archive, str) or not archive:
                raise MalformedResponseError(
                    f"{VENDOR} rule {rule_id} is FINISHED but names no archive"
                )
            state["archive_id"] = archive
            return PollResult(
                Phase.READY,
                detail,
                [ArchiveRef(key=archive, filename=f"qualifio-rule-{rule_id}.zip")],
            )
        if upper in IN_PROGRESS_STATUSES:
            return PollResult(Phase.RUNNING, detail)
        if upper in FAILURE_STATUSES:
            return PollResult(Phase.FAILED, detail + _reason_suffix(body))
        raise VendorError(f"{VENDOR} reported an unknown rule status {_short(status)!r}")

    def download(self, state: State, archive: ArchiveRef, sink: BinaryIO) -> DownloadInfo:
        """Ask where the archive is, refuse any other host, then stream it into ``sink``."""
        rule_id = self._rule_id(state)
        body = self._call(
            "GET", f"/v1/gdpr/rules/{_segment(rule_id)}/archive/{_segment(archive.key)}"
        )
        url = body.get("url") if isinstance(body, dict) else None
        if not isinstance(url, str) or not url:
            raise MalformedResponseError(f"{VENDOR} archive location has no url")
        response = http.get_archive(
            self.session,
            VENDOR,
            url,
            allowed_base_url=self.base_url,
            allow_private_hosts=self.allow_private_hosts,
            headers=self._headers(),
        )
        try:
            http.raise_for_status(response, VENDOR)
        except ConnectorError:
            response.close()
            raise
        content_type = response.headers.get("Content-Type") or "application/zip"
        length = response.headers.get("Content-Length", "")
        announced = int(length) if length.isdigit() else None
        written = http.stream_to(response, sink, vendor=VENDOR, max_bytes=self.max_archive_bytes)
        logger.info("%s archive of rule %s downloaded (%d bytes)", VENDOR, rule_id, written)
        return DownloadInfo(content_type=content_type, announced_size=announced)

    # --- plumbing ---------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"x-api-token": self._api_token, "Accept": "application/json"}

    def _call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json: Any = None,
        idempotent: bool | None = None,
    ) -> Any:
        """One documented API call: clientId on the query, token header, JSON in and out."""
        query: dict[str, Any] = {"clientId": self.client_id, **(params or {})}
        kwargs: dict[str, Any] = {"params": query, "headers": self._headers()}
        if json is not None:
            kwargs["json"] = json
        response = http.send(
            self.session,
            VENDOR,
            method,
            self.base_url + path,
            idempotent=idempotent,
            allow_redirects=False,
            **kwargs,
        )
        http.raise_for_status(response, VENDOR)
        if response.is_redirect:
            raise VendorError(
                f"{VENDOR} answered {http.describe(method, path)} with a redirect "
                f"(HTTP {response.status_code}): not followed",
                status_code=response.status_code,
            )
        return http.json_body(response, VENDOR)

    def _rule_id(self, state: State) -> str:
        rule_id = state.get("rule_id")
        if not isinstance(rule_id, str) or not rule_id:
            raise ConnectorError(f"{VENDOR} job has no export rule yet: prepare must run first")
        return rule_id

    def _dpo_id(self, approver_id: str | None) -> int:
        """The approving DPO's Qualifio user id, falling back to the account's default DPO."""
        if approver_id is not None and str(approver_id).strip():
            value = str(approver_id).strip()
            if not value.isdigit():
                # Not echoed: it could be an e-mail address typed in the wrong field.
                raise ConnectorError(
                    f"{VENDOR} needs the approver's numeric Qualifio user id; "
                    "the approver id given is not a number"
                )
            return int(value)
        if self.default_dpo_id is None:
            raise ConnectorError(
                f"{VENDOR} validation needs a DPO user id: no approver id and no default DPO"
            )
        return self.default_dpo_id


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ConnectorError(f"{what} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ConnectorError(f"{what} must be an integer")


def _profile_id(value: Any) -> int | None:
    """Qualifio profile ids are integers; a digit string is tolerated, anything else is not."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _profile_ids(matches: list[Match]) -> list[int]:
    ids: list[int] = []
    for match in matches:
        profile_id = _profile_id(match.vendor_id)
        if profile_id is None:
            raise ConnectorError(f"{VENDOR} profile id {_short(match.vendor_id)!r} is not numeric")
        if profile_id not in ids:
            ids.append(profile_id)
    return ids


def _rule_status(body: Any) -> tuple[str | None, bool]:
    """``(ruleStatus.status, ruleStatus.isAuto)``; MalformedResponseError if not a rule."""
    if not isinstance(body, dict):
        raise MalformedResponseError(f"{VENDOR} did not return a rule object")
    rule_status = body.get("ruleStatus")
    if not isinstance(rule_status, dict):
        return None, False
    status = rule_status.get("status")
    is_auto = rule_status.get("isAuto") is True
    return (status if isinstance(status, str) and status else None), is_auto


def _auto_approved(state: State) -> bool:
    """Qualifio approved the rule itself: validating it again would be refused or repeated."""
    status = state.get("rule_status")
    return bool(state.get("is_auto")) or (isinstance(status, str) and status.upper() != STATUS_NEW)


def _segment(value: str) -> str:
    """A vendor id placed in a path, escaped so it can never climb to another route."""
    return quote(str(value), safe="")


def _short(value: Any, limit: int = 60) -> str:
    text = _EMAIL.sub("[email]", str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _reason_suffix(body: Any) -> str:
    """The vendor's reason for a failure, if it gives one, without e-mail addresses."""
    if not isinstance(body, dict):
        return ""
    places = [body]
    if isinstance(body.get("ruleStatus"), dict):
        places.insert(0, body["ruleStatus"])
    for place in places:
        for key in REASON_FIELDS:
            value = place.get(key)
            if isinstance(value, dict):
                value = value.get("message") or value.get("reason")
            if value and isinstance(value, str | int | float):
                return f" ({_short(value, 200)})"
    return ""
