"""Issue 7, part 2: the status-sync tick costs the same with or without years of history.

1,000 vendor jobs are in flight (``running``, due, no lease). One ``pipeline.sync_tick()`` is
timed, and its SQL queries counted, first with nothing else in the tables, then with
1,000,000 closed cases behind them (finished and rejected, with their events and jobs).

``advance_job.delay`` is replaced by a counter: what grows with history, if anything, is the
tick's own database work; publishing 1,000 wake-ups to Redis costs the same in both cases and
would only blur the ratio. It is measured once per scenario anyway, with the real broker, and
reported beside it (the Redis database is the bench's own, purged afterwards).

    .venv/bin/python -m bench.sync_tick --history 1000000
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from bench.common import git_revision, median, report, setup_django, timed

IN_FLIGHT = 1000
TARGET_RATIO = 1.2


@contextmanager
def counted_delay() -> Iterator[list[int]]:
    """Replace ``advance_job.delay`` by an in-memory list of the job ids it was given."""
    from cases.tasks import advance_job

    woken: list[int] = []
    with mock.patch.object(advance_job, "delay", lambda job_id, *claim: woken.append(job_id)):
        yield woken


def scenario(history: int, in_flight: int) -> None:
    """Closed history first (oldest ids), the in-flight cases last, as in real life."""
    from bench.generate import populate

    populate(
        history + in_flight,
        open_cases=in_flight,
        mix="running",
        due="now() - interval '1 minute'",
    )


def measure(runs: int, tick: Callable[[], int]) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with counted_delay() as woken:
        samples = timed(tick, runs, before=make_in_flight_jobs_due)
        woken.clear()
        make_in_flight_jobs_due()
        with CaptureQueriesContext(connection) as ctx:
            tick()
        if len(woken) != IN_FLIGHT:
            raise RuntimeError(f"the tick woke {len(woken)} jobs, expected {IN_FLIGHT}")
    queries = [(float(q["time"]) * 1000, q["sql"]) for q in ctx.captured_queries]
    return {
        "ms": median(samples),
        "min_ms": min(samples),
        "queries": len(queries),
        "sql": queries,
        "redis_ms": with_redis(tick),
    }


def make_in_flight_jobs_due() -> None:
    """Every tick claims what it wakes (moves next_attempt_at ahead): undo that between runs."""
    from django.db.models import F

    from cases.models import VendorJob

    VendorJob.objects.filter(step=VendorJob.Step.RUNNING).update(next_attempt_at=F("created_at"))


def with_redis(tick: Callable[[], int]) -> float:
    """One tick publishing its 1,000 wake-ups to the bench's Redis database, then purged."""
    from dsar.celery import app

    make_in_flight_jobs_due()
    app.control.purge()
    start = time.perf_counter()
    tick()
    elapsed = (time.perf_counter() - start) * 1000
    app.control.purge()
    return elapsed


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def proposed_unsettled_case_ids(limit: int = 1000) -> list[int]:
    """The fix measured with ``--variant proposed``: two index lookups, no anti-join.

    ``exclude(pk__in=<jobs in flight>)`` makes PostgreSQL hash every unsettled job of the
    whole history (rejected cases keep jobs awaiting approval forever): a sequential scan of
    the job table on every tick. A ``NOT EXISTS`` anti-join is fast when planned as a nested
    loop, but the planner sometimes adds a parallel worker (15 ms to start). Here: the open
    cases' ids (the state index; as many as cases in flight), then their busy jobs (the
    case index), and the difference in Python.
    """
    from cases.models import Case, VendorJob
    from cases.pipeline import PRE_START_STEPS

    open_ids = list(
        Case.objects.filter(state__in=(Case.State.APPROVED, Case.State.EXPORTING))
        .order_by()
        .values_list("pk", flat=True)
    )
    busy = set(
        VendorJob.objects.filter(
            case_id__in=open_ids, step__in=PRE_START_STEPS + VendorJob.ACTIVE_STEPS
        ).values_list("case_id", flat=True)
    )
    return [pk for pk in open_ids if pk not in busy][:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=1_000_000, help="closed cases")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--variant",
        choices=("current", "proposed"),
        default="current",
        help="proposed: time the tick with proposed_unsettled_case_ids patched in",
    )
    args = parser.parse_args()
    os.environ.setdefault("BENCH_DB", "dsar_bench_sync")
    setup_django()
    from cases import pipeline

    patch = (
        mock.patch.object(pipeline, "unsettled_case_ids", proposed_unsettled_case_ids)
        if args.variant == "proposed"
        else mock.patch.object(pipeline, "unsettled_case_ids", pipeline.unsettled_case_ids)
    )
    results = {}
    plans = {}
    with patch:
        for history in (0, args.history):
            print(f"scenario: {history:,} closed cases + {IN_FLIGHT:,} in flight…", flush=True)
            scenario(history, IN_FLIGHT)
            results[history] = measure(args.runs, pipeline.sync_tick)
            slowest = max(results[history]["sql"])
            plans[history] = explain(slowest[1])
    lines = write_report(args, results, plans)
    report(f"Sync tick, {IN_FLIGHT:,} jobs in flight ({args.variant})", lines)


def write_report(
    args: argparse.Namespace, results: dict[int, dict[str, Any]], plans: dict[int, str]
) -> list[str]:
    empty, full = results[0], results[args.history]
    ratio = full["ms"] / empty["ms"]
    ok = ratio <= TARGET_RATIO and empty["queries"] == full["queries"]
    lines = [
        f"- Revision: {git_revision()}",
        f"- Variant: {args.variant} (`unsettled_case_ids` "
        + ("as in cases/pipeline.py)" if args.variant == "current" else "replaced, see below)"),
        f"- One `sync_tick()`; median of {args.runs} after 2 warm-ups. `advance_job.delay` "
        "stubbed by a counter (the tick's own database cost); the Redis column is one tick "
        "publishing for real.",
        f"- Target: ratio ≤ {TARGET_RATIO}",
        "",
        "| closed cases in the table | tick ms (min) | queries | jobs woken | tick with Redis ms |",
        "|---|---|---|---|---|",
    ]
    for history, result in results.items():
        lines.append(
            f"| {history:,} | {result['ms']:.1f} ({result['min_ms']:.1f}) | "
            f"{result['queries']} | {IN_FLIGHT} | {result['redis_ms']:.0f} |"
        )
    lines += [
        "",
        f"- Ratio (1,000,000 / 0): **{ratio:.2f}×** — {'met' if ok else 'MISSED'}",
        "",
        "Queries of the tick at full history (ms, SQL):",
        "",
    ]
    for ms, sql in full["sql"]:
        lines.append(f"- {ms:.1f} ms — `{sql[:220]}…`")
    lines += ["", "EXPLAIN ANALYZE of the slowest, at full history:", "", "```"]
    lines += [plans[args.history], "```"]
    return lines


if __name__ == "__main__":
    main()
