"""A paginator whose cost does not grow with the table: exact counts only while they are cheap.

Django's admin counts the rows of every list it shows (``SELECT COUNT(*)``). On PostgreSQL
that reads the whole table or index: about 40 ms per page at a million cases, and ten times
that at ten million (see docs/benchmarks.md). Here the exact count stops at ``exact_limit``
rows; past it, the page total is PostgreSQL's planner estimate of the same query (EXPLAIN,
no rows read), which after autovacuum's ANALYZE is within a few per cent. A DPO looking for a
case searches or filters; nobody pages through the ten-thousandth row by hand.
"""

from __future__ import annotations

import json
from functools import cached_property

from django.core.exceptions import EmptyResultSet
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet


class EstimatedCountPaginator(Paginator):
    """Exact count up to ``exact_limit`` rows, the planner's estimate beyond (PostgreSQL).

    Both queries run on every page, so a page costs the same number of queries whatever
    the table size. Elsewhere (SQLite) it is Django's paginator.
    """

    exact_limit = 10_000

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if not isinstance(queryset, QuerySet) or connections[queryset.db].vendor != "postgresql":
            return super().count
        # Only the primary key: the count and the estimate depend on the rows, not on the
        # columns. The statement is compiled once for both.
        query = queryset.order_by().values("pk").query
        try:
            sql, params = query.get_compiler(queryset.db).as_sql()
        except EmptyResultSet:  # e.g. pk__in=[]: nothing to count
            return 0
        # ``sql`` is Django's own compiled statement; its values stay in ``params``.
        capped_sql = f"SELECT COUNT(*) FROM ({sql} LIMIT %s) capped"  # noqa: S608
        with connections[queryset.db].cursor() as cursor:
            # SELECT COUNT(*) FROM (SELECT … LIMIT n): reads at most n rows.
            cursor.execute(capped_sql, (*params, self.exact_limit + 1))
            capped = cursor.fetchone()[0]
            # Rows PostgreSQL expects the query to return: planning only, no row is read.
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
            plan = cursor.fetchone()[0]
        if capped <= self.exact_limit:
            return capped
        if isinstance(plan, str):
            plan = json.loads(plan)
        return max(int(plan[0]["Plan"]["Plan Rows"]), capped)
