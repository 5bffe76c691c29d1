"""Where a case-list request spends its time: per-page milliseconds, SQL, and cProfile.

Not a benchmark for docs/benchmarks.md (nothing is appended there): a profiling harness for
working on the admin's per-request cost. Rendering cost does not depend on the table size, so
it runs on a small database of its own (``dsar_bench_profile``, 3,000 generated cases by
default; never ``test`` nor ``dsar_bench``), through Django's test client logged in as a DPO,
exactly as bench/admin_scale.py measures, and prints for each page:

- the median, p90 and minimum of ``--runs`` requests (after warm-ups), the CPU time, and
  every SQL statement with its own median time;
- the request split into ChangeList (filters, count, estimate), template rendering and the
  rest; then each middleware, each admin template tag and each template, timed as it runs;
- cProfile's top functions over ``--profile-runs`` requests, by cumulative and by own time,
  and own time summed per area of the code (ORM, templates, driver, this project…).

``--against DIR`` instead compares this tree with another checkout, request by request
(see ``compare``): the figure to trust on a machine others are using.

    .venv/bin/python -m bench.profile_admin                 # list and ?state__exact=new
    .venv/bin/python -m bench.profile_admin --runs 50 --top 40 --page list
    .venv/bin/python -m bench.profile_admin --page "no rows" --no-profile
    git worktree add /tmp/base HEAD && .venv/bin/python -m bench.profile_admin --against /tmp/base
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, median, setup_django, timed

DB = "dsar_bench_profile"
BASE = "/admin/cases/case/"
PAGES = {"list": "", "state=new": "?state__exact=new"}
#: Not in "all": the same page with no row to draw (what every page costs besides its rows).
EXTRA_PAGES = {"no rows": "?q=DSAR-1999-000000"}


def ensure_rows(rows: int) -> None:
    from bench.generate import counts, populate

    if counts()["cases"] != rows:
        print(f"generating {rows:,} cases in {os.environ['DATABASE_URL'].rsplit('/', 1)[1]}…")
        populate(rows, open_cases=min(3000, max(rows // 2, 10)), quiet=True)


def client() -> Any:
    from bench.admin_scale import dpo_client

    return dpo_client()


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(int(len(ordered) * fraction) - 1, 0)]


def time_page(client: Any, url: str, runs: int) -> list[float]:
    return time_page_cpu(client, url, runs)[0]


def time_page_cpu(client: Any, url: str, runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (this process) milliseconds of ``runs`` requests after 3 warm-ups.

    CPU time leaves out PostgreSQL's own work and the time this process waited for a core:
    on a shared machine it is the steadier figure to compare two versions of the code with.
    """
    cpu: list[float] = []

    def get() -> None:
        start = time.process_time()
        response = client.get(url)
        cpu.append((time.process_time() - start) * 1000)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")

    wall = timed(get, runs, warmup=3)
    return wall, cpu[3:]


def queries_of(client: Any, url: str, runs: int = 10) -> list[dict[str, Any]]:
    """Each SQL statement of one request, with its median wall-clock ms over ``runs``.

    Timed with ``connection.execute_wrapper`` (microseconds, unlike the debug cursor's
    rounded figure), from just before the driver call to just after the rows are fetched
    by Django (``cursor.execute`` only; fetching is counted in the caller).
    """
    from django.db import connection

    requests: list[list[dict[str, Any]]] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            requests[-1].append({"sql": sql, "ms": (time.perf_counter() - start) * 1000})

    with connection.execute_wrapper(wrapper):
        for _ in range(runs):
            requests.append([])
            client.get(url)
    shapes = {len(done) for done in requests}
    if len(shapes) != 1:
        raise RuntimeError(f"{url}: the number of queries varies between requests: {shapes}")
    return [
        {"sql": query["sql"], "ms": median([done[index]["ms"] for done in requests])}
        for index, query in enumerate(requests[0])
    ]


