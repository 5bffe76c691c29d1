"""Log hygiene: a full pipeline run logs neither the subject's e-mail nor any vendor secret.

The worker runs at DEBUG (``--loglevel DEBUG``, ``LOG_LEVEL=DEBUG``) and writes everything it
logs, stdout and stderr included, to one file; the test process (web server, sandbox vendors,
the services the test calls) is captured by ``caplog`` at DEBUG. Both are scanned for the
subject's address (as typed, lower-cased and URL-encoded), the Qualifio API token, the
Salesforce consumer secret (alone and inside the Basic header) and every access token the
sandbox issued. Before trusting a clean scan, the test checks that the file really holds the
pipeline's own records, formatted by the project's console handler (the one that masks).
"""

from __future__ import annotations

import base64
import logging
import re
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

from cases import services
from cases.models import Case, VendorJob
from cases.tasks import advance_job

from .conftest import Worker, sandbox_accounts, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]
S = Case.State
EMAIL = "Hygiene.Subject+dsar@example.com"
#: A record as the project's "plain" formatter writes it: ``asctime levelname name message``.
PLAIN = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} %s %s %s"


def forbidden_strings(sandbox: Any) -> dict[str, str]:
    """Every spelling of the subject's address and of each secret the run handled."""
    qualifio = sandbox.credentials["qualifio"]
    salesforce = sandbox.credentials["salesforce"]
    pair = f"{salesforce['consumer_key']}:{salesforce['consumer_secret']}".encode()
    issued = list(sandbox.sandbox.salesforce._tokens)  # every access token the org handed out
    assert issued, "the run never logged in to Salesforce"
    found = {
        "subject e-mail": EMAIL,
        "subject e-mail (lower case)": EMAIL.lower(),
        "subject e-mail (URL-encoded)": quote(EMAIL, safe=""),
        "subject e-mail (form-encoded)": quote_plus(EMAIL),
        "Qualifio API token": qualifio["api_token"],
        "Salesforce consumer secret": salesforce["consumer_secret"],
        "Salesforce Basic credentials": base64.b64encode(pair).decode(),
    }
    for n, token in enumerate(issued):
        found[f"Salesforce access token #{n + 1}"] = token
        found[f"Salesforce access token #{n + 1} (secret part)"] = token.split("!", 1)[-1]
    return found


def captured_text(caplog: pytest.LogCaptureFixture) -> str:
    """Everything the test process logged: formatted lines, raw messages, tracebacks."""
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append(logging.Formatter().formatException(record.exc_info))
        if record.stack_info:
            parts.append(record.stack_info)
    return "\n".join(parts)


def test_full_pipeline_run_logs_no_email_and_no_secret(
    sandbox: Any, worker_env: dict[str, str], tmp_path: Path, dpo: Any, caplog: Any
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox.add_subject(EMAIL, "Hygiene", "Subject")
    sandbox_accounts(sandbox)
    log = tmp_path / "worker.log"
    worker = Worker({**worker_env, "LOG_LEVEL": "DEBUG"}, log, loglevel="DEBUG")
    worker.start()
    try:
        case = services.open_case(
            Case(email=EMAIL, first_name="Hygiene", last_name="Subject", received_on=date.today()),
            actor=dpo,
        )

        def prepared() -> bool:
            """discovery and the Qualifio rule at both vendors"""
            steps = set(VendorJob.objects.filter(case=case).values_list("step", flat=True))
            return steps == {VendorJob.Step.AWAITING_APPROVAL}

        wait_until(prepared, timeout=30)
        services.approve_case(case, actor=dpo)

        def finished() -> bool:
            """the case to finish"""
            state = Case.objects.get(pk=case.pk).state
            assert state != S.FAILED, worker.tail()
            return state == S.FINISHED

        wait_until(finished, timeout=60)
    finally:
        worker.stop()
    worker_log = log.read_text(errors="replace")

    # The file is worth scanning: the pipeline's and Celery's own records are in it, at DEBUG,
    # written by the project's console handler (Celery did not hijack the root logger).
    for level, name, message in [
        ("INFO", "connectors.qualifio", "Qualifio profile search found 1 profile"),
        ("INFO", "connectors.qualifio", "Qualifio export rule"),
        ("INFO", "connectors.qualifio", "Qualifio archive of rule"),
        ("INFO", "connectors.salesforce", "Salesforce login"),
        ("INFO", "cases.services", f"Case {case.reference}: finish"),
        ("INFO", "celery.app.trace", r"Task cases\.tasks\.advance_job\[.+\] succeeded"),
        ("DEBUG", r"celery\.\S+", ""),
    ]:
        pattern = PLAIN % (level, name, re.escape(message) if "\\" not in message else message)
        assert re.search(pattern, worker_log, re.M), f"no {level} {name} {message!r} line"
    assert not re.search(r"^\[\d{4}-\d\d-\d\d [^\]]*: (INFO|DEBUG)/", worker_log, re.M), (
        "some records bypass the project's handler (Celery's own format)"
    )

    test_log = captured_text(caplog)
    assert "sandbox" in test_log and "cases.services" in caplog.text  # captured, at DEBUG
    leaks = {
        f"{what} in {where}"
        for what, value in forbidden_strings(sandbox).items()
        for where, text in (("the worker log", worker_log), ("the test process logs", test_log))
        if value in text
    }
    assert not leaks, sorted(leaks)


def test_worker_masks_an_address_in_its_own_task_error_log(worker: Any, caplog: Any) -> None:
    """Positive control: a task failing with an address in its exception, logged by Celery.

    An ``advance_job`` message whose argument is an address (a malformed message, or any
    unexpected error quoting one) makes the worker log ``Task … raised unexpected: …`` with the
    traceback, through Celery's ``celery.app.trace`` logger. The mask must cover that record,
    its traceback included.
    """
    canary = "canary.person@example.com"
    advance_job.delay(canary)

    def logged() -> bool:
        """the worker to log the failed task"""
        return "raised unexpected" in worker.log.read_text(errors="replace")

    wait_until(logged, timeout=30)
    text = worker.log.read_text(errors="replace")
    assert re.search(
        PLAIN % ("ERROR", r"celery\.app\.trace", "Task cases.tasks.advance_job"), text, re.M
    )
    assert "c***@example.com" in text  # the project's mask ran on Celery's own record
    assert canary not in text
