"""Issue 7, part 4 follow-up: what one pipeline step costs without Celery.

Explains the pipeline ratio: ``pipeline.advance`` is called directly, in this process, for
every due job of N cases against the sandbox vendors (started in-process, finishing at once,
``DSAR_POLL_INTERVAL=0`` so start → poll → download → done run in one call). Wake-ups are
stubbed: no queue, no worker. Reports median milliseconds and SQL queries per call.

    .venv/bin/python -m bench.pipeline_steps --cases 30
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any
from unittest import mock

from bench.common import git_revision, report, setup_django


def advance_all(label: str, results: dict[str, Any]) -> None:
    """advance() every in-flight job once, due now; record ms and queries by vendor."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from cases import pipeline
    from cases.models import VendorJob

    for job in VendorJob.objects.filter(step__in=VendorJob.ACTIVE_STEPS).select_related("account"):
        VendorJob.objects.filter(pk=job.pk).update(next_attempt_at=None)
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            pipeline.advance(job.pk)
            elapsed = (time.perf_counter() - start) * 1000
        results[f"{label}, {job.account.vendor}"].append((elapsed, len(ctx.captured_queries)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=30)
    args = parser.parse_args()
    os.environ.setdefault("BENCH_DB", "dsar_bench_steps")
    os.environ["DSAR_ALLOW_PRIVATE_VENDOR_HOSTS"] = "true"
    os.environ["DSAR_POLL_INTERVAL"] = "0"
    setup_django()
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from bench.pipeline import configure_accounts, fresh_tables, open_cases
    from cases import services
    from cases.models import Case
    from cases.tasks import advance_job
    from sandbox.server import SandboxConfig, start_sandbox

    results: dict[str, list[tuple[float, int]]] = defaultdict(list)
    handle = start_sandbox(
        SandboxConfig(
            qualifio_port=0,
            salesforce_port=0,
            state_dir=Path(tempfile.mkdtemp(prefix="dsar-bench-sandbox-")),
            finish_after=0,
        )
    )
    try:
        dpo = fresh_tables()
        configure_accounts(handle.info(), salesforce=True)
        with (
            mock.patch.object(advance_job, "delay_on_commit", lambda *a: None),
            mock.patch.object(advance_job, "delay", lambda *a: None),
        ):
            emails = [f"steps.{i}@auto.example" for i in range(args.cases)]
            start = time.perf_counter()
            with CaptureQueriesContext(connection) as ctx:
                ids = open_cases(emails, dpo)
            results["services.open_case (2 accounts)"] = [
                ((time.perf_counter() - start) * 1000 / args.cases, len(ctx) // args.cases)
            ]
            advance_all("discover → prepare", results)
            start = time.perf_counter()
            with CaptureQueriesContext(connection) as ctx:
                for case_id in ids:
                    services.approve_case(case_id, actor=dpo)
            results["services.approve_case"] = [
                ((time.perf_counter() - start) * 1000 / args.cases, len(ctx) // args.cases)
            ]
            advance_all("start → running → download → done → settle", results)
        finished = Case.objects.filter(state=Case.State.FINISHED).count()
    finally:
        handle.stop()
    lines = [
        f"- Revision: {git_revision()}",
        f"- {args.cases} cases, both sandbox vendors in-process, no Celery; {finished} finished.",
        "",
        "| call | median ms | queries (median) |",
        "|---|---|---|",
    ]
    for label, samples in results.items():
        lines.append(
            f"| {label} | {statistics.median(s[0] for s in samples):.1f} | "
            f"{statistics.median(s[1] for s in samples):.0f} "
            f"({min(s[1] for s in samples)}–{max(s[1] for s in samples)}) |"
        )
    report(f"Pipeline steps without Celery, {args.cases} cases", lines)


if __name__ == "__main__":
    main()
