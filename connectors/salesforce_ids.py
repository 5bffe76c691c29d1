"""Salesforce record ids: 15-character case-sensitive ids and their 18-character safe form."""

import re

_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def _checksum(id15: str) -> str:
    suffix = ""
    for start in range(0, 15, 5):
        chunk = id15[start : start + 5]
        bits = sum(1 << i for i, char in enumerate(chunk) if "A" <= char <= "Z")
        suffix += _SUFFIX_ALPHABET[bits]
    return suffix


def is_valid_salesforce_id(value: str) -> bool:
    """15 or 18 letters and digits; an 18-character id's suffix must match its checksum."""
    if not _ID.match(value or ""):
        return False
    return len(value) == 15 or value[15:].upper() == _checksum(value[:15])


def to_18(value: str) -> str:
    """The 18-character form, which compares case-insensitively."""
    if not is_valid_salesforce_id(value):
        raise ValueError("not a Salesforce record id")
    return value[:15] + _checksum(value[:15])


#: Key prefixes (first three characters of an id) of the objects a DSAR can start from.
#: Person accounts are Accounts (001).
KEY_PREFIXES = {
    "001": "Account",
    "003": "Contact",
    "00Q": "Lead",
    "005": "User",
    "0PK": "Individual",
}


def object_type(value: str) -> str:
    """The object a record id belongs to, from its key prefix; "Record" when we do not know it."""
    return KEY_PREFIXES.get((value or "")[:3], "Record")


def same_salesforce_id(first: str, second: str) -> bool:
    """Whether two ids name one record: 15-character ids differ only by case, so compare the
    18-character forms (whose suffix encodes that case) case-insensitively."""
    if not (is_valid_salesforce_id(first) and is_valid_salesforce_id(second)):
        return False
    return to_18(first).upper() == to_18(second).upper()
