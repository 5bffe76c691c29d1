"""A test-only Celery worker entry point that SIGKILLs itself at one chosen point of the pipeline.

    python -m tests.e2e.crashing_worker -A dsar worker --beat …   (the arguments of ``celery``)

``DSAR_CRASH_AT`` names the point (see ``CRASH_POINTS``); ``DSAR_CRASH_MARKER`` is a file path.
Before Celery starts, the real vendor call (or pipeline function) named by the point is wrapped
so that, right after it returns, the worker writes the marker (JSON: the point and what the
vendor just answered, e.g. the rule id it created) and ``SIGKILL``s its whole process group:
the main process, the prefork pool and the embedded beat, exactly as a host crash or the OOM
killer would. No ``finally``, no ``atexit``, no Celery shutdown, no transaction commit runs.

The crash happens once: if the marker already exists, the wrapper just returns. Nothing here
touches production code; the patches live in this process (and its forked pool) only.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

#: Crash point → what has happened when the worker dies.
CRASH_POINTS = {
    "after_discover": "Qualifio's profile search answered; the job's next step is not saved",
    "after_rule_created": "Qualifio created the export rule; its id is not checkpointed yet",
    "after_rule_checkpoint": "the rule id is checkpointed; the job's step is still prepare",
    "after_validate_sent": "Qualifio answered validate; only the validate_sent marker is saved",
    "after_validate": "validate is checkpointed; the job's step is still start",
    "after_execute_sent": "Salesforce answered execute; the policy file id is not checkpointed",
    "after_execute": "the execution is checkpointed; the job's step is still start",
    "mid_download": "part of the Qualifio archive is written to its .part file",
    "after_archive_moved": "the archive is moved into storage; its Archive row is not written",
}
MID_DOWNLOAD_BYTES = 2 * 1024 * 1024


def crash(point: str, **details: Any) -> None:
    """Record the crash in the marker file, then SIGKILL the worker's whole process group."""
    marker = os.environ["DSAR_CRASH_MARKER"]
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return  # crashed once already (or another pool process is crashing right now)
    os.write(fd, json.dumps({"point": point, "pid": os.getpid(), **details}).encode())
    os.fsync(fd)
    os.close(fd)
    os.killpg(os.getpgrp(), signal.SIGKILL)


def install(point: str) -> None:
    """Wrap the function that ``point`` is about (Django must be set up)."""
    from django.core.files.storage import FileSystemStorage

    from cases import pipeline
    from connectors.qualifio import QualifioConnector
    from connectors.salesforce import EXECUTE_PATH, SalesforceConnector

    if point not in CRASH_POINTS:
        raise SystemExit(f"unknown DSAR_CRASH_AT {point!r}; one of {sorted(CRASH_POINTS)}")

    if point == "after_discover":
        discover = pipeline._discover

        def _discover(job: Any, connector: Any, *args: Any) -> None:
            discover(job, connector, *args)
            if connector.vendor == "qualifio":
                crash(point, job=job.pk, matches=job.matches)

        pipeline._discover = _discover

    elif point in ("after_rule_created", "after_validate_sent"):
        call = QualifioConnector._call

        def _call(self: QualifioConnector, method: str, path: str, **kwargs: Any) -> Any:
            body = call(self, method, path, **kwargs)
            if point == "after_rule_created" and method == "POST" and path.endswith("exportData"):
                crash(point, rule_id=body.get("_id"))
            if point == "after_validate_sent" and method == "PUT" and path.endswith("/validate"):
                crash(point, rule_id=body.get("_id"), status=body.get("ruleStatus"))
            return body

        QualifioConnector._call = _call  # type: ignore[method-assign]

    elif point in ("after_rule_checkpoint", "after_validate"):
        name = "prepare" if point == "after_rule_checkpoint" else "start"
        step = getattr(QualifioConnector, name)

        def _step(
            self: QualifioConnector, subject: Any, matches: Any, state: Any, **kw: Any
        ) -> Any:
            note = step(self, subject, matches, state, **kw)
            crash(point, state=state)
            return note

        setattr(QualifioConnector, name, _step)

    elif point == "after_execute_sent":
        rest = SalesforceConnector._rest

        def _rest(self: SalesforceConnector, method: str, path: str, **kwargs: Any) -> Any:
            envelope = rest(self, method, path, **kwargs)
            if method == "POST" and path == EXECUTE_PATH:
                result = (envelope or {}).get("result") or {}
                crash(point, policy_file_id=result.get("policyFileId"))
            return envelope

        SalesforceConnector._rest = _rest  # type: ignore[method-assign]

    elif point == "after_execute":
        start = SalesforceConnector.start

        def _start(
            self: SalesforceConnector, subject: Any, matches: Any, state: Any, **kw: Any
        ) -> Any:
            note = start(self, subject, matches, state, **kw)
            crash(point, state=state)
            return note

        SalesforceConnector.start = _start  # type: ignore[method-assign]

    elif point == "mid_download":
        write = pipeline._HashingSink.write

        def _write(self: Any, chunk: bytes) -> int:
            written = write(self, chunk)
            if self.size >= MID_DOWNLOAD_BYTES and self.job.account.vendor == "qualifio":
                self.fh.flush()
                os.fsync(self.fh.fileno())
                crash(point, file=self.fh.name, bytes=self.size, job=self.job.pk)
            return written

        pipeline._HashingSink.write = _write  # type: ignore[method-assign]

    elif point == "after_archive_moved":
        save = FileSystemStorage.save

        def _save(self: FileSystemStorage, name: str | None, content: Any, **kw: Any) -> str:
            stored = save(self, name, content, **kw)
            if stored.startswith("archives/"):
                crash(point, file=self.path(stored))
            return stored

        FileSystemStorage.save = _save  # type: ignore[method-assign]


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dsar.settings")
    import django

    django.setup()
    install(os.environ["DSAR_CRASH_AT"])
    from celery.bin.celery import main as celery_main

    sys.argv = ["celery", *sys.argv[1:]]
    celery_main()


if __name__ == "__main__":
    main()
