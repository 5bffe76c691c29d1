"""The people both fake vendors know about, and the record ids they expose.

One directory backs both vendors so that a demo subject looks like the same person everywhere.
Salesforce ids are derived from a hash of the object type and email, so they stay the same
across restarts and a demo database that stored them keeps working.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

QUALIFIO = "qualifio"
SALESFORCE = "salesforce"
VENDORS = (QUALIFIO, SALESFORCE)

AUTO_DOMAIN = "auto.example"
SALESFORCE_PREFIXES = {"Contact": "003", "Lead": "00Q", "User": "005"}

_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_CHARS = re.compile(r"^[a-zA-Z0-9]+$")


def salesforce_checksum(id15: str) -> str:
    """The 3-character suffix that makes a 15-character id safe for case-insensitive systems."""
    suffix = ""
    for start in range(0, 15, 5):
        bits = sum(1 << i for i, char in enumerate(id15[start : start + 5]) if "A" <= char <= "Z")
        suffix += _SUFFIX_ALPHABET[bits]
    return suffix


def to_id18(id15: str) -> str:
    """The 18-character form Salesforce returns from the REST API."""
    return id15 + salesforce_checksum(id15)


def normalize_salesforce_id(value: Any) -> str | None:
    """The canonical 15-character id for a 15- or 18-character id, or None if malformed.

    An 18-character id carries the case of its first 15 characters in the suffix, so it is
    accepted in any letter case, like Salesforce does.
    """
    if not isinstance(value, str) or not _ID_CHARS.match(value):
        return None
    if len(value) == 15:
        return value
    if len(value) != 18:
        return None
    suffix = value[15:].upper()
    if any(char not in _SUFFIX_ALPHABET for char in suffix):
        return None
    chars = list(value[:15])
    for chunk, char in enumerate(suffix):
        bits = _SUFFIX_ALPHABET.index(char)
        for i in range(5):
            pos = chunk * 5 + i
            chars[pos] = chars[pos].upper() if bits & (1 << i) else chars[pos].lower()
    id15 = "".join(chars)
    return id15 if salesforce_checksum(id15) == suffix else None


def _base62(number: int, width: int) -> str:
    out = ""
    for _ in range(width):
        number, digit = divmod(number, 62)
        out += _BASE62[digit]
    return out[::-1]


def stable_salesforce_id(prefix: str, seed: str) -> str:
    """An 18-character id with a real-looking shape: key prefix, pod ``Sb``, reserved ``0``."""
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    return to_id18(prefix + "Sb0" + _base62(number, 9))


def random_salesforce_id15(prefix: str) -> str:
    """A fresh 15-character id (policy files are identified by 15 characters in the docs)."""
    return prefix + "Sb0" + "".join(secrets.choice(_BASE62) for _ in range(9))


ORG_ID = stable_salesforce_id("00D", "sandbox-org")


@dataclass
class SalesforceRecord:
    """One Contact, Lead or User row."""

    sobject: str
    id: str  # 18 characters
    first_name: str
    last_name: str
    email: str

    def fields(self) -> dict[str, Any]:
        """The queryable fields, with Salesforce's casing."""
        return {
            "Id": self.id,
            "Name": f"{self.first_name} {self.last_name}".strip(),
            "FirstName": self.first_name,
            "LastName": self.last_name,
            "Email": self.email,
        }


@dataclass
class Subject:
    """A person and the records each vendor holds about them."""

    email: str
    first_name: str
    last_name: str
    vendors: tuple[str, ...]
    qualifio_profiles: list[dict[str, Any]] = field(default_factory=list)
    salesforce_records: list[SalesforceRecord] = field(default_factory=list)

    @property
    def salesforce_ids(self) -> dict[str, str]:
        """Object type → 18-character id, e.g. ``subject.salesforce_ids["Contact"]``."""
        return {record.sobject: record.id for record in self.salesforce_records}

    @property
    def qualifio_ids(self) -> list[int]:
        """Qualifio profile ids, in creation order."""
        return [profile["id"] for profile in self.qualifio_profiles]

    def to_json(self) -> dict[str, Any]:
        """The shape returned by ``/__sandbox__/subjects``."""
        return {
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "vendors": list(self.vendors),
            "qualifioProfileIds": self.qualifio_ids,
            "salesforceIds": self.salesforce_ids,
            "failing": is_failing_email(self.email),
        }


