"""Builds the connector for a vendor account: the only place that maps a vendor to its module."""

from __future__ import annotations

import threading
from datetime import datetime

from django.conf import settings

from . import http
from .base import Connector
from .models import Vendor, VendorAccount

_cache: dict[tuple[int, datetime | None], Connector] = {}
_lock = threading.Lock()


def connector_for(account: VendorAccount) -> Connector:
    """One connector (and HTTP session, and Salesforce login) per account per process.

    Rebuilt whenever the account is saved, so new credentials take effect at once.
    """
    key = (account.pk, account.updated_at)
    with _lock:
        connector = _cache.get(key)
        if connector is None:
            for stale in [k for k in _cache if k[0] == account.pk]:
                del _cache[stale]
            connector = _cache[key] = build(account)
    return connector


def build(account: VendorAccount) -> Connector:
    session = http.build_session()
    if account.ca_file:
        session.verify = account.ca_file
    common = {
        "session": session,
        "max_archive_bytes": settings.DSAR_MAX_ARCHIVE_BYTES,
        "allow_private_hosts": settings.DSAR_ALLOW_PRIVATE_VENDOR_HOSTS,
    }
    if account.vendor == Vendor.QUALIFIO:
        from .qualifio import QualifioConnector

        return QualifioConnector(
            base_url=account.base_url,
            client_id=int(account.client_id),
            api_token=account.api_token,
            default_dpo_id=int(account.default_dpo_id) if account.default_dpo_id else None,
            **common,
        )
    if account.vendor == Vendor.SALESFORCE:
        from .salesforce import SalesforceConnector

        return SalesforceConnector(
            login_url=account.login_url,
            client_id=account.client_id,
            client_secret=account.client_secret or None,
            username=account.username or None,
            private_key=account.private_key or None,
            policy_name=account.policy_name,
            api_version=account.api_version or "62.0",
            ca_file=account.ca_file or None,
            **common,
        )
    raise ValueError(f"No connector for vendor {account.vendor!r}")
