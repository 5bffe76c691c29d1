"""Fake Qualifio GDPR API: profile search, export rules, DPO validation, archives.

Follows ``qualifio-gdpr-export-api.txt`` field for field, including its quirks: the validate
response lists ``ruleTypePayload.profiles`` as bare ids (plus ``clientId`` and ``test``) while
create and get-by-id list ``{crmId, crmKey}`` objects, and the rule's top-level ``updatedAt``
stays equal to ``createdAt``.
"""

from __future__ import annotations

import csv
import datetime as dt
import hmac
import io
import json
import os
import re
import secrets
import string
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .httpbase import ClientError, VendorHandler
from .subjects import is_failing_email
from .zipstream import Member, StreamingZip, bytes_member, padding_member

if TYPE_CHECKING:
    from .core import Sandbox

CLIENT_ID = 2449
API_TOKEN = "sandbox-qualifio-token"
DPO_ID = 4242
RULE_TYPE = "GDPR_ExportData"

_RULE_PATH = re.compile(r"^/v1/gdpr/rules/([^/]+)$")
_VALIDATE_PATH = re.compile(r"^/v1/gdpr/rules/([^/]+)/validate$")
_ARCHIVE_INFO_PATH = re.compile(r"^/v1/gdpr/rules/([^/]+)/archive/([^/]+)$")
_DOWNLOAD_PATH = re.compile(r"^/v1/archive/([^/]+)/([^/]+)$")
_TOKEN_ALPHABET = string.ascii_letters + string.digits


def iso_now() -> str:
    """``2022-01-31T16:08:42.128Z``: the timestamp format of the doc."""
    return iso(dt.datetime.now(dt.UTC))


def iso(moment: dt.datetime) -> str:
    """Milliseconds and a ``Z``, like MongoDB dates serialised by Node."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def object_id() -> str:
    """24 hex characters shaped like a MongoDB ObjectId (timestamp first)."""
    return f"{int(time.time()):08x}" + os.urandom(8).hex()


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _capitalized(value: str) -> str:
    return value[:1].upper() + value[1:]


@dataclass
class Archive:
    """A finished export's archive: where it lives and who downloaded it."""

    id: str
    rule_id: str
    process: str
    token: str
    created: dt.datetime
    downloads: list[dict[str, Any]] = field(default_factory=list)

    def render(self, base_url: str) -> dict[str, Any]:
        """The doc's archive document."""
        return {
            "downloadCount": len(self.downloads),
            "_id": self.id,
            "clientId": CLIENT_ID,
            "url": f"{base_url}/v1/archive/{self.process}/{self.token}",
            "download": list(self.downloads),
            "__v": 0,
        }


@dataclass
class Rule:
    """One GDPR_ExportData rule and its lifecycle NEW → APPROVED → FINISHED | ERROR."""

    id: str
    profiles: list[dict[str, Any]]
    justification: str
    callback_url: str | None
    user_id: int
    created_at: str
    status: str
    status_updated_at: str
    is_auto: bool = False
    accepted_by: int | None = None
    accepted_at: str | None = None
    finished_at: str | None = None
    reason: str | None = None
    archive: Archive | None = None

    def _status(self, *, validate_order: bool = False) -> dict[str, Any]:
        status: dict[str, Any] = {
            "status": self.status,
            "updatedAt": self.status_updated_at,
            "isAuto": self.is_auto,
        }
        if self.accepted_at is not None:
            if validate_order:
                status |= {"acceptedBy": self.accepted_by, "acceptedAt": self.accepted_at}
            else:
                status |= {"acceptedAt": self.accepted_at, "acceptedBy": self.accepted_by}
        if self.finished_at is not None:
            status["finishedAt"] = self.finished_at
        if self.reason is not None:
            status["reason"] = self.reason
        return status

    def render(self, *, validate_shape: bool = False) -> dict[str, Any]:
        """The rule document; ``validate_shape`` reproduces the validate response's payload."""
        body: dict[str, Any] = {
            "ruleStatus": self._status(validate_order=validate_shape),
            "_id": self.id,
        }
        if self.archive is not None:
            body["archive"] = self.archive.id
        if validate_shape:
            payload: dict[str, Any] = {
                "profiles": [profile["id"] for profile in self.profiles],
                "clientId": CLIENT_ID,
                "test": False,
            }
        else:
            payload = {
                "profiles": [
                    {"crmId": profile["id"], "crmKey": profile["trigramme"]}
                    for profile in self.profiles
                ]
            }
        body |= {
            "ruleType": RULE_TYPE,
            "clientId": CLIENT_ID,
            "ruleTypePayload": payload,
            "justification": self.justification,
            "callBackUrl": self.callback_url,
            "userId": self.user_id,
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
            "__v": 0,
        }
        if self.status == "FINISHED":
            first = self.profiles[0]
            body["user"] = {
                "firstName": _capitalized(first["firstName"]),
                "lastName": _capitalized(first["lastName"]),
                "email": first["email"],
                "clientId": CLIENT_ID,
            }
        return body


