"""Issue 7, part 1: the case list stays instant with a million cases.

Times the case list, a search by exact e-mail, a search by reference and a filter by state
through Django's test client, logged in as a DPO (full middleware, templates, sessions), and
counts the SQL queries of each page. The baseline is the same pages from a plain ModelAdmin
(bench/baseline_urls.py) over the same table, in the same run. A second run on a 1,000-case
database (its own database, in a child process) shows whether queries per page stay constant.

    .venv/bin/python -m bench.admin_scale --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT, git_revision, median, report, setup_django, timed

TARGET_MS = 150.0
TARGET_RATIO = 10.0


@dataclass
class PageResult:
    name: str
    url: str
    ms: float
    p90_ms: float
    queries: int
    slowest_sql_ms: float
    slowest_sql: str


def dpo_client() -> Any:
    """A test client logged in as a member of the DPO group (created by migration 0002)."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    user, _ = User.objects.get_or_create(username="bench-dpo", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name="DPO"))
    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    return client


def sample_case() -> tuple[str, str]:
    """An e-mail and a reference from the middle of the history (not the newest page)."""
    from cases.models import Case

    count = Case.objects.count()
    case = Case.objects.order_by("id").only("email", "reference")[count // 2]
    return case.email, case.reference


def pages(email: str, reference: str) -> list[tuple[str, str, str]]:
    """(name, query string, text the answer must contain)."""
    return [
        ("list", "", "subject"),
        ("search e-mail", f"?q={email}", reference),
        ("search reference", f"?q={reference}", email),
        ("filter state=new", "?state__exact=new", "New"),
    ]


def measure_page(client: Any, name: str, url: str, expect: str | None, runs: int) -> PageResult:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def get() -> None:
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")

    samples = timed(get, runs)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    body = response.content.decode()
    if expect is not None and expect not in body:
        raise RuntimeError(f"{name} ({url}) does not show {expect!r}: wrong page measured")
    slowest = max(ctx.captured_queries, key=lambda q: float(q["time"]), default=None)
    samples.sort()
    return PageResult(
        name=name,
        url=url,
        ms=round(median(samples), 1),
        p90_ms=round(samples[int(len(samples) * 0.9) - 1], 1),
        queries=len(ctx.captured_queries),
        slowest_sql_ms=round(float(slowest["time"]) * 1000, 1) if slowest else 0.0,
        slowest_sql=(slowest["sql"][:160] if slowest else ""),
    )


def measure_all(runs: int) -> dict[str, list[dict[str, Any]]]:
    """Every page through the product admin, then through the baseline admin."""
    from django.test import override_settings

    client = dpo_client()
    email, reference = sample_case()
    base = "/admin/cases/case/"
    results: dict[str, list[dict[str, Any]]] = {"product": [], "baseline": []}
    for name, query, expect in pages(email, reference):
        results["product"].append(asdict(measure_page(client, name, base + query, expect, runs)))
    with override_settings(ROOT_URLCONF="bench.baseline_urls"):
        for name, query, _ in pages(email, reference):  # its pages show other columns
            result = measure_page(client, name, base + query, None, runs)
            results["baseline"].append(asdict(result))
    return results


def ensure_rows(rows: int, reuse: bool) -> float | None:
    """Generate ``rows`` cases unless ``reuse`` and the table already holds exactly that."""
    from bench.generate import counts, populate

    if reuse and counts()["cases"] == rows:
        print(f"reusing the {rows:,} cases already in the database")
        return None
    print(f"generating {rows:,} cases…", flush=True)
    start = time.perf_counter()
    populate(rows, open_cases=min(3000, max(rows // 20, 10)))
    return time.perf_counter() - start


def small_run(rows: int, runs: int) -> dict[str, Any]:
    """The same measurement on a small table, in a child process on its own database."""
    out = Path(os.environ["DSAR_VAR_DIR"]) / f"admin-scale-{rows}.json"
    env = {**os.environ, "BENCH_DB": f"dsar_bench_{rows}"}
    for key in ("DATABASE_URL", "DSAR_VAR_DIR", "BENCH_VAR_DIR"):  # the child derives its own
        env.pop(key, None)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.admin_scale",
            "--rows",
            str(rows),
            "--runs",
            str(runs),
            "--json-out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        check=True,
    )
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=1000, help="size of the comparison run")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--reuse", action="store_true", help="keep the generated table if it has --rows cases"
    )
    parser.add_argument("--json-out", help=argparse.SUPPRESS)  # child runs
    args = parser.parse_args()
    setup_django()
    generated = ensure_rows(args.rows, args.reuse)
    results = measure_all(args.runs)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results))
        return
    small = small_run(args.small, args.runs) if args.small else None
    lines = write_report(args, results, small, generated)
    report(f"Admin at {args.rows:,} cases", lines)


def write_report(
    args: argparse.Namespace,
    results: dict[str, list[dict[str, Any]]],
    small: dict[str, Any] | None,
    generated: float | None,
) -> list[str]:
    from bench.generate import counts

    sizes = counts()
    lines = [
        f"- Revision: {git_revision()}",
        f"- Table: {sizes['cases']:,} cases, {sizes['events']:,} events, "
        f"{sizes['jobs']:,} vendor jobs"
        + (f" (generated in {generated:.0f} s)" if generated else " (reused)"),
        f"- Median of {args.runs} requests after 2 warm-ups, Django test client as a DPO. "
        f"Baseline: plain ModelAdmin, search_fields=('email',), full result count.",
        f"- Targets: ≤ {TARGET_MS:.0f} ms median, ≥ {TARGET_RATIO:.0f}× baseline, "
        "queries per page constant from "
        f"{args.small:,} to {args.rows:,} cases",
        "",
        f"| page | product ms (p90) | baseline ms (p90) | ratio | queries product "
        f"@{args.small:,} → @{args.rows:,} | queries baseline @{args.small:,} → "
        f"@{args.rows:,} | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, mine in enumerate(results["product"]):
        theirs = results["baseline"][index]
        ratio = theirs["ms"] / mine["ms"] if mine["ms"] else float("inf")
        small_q = small["product"][index]["queries"] if small else "?"
        small_bq = small["baseline"][index]["queries"] if small else "?"
        constant = small is None or small_q == mine["queries"]
        ok = mine["ms"] <= TARGET_MS and ratio >= TARGET_RATIO and constant
        lines.append(
            f"| {mine['name']} | {mine['ms']:.1f} ({mine['p90_ms']:.1f}) | "
            f"{theirs['ms']:.1f} ({theirs['p90_ms']:.1f}) | {ratio:.1f}× | "
            f"{small_q} → {mine['queries']} | {small_bq} → {theirs['queries']} | "
            f"{'met' if ok else 'MISSED'} |"
        )
    lines += ["", "Slowest SQL statement per page (product, then baseline):", ""]
    for side in ("product", "baseline"):
        for page in results[side]:
            lines.append(
                f"- {side} {page['name']}: {page['slowest_sql_ms']} ms — "
                f"`{page['slowest_sql'].replace('`', '')}…`"
            )
    if small:
        lines += ["", f"At {args.small:,} cases (same pages, medians):", ""]
        for index, mine in enumerate(small["product"]):
            theirs = small["baseline"][index]
            lines.append(
                f"- {mine['name']}: product {mine['ms']:.1f} ms / {mine['queries']} queries, "
                f"baseline {theirs['ms']:.1f} ms / {theirs['queries']} queries"
            )
    return lines


if __name__ == "__main__":
    main()