def is_failing_email(email: str) -> bool:
    """Exports for any address whose local part starts with ``fail`` end in failure."""
    return email.partition("@")[0].lower().startswith("fail")


def is_auto_email(email: str) -> bool:
    """Addresses at ``@auto.example`` exist in both vendors without being added (benchmarks)."""
    return email.lower().endswith("@" + AUTO_DOMAIN)


def names_from_local_part(email: str) -> tuple[str, str]:
    """``jane.doe+42@auto.example`` → (``Jane``, ``Doe 42``); a single word gets ``Auto``."""
    parts = [part for part in re.split(r"[._+\-]+", email.partition("@")[0]) if part]
    if not parts:
        return "Auto", "Subject"
    first = parts[0].capitalize()
    last = " ".join(part.capitalize() for part in parts[1:]) or "Auto"
    return first, last


def _profile(
    profile_id: int, first: str, last: str, email: str, *, created_at: str, ip: str
) -> dict[str, Any]:
    """A Qualifio profile with exactly the fields of the doc's example, in its order."""
    return {
        "id": profile_id,
        "firstName": first,
        "lastName": last,
        "function": "",
        "gender": "",
        "email": email,
        "birthDay": None,
        "company": "",
        "address": "",
        "box": "",
        "country": "",
        "createdAt": created_at,
        "updatedAt": created_at,
        "language": "EN",
        "ip": ip,
        "fb_uid": "0",
        "locality": "",
        "login": "",
        "number": "",
        "phone": "",
        "trigramme": f"{first}|{last}|{email}",
        "zipcode": "",
        "isEmailValid": 1,
    }