def split(client: Any, url: str, runs: int) -> dict[str, float]:
    """Median ms of the whole request, of building the ChangeList and of rendering.

    ``ModelAdmin.get_changelist_instance`` (filters, search, paginator, the page's queries)
    and ``TemplateResponse.render`` are wrapped; the rest (middleware, URL resolving, the
    rest of changelist_view, the test client) is what remains.
    """
    from django.contrib import admin
    from django.template.response import SimpleTemplateResponse

    from cases.models import Case

    model_admin = admin.site._registry[Case]
    view_ms: list[float] = []
    render_ms: list[float] = []
    original_view = type(model_admin).get_changelist_instance
    original_render = SimpleTemplateResponse.render

    def timed_view(self: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original_view(self, *args, **kwargs)
        finally:
            view_ms.append((time.perf_counter() - start) * 1000)

    def timed_render(self: Any) -> Any:
        start = time.perf_counter()
        try:
            return original_render(self)
        finally:
            render_ms.append((time.perf_counter() - start) * 1000)

    type(model_admin).get_changelist_instance = timed_view
    SimpleTemplateResponse.render = timed_render
    try:
        total = time_page(client, url, runs)
    finally:
        type(model_admin).get_changelist_instance = original_view
        SimpleTemplateResponse.render = original_render
    view_ms, render_ms = view_ms[-runs:], render_ms[-runs:]
    whole = median(total)
    return {
        "request": whole,
        "ChangeList (filters, queries)": median(view_ms),
        "template rendering": median(render_ms),
        "rest (middleware, view, client)": whole - median(view_ms) - median(render_ms),
    }


def breakdown(client: Any, url: str, runs: int) -> dict[str, float]:
    """Median exclusive ms of each middleware, and of each admin template tag's rendering.

    Each middleware class's ``__call__`` is timed inclusively; a middleware's own cost is
    its time minus the next one's. The admin's inclusion tags (result list, pagination,
    search form, actions…), the filter sidebar tag and every template (inclusive of what it
    includes or extends) are timed as they render.
    """
    from collections import defaultdict

    from django.conf import settings
    from django.contrib.admin.templatetags import admin_list
    from django.contrib.admin.templatetags.base import InclusionAdminNode
    from django.template.library import SimpleNode
    from django.utils.module_loading import import_string

    inclusive: dict[str, list[float]] = defaultdict(list)
    tags: dict[str, list[float]] = defaultdict(list)
    classes = [import_string(path) for path in settings.MIDDLEWARE]
    saved = []

    def wrap_call(cls: type, name: str) -> None:
        original = cls.__call__
        saved.append((cls, "__call__" in cls.__dict__, original))

        def call(self: Any, request: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(self, request)
            finally:
                inclusive[name].append((time.perf_counter() - start) * 1000)

        cls.__call__ = call

    for cls in classes:
        wrap_call(cls, cls.__name__)
    from django.template.base import Template

    def timed_render(original: Any, label: Any) -> Any:
        """``original(self, context)``, its milliseconds added to ``tags[label(self)]``."""

        def render(self: Any, context: Any) -> Any:
            start = time.perf_counter()
            try:
                return original(self, context)
            finally:
                tags[label(self)].append((time.perf_counter() - start) * 1000)

        return render

    original_node_render = InclusionAdminNode.render
    original_simple_render = SimpleNode.render
    original_template_render = Template._render
    InclusionAdminNode.render = timed_render(original_node_render, lambda n: n.template_name)
    SimpleNode.render = timed_render(original_simple_render, lambda n: f"{{% {n.func.__name__} %}}")
    Template._render = timed_render(
        original_template_render, lambda t: f"template {t.origin.template_name}"
    )
    per_request: list[dict[str, float]] = []
    try:
        for _ in range(runs + 2):
            inclusive.clear()
            tags.clear()
            client.get(url)
            row = {}
            names = [cls.__name__ for cls in classes]
            for index, name in enumerate(names):
                inner = sum(inclusive[names[index + 1]]) if index + 1 < len(names) else 0.0
                row[f"middleware {name}"] = sum(inclusive[name]) - inner
            if names:
                row["inside all middleware (view + render)"] = sum(inclusive[names[-1]])
            for name, values in tags.items():
                row[name if name.startswith("template ") else f"tag {name}"] = sum(values)
            per_request.append(row)
    finally:
        for cls, own, original in saved:
            if own:
                cls.__call__ = original
            else:
                del cls.__call__
        InclusionAdminNode.render = original_node_render
        SimpleNode.render = original_simple_render
        Template._render = original_template_render
    per_request = per_request[2:]
    del admin_list
    return {key: median([row.get(key, 0.0) for row in per_request]) for key in per_request[0]}


def profile(client: Any, url: str, runs: int, top: int) -> str:
    profiler = cProfile.Profile()
    client.get(url)
    profiler.enable()
    for _ in range(runs):
        client.get(url)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    for key in ("cumulative", "tottime"):
        out.write(f"\n--- top {top} by {key} ({runs} requests; times are totals) ---\n")
        stats.sort_stats(key).print_stats(top)
    out.write(f"\n--- own time by area, ms per request under the profiler ({runs} requests) ---\n")
    for area, seconds in by_area(profiler):
        out.write(f"  {seconds * 1000 / runs:7.2f}  {area}\n")
    return out.getvalue()


#: (area, substrings of a function's file path), first match wins.
AREAS = [
    ("psycopg (driver, waiting for PostgreSQL)", ("/psycopg",)),
    ("Django ORM: SQL compiler, queries", ("/django/db/models/sql/", "/django/db/backends/")),
    ("Django ORM: models, querysets, fields", ("/django/db/",)),
    ("Django templates (engine, tags)", ("/django/template/", "/templatetags/")),
    ("Django admin (views, ChangeList, filters)", ("/django/contrib/admin/",)),
    (
        "Django auth, sessions, messages",
        ("/django/contrib/auth/", "/django/contrib/sessions/", "/django/contrib/messages/"),
    ),
    ("Django URLs (reverse, resolve)", ("/django/urls/",)),
    (
        "Django i18n, l10n, dates",
        (
            "/django/utils/translation/",
            "/django/utils/formats",
            "/django/utils/dateformat",
            "/django/utils/timezone",
            "/django/utils/dates",
        ),
    ),
    (
        "Django html, safestring, functional (lazy)",
        ("/django/utils/html", "/django/utils/safestring", "/django/utils/functional"),
    ),
    ("Django forms, widgets, media", ("/django/forms/",)),
    (
        "Django test client, handlers, middleware",
        ("/django/test/", "/django/core/handlers/", "/django/middleware/", "/django/http/"),
    ),
    ("Django other", ("/django/",)),
    ("asgiref (thread locals)", ("/asgiref/",)),
    ("django-axes", ("/axes/",)),
    ("django-fsm", ("/django_fsm/",)),
    ("this project (cases/, connectors/)", ("/cases/", "/connectors/")),
    ("Python stdlib and builtins", ("/lib/python3", "{", "~")),
]


def by_area(profiler: cProfile.Profile) -> list[tuple[str, float]]:
    """Own (``tottime``) seconds summed per area of the code, largest first."""
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in pstats.Stats(profiler).stats.items():
        area = next(
            (name for name, parts in AREAS if any(part in filename for part in parts)), "other"
        )
        totals[area] = totals.get(area, 0.0) + tottime
    return sorted(totals.items(), key=lambda item: -item[1])


def worker() -> None:
    """``--worker``: answer each URL read on stdin with one request's wall-clock ms."""
    setup_django(os.environ["BENCH_DB"], migrate=False)
    c = client()
    for line in sys.stdin:
        url = line.strip()
        start = time.perf_counter()
        response = c.get(url)
        elapsed = (time.perf_counter() - start) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")
        print(f"{elapsed:.4f}", flush=True)


def compare(other: str, pages: dict[str, str], rounds: int) -> None:
    """Time this tree against the checkout in ``other``, request by request, alternating.

    On a shared machine two runs minutes apart can differ by half; here both trees run in
    their own process on the same database, one request each in turn (the order swapped
    every round), so both see the same machine. Prints each side's median and the median of
    the paired ratios. The other tree needs bench/common.py and bench/admin_scale.py only
    (this file is what runs there), so any revision since the benchmarks were added will do.
    """
    trees = {"other": Path(other).resolve(), "this": ROOT}
    workers = {
        name: subprocess.Popen(
            # This file runs in both; everything it imports comes from the tree's own code.
            [sys.executable, str(Path(__file__).resolve()), "--worker"],
            cwd=tree,
            env={**os.environ, "PYTHONPATH": str(tree)},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for name, tree in trees.items()
    }

    def ask(name: str, url: str) -> float:
        process = workers[name]
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(url + "\n")
        process.stdin.flush()
        return float(process.stdout.readline())

    try:
        samples: dict[tuple[str, str], list[float]] = {}
        for query in pages.values():
            for name in workers:
                for _ in range(5):  # warm-up
                    ask(name, BASE + query)
        for index in range(rounds):
            order = list(workers) if index % 2 == 0 else list(reversed(workers))
            for page, query in pages.items():
                for name in order:
                    samples.setdefault((page, name), []).append(ask(name, BASE + query))
    finally:
        for process in workers.values():
            if process.stdin:
                process.stdin.close()
            process.wait()
    print(f"{rounds} alternating requests per page and tree; other = {trees['other']}")
    for page in pages:
        mine, theirs = samples[(page, "this")], samples[(page, "other")]
        ratio = median([b / a for a, b in zip(mine, theirs, strict=True)])
        print(
            f"{page:10s} this {median(mine):6.2f} ms (p90 {percentile(mine, 0.9):6.2f})  "
            f"other {median(theirs):6.2f} ms (p90 {percentile(theirs, 0.9):6.2f})  "
            f"other/this {ratio:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=40, help="timed requests per page")
    parser.add_argument("--profile-runs", type=int, default=20)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--page", choices=[*PAGES, *EXTRA_PAGES, "all"], default="all")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-split", action="store_true")
    parser.add_argument(
        "--against",
        metavar="DIR",
        help="compare with another checkout (e.g. `git worktree add /tmp/base HEAD`), "
        "alternating requests; --runs per page",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("BENCH_DB", DB)
    if args.worker:
        worker()
        return
    setup_django(os.environ["BENCH_DB"])
    ensure_rows(args.rows)
    known = {**PAGES, **EXTRA_PAGES}
    pages = PAGES if args.page == "all" else {args.page: known[args.page]}
    if args.against:
        compare(args.against, pages, args.runs)
        return
    c = client()
    summary = []
    for name, query in pages.items():
        url = BASE + query
        samples, cpu = time_page_cpu(c, url, args.runs)
        queries = queries_of(c, url)
        summary.append((name, median(samples), percentile(samples, 0.9), median(cpu), len(queries)))
        print(f"\n===== {name}: {url} =====")
        print(
            f"median {median(samples):.2f} ms, p90 {percentile(samples, 0.9):.2f} ms, "
            f"min {min(samples):.2f} ms over {args.runs} requests (CPU median "
            f"{median(cpu):.2f} ms); {len(queries)} queries"
        )
        for query_info in queries:
            print(f"  {query_info['ms']:6.2f} ms  {query_info['sql'][:150]}")
        print(f"  {sum(q['ms'] for q in queries):6.2f} ms  in all (execute only)")
        if not args.no_split:
            for part, ms in split(c, url, args.runs).items():
                print(f"  {part:42s} {ms:6.2f} ms")
            print("  exclusive medians (nested tags are counted in their parents too):")
            for part, ms in breakdown(c, url, args.runs).items():
                print(f"  {part:42s} {ms:6.2f} ms")
        if not args.no_profile:
            print(profile(c, url, args.profile_runs, args.top))
    print("\n===== summary =====")
    for name, med, p90, cpu, count in summary:
        print(
            f"{name:10s} median {med:6.2f} ms  p90 {p90:6.2f} ms  CPU {cpu:6.2f} ms  "
            f"{count} queries"
        )


if __name__ == "__main__":
    main()
