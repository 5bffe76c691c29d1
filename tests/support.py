"""Helpers for the tests that start real processes (tests/e2e, tests/browser)."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

#: What bin/test exports for the suite, which a person's shell running bin/run would not have.
SUITE_ONLY = (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "DEBUG",
    "SECRET_KEY",
    "FIELD_ENCRYPTION_SALT",
    "SECURE_SSL_REDIRECT",
    "DSAR_VAR_DIR",
    "DJANGO_SETTINGS_MODULE",
    "STATIC_ROOT",
    "DSAR_PUBLIC_URL",
    "TEST_DATABASE_NAME",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float = 60,
    every: float = 0.2,
    what: str | None = None,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Poll ``predicate`` until it is truthy; on timeout say what was awaited (and ``explain``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    context = f"\n{explain()}" if explain else ""
    awaited = what or predicate.__doc__ or predicate
    raise AssertionError(f"timed out after {timeout}s waiting for {awaited}{context}")
