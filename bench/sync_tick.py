"""Issue 7, part 2: the status-sync tick costs the same with or without years of history.

1,000 vendor jobs are in flight (``running``, due, no lease). One ``pipeline.sync_tick()`` is
timed, and its SQL queries counted, in two databases: one with nothing else in the tables,
one with 1,000,000 closed cases behind them (finished and rejected, with their events and
jobs). Ticks alternate between the two, each on its own warm connection, so that the VM's
drift from one minute to the next (±35 % between whole runs) falls on both alike.

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

from bench.common import git_revision, median, report, setup_django

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


def measure(samples: list[float], tick: Callable[[], int]) -> dict[str, Any]:
    """The scenario's figures: its timed samples, and one more tick for queries and Redis."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with counted_delay() as woken:
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


def databases(full_name: str, empty_name: str) -> dict[str, Any]:
    """One connection per scenario database; ``use`` makes one the ORM's default."""
    from django.db import connections

    full = connections["default"]
    empty = connections.create_connection("default")
    empty.settings_dict = {**full.settings_dict, "NAME": empty_name}
    return {"full": full, "empty": empty}


def use(wrapper: Any) -> None:
    from django.db import connections

    connections["default"] = wrapper


def measure_alternately(runs: int, tick: Callable[[], int], dbs: dict[int, Any]) -> dict:
    """Median tick per scenario, the scenarios taking turns (who goes first alternates too)."""
    samples: dict[int, list[float]] = {history: [] for history in dbs}
    order = list(dbs)
    with counted_delay():
        for run in range(runs + 2):  # two warm-ups each
            for history in order if run % 2 else order[::-1]:
                use(dbs[history])
                make_in_flight_jobs_due()
                start = time.perf_counter()
                tick()
                if run >= 2:
                    samples[history].append((time.perf_counter() - start) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--history", type=int, default=1_000_000, help="closed cases")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("BENCH_DB", "dsar_bench_sync")
    full_name = os.environ["BENCH_DB"]
    empty_name = f"{full_name}_empty"
    setup_django()
    from django.core.management import call_command

    from bench.common import ensure_database
    from cases import pipeline

    ensure_database(empty_name)
    wrappers = databases(full_name, empty_name)
    dbs = {0: wrappers["empty"], args.history: wrappers["full"]}
    for history, wrapper in dbs.items():
        print(f"scenario: {history:,} closed cases + {IN_FLIGHT:,} in flight…", flush=True)
        use(wrapper)
        call_command("migrate", verbosity=0, interactive=False)
        scenario(history, IN_FLIGHT)
    print(f"ticking alternately, {args.runs} runs each…", flush=True)
    samples = measure_alternately(args.runs, pipeline.sync_tick, dbs)
    results, plans = {}, {}
    for history, wrapper in dbs.items():
        use(wrapper)
        results[history] = measure(samples[history], pipeline.sync_tick)
        plans[history] = explain(max(results[history]["sql"])[1])
    use(wrappers["full"])
    lines = write_report(args, results, plans)
    report(f"Sync tick, {IN_FLIGHT:,} jobs in flight", lines)


def _shorten(line: str, width: int = 240) -> str:
    """A plan line, its id list cut (1,000 ids made each report page-long)."""
    return line if len(line) <= width else line[:width] + "…"


def write_report(
    args: argparse.Namespace, results: dict[int, dict[str, Any]], plans: dict[int, str]
) -> list[str]:
    empty, full = results[0], results[args.history]
    ratio = full["ms"] / empty["ms"]
    ok = ratio <= TARGET_RATIO and empty["queries"] == full["queries"]
    lines = [
        f"- Revision: {git_revision()}",
        f"- Databases: `{os.environ['BENCH_DB']}_empty` and `{os.environ['BENCH_DB']}`; ticks "
        "alternate between them, each on its own connection.",
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
    lines += [_shorten(line) for line in plans[args.history].splitlines()] + ["```"]
    return lines


if __name__ == "__main__":
    main()