class QualifioState:
    """Rules and archives of the fake Qualifio account."""

    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox
        self._lock = threading.Lock()
        self._rules: dict[str, Rule] = {}
        self._archives: dict[tuple[str, str], Archive] = {}

    def reset(self) -> None:
        """Forget every rule and archive."""
        with self._lock:
            self._rules.clear()
            self._archives.clear()

    def create_rule(self, body: Any) -> dict[str, Any]:
        """Validate an exportData body and store the rule (approved at once if auto-approve)."""
        if not isinstance(body, dict):
            raise ClientError(400, "BAD_REQUEST", "body must be a JSON object")
        if body.get("ruleType") != RULE_TYPE:
            raise ClientError(400, "BAD_REQUEST", f'ruleType must be "{RULE_TYPE}"')
        if not _is_int(body.get("clientId")) or body["clientId"] != CLIENT_ID:
            raise ClientError(400, "BAD_REQUEST", "clientId must be the integer in the query")
        payload = body.get("ruleTypePayload")
        profile_ids = payload.get("profiles") if isinstance(payload, dict) else None
        if (
            not isinstance(profile_ids, list)
            or not profile_ids
            or not all(_is_int(item) for item in profile_ids)
        ):
            raise ClientError(
                400, "BAD_REQUEST", "ruleTypePayload.profiles must be a non-empty list of ids"
            )
        profiles = [self._sandbox.subjects.profile(pid) for pid in profile_ids]
        unknown = [pid for pid, found in zip(profile_ids, profiles, strict=True) if found is None]
        if unknown:
            raise ClientError(400, "BAD_REQUEST", f"unknown profile ids: {unknown}")
        justification = body.get("justification")
        if not isinstance(justification, str) or not justification.strip():
            raise ClientError(400, "BAD_REQUEST", "justification must be a non-empty string")
        if not _is_int(body.get("userId")):
            raise ClientError(400, "BAD_REQUEST", "userId must be an integer (the DPO id)")
        callback = body.get("callBackUrl")
        if callback is not None:
            parts = urlsplit(callback) if isinstance(callback, str) else None
            if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
                raise ClientError(400, "BAD_REQUEST", "callBackUrl must be an http(s) URL")
        now = iso_now()
        options = self._sandbox.options
        rule = Rule(
            id=object_id(),
            profiles=[profile for profile in profiles if profile is not None],
            justification=justification,
            callback_url=callback,
            user_id=body["userId"],
            created_at=now,
            status="NEW",
            status_updated_at=now,
        )
        if options.qualifio_auto_approve:
            rule.status = "APPROVED"
            rule.is_auto = True
            rule.accepted_by = rule.user_id
            rule.accepted_at = now
        with self._lock:
            self._rules[rule.id] = rule
            rendered = rule.render()
        if rule.is_auto:
            self._schedule_finish(rule.id, options.finish_after)
        return rendered

    def _rule(self, rule_id: str) -> Rule:
        rule = self._rules.get(rule_id)
        if rule is None:
            raise ClientError(404, "NOT_FOUND", f"Rule {rule_id} not found")
        return rule

    def validate(self, rule_id: str, body: Any) -> dict[str, Any]:
        """The DPO approval; only a NEW rule can be approved."""
        with self._lock:
            rule = self._rule(rule_id)
            if not isinstance(body, dict) or not _is_int(body.get("dpo")):
                raise ClientError(400, "BAD_REQUEST", 'body must be {"dpo": <integer DPO id>}')
            if rule.status != "NEW":
                raise ClientError(
                    400,
                    "BAD_REQUEST",
                    f"Rule {rule_id} cannot be validated: status is {rule.status}, not NEW",
                )
            now = iso_now()
            rule.status = "APPROVED"
            rule.status_updated_at = now
            rule.accepted_by = body["dpo"]
            rule.accepted_at = now
            rendered = rule.render(validate_shape=True)
        self._schedule_finish(rule_id, self._sandbox.options.finish_after)
        return rendered

    def get(self, rule_id: str) -> dict[str, Any]:
        """The rule as it is now."""
        with self._lock:
            return self._rule(rule_id).render()

    def archive_info(self, rule_id: str, archive_id: str) -> dict[str, Any]:
        """The archive document of a FINISHED rule."""
        with self._lock:
            rule = self._rule(rule_id)
            if rule.archive is None or rule.archive.id != archive_id:
                raise ClientError(404, "NOT_FOUND", f"Archive {archive_id} not found")
            return rule.archive.render(self._sandbox.qualifio_url)

    def _schedule_finish(self, rule_id: str, delay: float) -> None:
        self._sandbox.scheduler.call_later(delay, lambda: self._finish(rule_id))

    def _finish(self, rule_id: str) -> None:
        """Scheduler job: APPROVED → FINISHED (with an archive) or ERROR, then the callback."""
        with self._lock:
            rule = self._rules.get(rule_id)
            if rule is None or rule.status != "APPROVED":
                return  # reset in between
            now_dt = dt.datetime.now(dt.UTC)
            now = iso(now_dt)
            failing = [p["id"] for p in rule.profiles if is_failing_email(p["email"])]
            if failing:
                rule.status = "ERROR"
                rule.reason = (
                    "Export failed: the participations sub-system returned an error for "
                    f"profile(s) {', '.join(map(str, failing))}"
                )
            else:
                archive = Archive(
                    id=object_id(),
                    rule_id=rule.id,
                    process=f"export_client_{CLIENT_ID}_process_{uuid.uuid4()}",
                    token="".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(25)),
                    created=now_dt,
                )
                rule.archive = archive
                rule.status = "FINISHED"
                rule.finished_at = now
                self._archives[(archive.process, archive.token)] = archive
            rule.status_updated_at = now
            callback = rule.callback_url
            notify = rule.status == "FINISHED" or self._sandbox.options.callback_on_error
        if callback and notify:
            self._sandbox.callbacks.send(callback)

    def open_archive(self, process: str, token: str, client_ip: str) -> tuple[str, StreamingZip]:
        """Count a download and build the archive stream (file name, zip)."""
        with self._lock:
            archive = self._archives.get((process, token))
            if archive is None:
                raise ClientError(404, "NOT_FOUND", "Archive not found")
            archive.downloads.append({"downloadedAt": iso_now(), "ip": client_ip})
            rule = self._rules[archive.rule_id]
            profiles = [dict(profile) for profile in rule.profiles]
        members: list[Member] = [
            bytes_member(
                f"profiles/profile_{profile['id']}.json",
                json.dumps(profile, indent=2, ensure_ascii=False).encode(),
            )
            for profile in profiles
        ]
        members.append(bytes_member("participations.csv", _participations_csv(profiles)))
        padding = self._sandbox.options.archive_padding_bytes
        if padding:
            members.append(padding_member("padding.bin", padding))
        return f"{process}.zip", StreamingZip(members, when=archive.created)