class SubjectDirectory:
    """Thread-safe registry of subjects, Qualifio profiles and Salesforce records."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._subjects: dict[str, Subject] = {}
        self._profiles: dict[int, dict[str, Any]] = {}
        self._records: dict[str, SalesforceRecord] = {}  # keyed by 15-character id
        self._next_profile_id = 100
        self._seed()

    def _seed(self) -> None:
        joao = self.add("joao@qualifio.com", "joao", "pinto", vendors=(QUALIFIO,))
        # Exactly the profile of the Qualifio doc's example.
        joao.qualifio_profiles[0].update(
            {
                "language": "FR",
                "ip": "91.183.156.86",
                "isEmailValid": 0,
                "createdAt": "2021-12-14T11:41:06.163Z",
                "updatedAt": "2021-12-14T11:41:06.163Z",
            }
        )
        self._reindex_profile(joao.qualifio_profiles[0], 99)
        self._next_profile_id = 100
        self.add("ada@example.com", "Ada", "Lovelace")
        self.add(
            "grace@example.com",
            "Grace",
            "Hopper",
            qualifio_profiles=2,
            salesforce_objects=("Contact", "Lead"),
        )
        self.add("fail@example.com", "Fay", "Fail")
        self.add(
            "dpo@sandbox.example",
            "Dana",
            "Protection",
            vendors=(SALESFORCE,),
            salesforce_objects=("User",),
        )

    def _reindex_profile(self, profile: dict[str, Any], new_id: int) -> None:
        del self._profiles[profile["id"]]
        profile["id"] = new_id
        self._profiles[new_id] = profile

    def add(
        self,
        email: str,
        first_name: str,
        last_name: str,
        *,
        vendors: Iterable[str] = VENDORS,
        qualifio_profiles: int = 1,
        salesforce_objects: Iterable[str] = ("Contact",),
    ) -> Subject:
        """Add (or replace) a subject; re-adding an email replaces its records."""
        vendors = tuple(dict.fromkeys(vendors))
        unknown = [vendor for vendor in vendors if vendor not in VENDORS]
        if unknown or not vendors:
            raise ValueError(f"vendors must be a non-empty subset of {list(VENDORS)}")
        objects = tuple(dict.fromkeys(salesforce_objects))
        if any(sobject not in SALESFORCE_PREFIXES for sobject in objects):
            raise ValueError(f"salesforce_objects must be among {list(SALESFORCE_PREFIXES)}")
        if not email or "@" not in email:
            raise ValueError("email must be an email address")
        if qualifio_profiles < 1:
            raise ValueError("qualifio_profiles must be at least 1")
        with self._lock:
            self._remove(email)
            subject = Subject(email, first_name, last_name, vendors)
            if QUALIFIO in vendors:
                for index in range(qualifio_profiles):
                    profile_id = self._next_profile_id
                    self._next_profile_id += 1
                    profile = _profile(
                        profile_id,
                        first_name,
                        last_name,
                        email,
                        created_at=f"2023-0{1 + index % 9}-15T10:00:00.000Z",
                        ip=f"192.0.2.{profile_id % 250 + 1}",
                    )
                    subject.qualifio_profiles.append(profile)
                    self._profiles[profile_id] = profile
            if SALESFORCE in vendors:
                for sobject in objects:
                    record_id = stable_salesforce_id(
                        SALESFORCE_PREFIXES[sobject], f"{sobject}:{email.lower()}"
                    )
                    record = SalesforceRecord(sobject, record_id, first_name, last_name, email)
                    subject.salesforce_records.append(record)
                    self._records[record_id[:15]] = record
            self._subjects[email.lower()] = subject
            return subject

    def _remove(self, email: str) -> None:
        old = self._subjects.pop(email.lower(), None)
        if old is None:
            return
        for profile in old.qualifio_profiles:
            self._profiles.pop(profile["id"], None)
        for record in old.salesforce_records:
            self._records.pop(record.id[:15], None)

    def _materialize_auto(self, email: str | None) -> None:
        """Create an ``@auto.example`` subject the first time anyone asks about it."""
        if email and is_auto_email(email) and email.lower() not in self._subjects:
            first, last = names_from_local_part(email)
            self.add(email, first, last)

    def all(self) -> list[Subject]:
        """Every subject, in insertion order."""
        with self._lock:
            return list(self._subjects.values())

    def search_profiles(
        self, *, email: str | None, first_name: str | None, last_name: str | None
    ) -> list[dict[str, Any]]:
        """Qualifio profiles matching every given criterion, case-insensitively."""
        criteria = [
            (key, value.casefold())
            for key, value in (("email", email), ("firstName", first_name), ("lastName", last_name))
            if value
        ]
        with self._lock:
            self._materialize_auto(email)
            return [
                dict(profile)
                for profile in self._profiles.values()
                if all(str(profile[key]).casefold() == value for key, value in criteria)
            ]

    def profile(self, profile_id: int) -> dict[str, Any] | None:
        """A copy of one profile, so rules keep a snapshot even if the subject is replaced."""
        with self._lock:
            found = self._profiles.get(profile_id)
            return dict(found) if found else None

    def query_records(self, sobject: str, email: str) -> list[SalesforceRecord]:
        """Salesforce records of one type whose Email equals ``email`` (case-insensitive)."""
        with self._lock:
            self._materialize_auto(email)
            return [
                record
                for record in self._records.values()
                if record.sobject == sobject and record.email.casefold() == email.casefold()
            ]

    def record(self, record_id: str) -> SalesforceRecord | None:
        """The record for a 15- or 18-character id."""
        id15 = normalize_salesforce_id(record_id)
        if id15 is None:
            return None
        with self._lock:
            return self._records.get(id15)