def _participations_csv(profiles: list[dict[str, Any]]) -> bytes:
    """A few deterministic campaign participations per profile."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(
        ["participationId", "profileId", "email", "campaignId", "campaignTitle", "participatedAt"]
    )
    for profile in profiles:
        for n in range(3):
            campaign = 5000 + (profile["id"] * 7 + n * 13) % 400
            writer.writerow(
                [
                    f"{profile['id']}-{n + 1}",
                    profile["id"],
                    profile["email"],
                    campaign,
                    f"Sandbox contest #{campaign}",
                    f"2024-0{n + 1}-1{n}T12:00:00.000Z",
                ]
            )
    return out.getvalue().encode()


class QualifioHandler(VendorHandler):
    """HTTP routes of the Qualifio doc, plus the archive download URL it hands out."""

    vendor = "qualifio"
    json_content_type = "application/json; charset=utf-8"  # Express's default

    def _authenticate(self, query: Mapping[str, str]) -> None:
        """401 for a missing or wrong ``x-api-token``, then 403 for a wrong ``clientId``."""
        token = self.headers.get("x-api-token")
        if not token:
            raise ClientError(401, "UNAUTHORIZED", "Missing x-api-token header")
        if not hmac.compare_digest(token.encode(), API_TOKEN.encode()):
            raise ClientError(401, "UNAUTHORIZED", "Invalid API token")
        client_id = query.get("clientId", "")
        if client_id != str(CLIENT_ID):
            raise ClientError(
                403, "FORBIDDEN", f"Forbidden: this token has no access to clientId {client_id!r}"
            )

    def route(self, method: str, path: str, query: Mapping[str, str], body: bytes) -> None:
        """Dispatch to the doc's endpoints."""
        path = path.rstrip("/") or "/"
        if method == "GET" and (match := _DOWNLOAD_PATH.match(path)):
            name, archive = self.sandbox.qualifio.open_archive(
                *match.groups(), self.client_address[0]
            )
            self.send_stream(
                200,
                "application/zip",
                len(archive),
                archive,
                {"Content-Disposition": f'attachment; filename="{name}"'},
            )
            return
        if not path.startswith("/v1/gdpr/"):
            raise ClientError(404, "NOT_FOUND", f"Cannot {method} {path}")
        self._authenticate(query)
        state = self.sandbox.qualifio
        if method == "GET" and path == "/v1/gdpr/profiles":
            email, first, last = (query.get(k) for k in ("email", "firstName", "lastName"))
            if not (email or first or last):
                raise ClientError(
                    400, "BAD_REQUEST", "at least one of email, firstName, lastName is required"
                )
            profiles = self.sandbox.subjects.search_profiles(
                email=email, first_name=first, last_name=last
            )
            self.send_json(200, profiles)
        elif method == "POST" and path == "/v1/gdpr/rules/exportData":
            self.send_json(200, state.create_rule(self.json_body(body)))
        elif method == "PUT" and (match := _VALIDATE_PATH.match(path)):
            self.send_json(200, state.validate(match.group(1), self.json_body(body)))
        elif method == "GET" and (match := _ARCHIVE_INFO_PATH.match(path)):
            self.send_json(200, state.archive_info(*match.groups()))
        elif method == "GET" and (match := _RULE_PATH.match(path)):
            self.send_json(200, state.get(match.group(1)))
        else:
            raise ClientError(404, "NOT_FOUND", f"Cannot {method} {path}")

    def send_error_body(self, status: int, code: str, message: str) -> None:
        """Qualifio errors are ``{"message": ...}``."""
        self.send_json(status, {"message": message})
