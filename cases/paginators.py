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
        unordered = queryset.order_by()
        # SELECT COUNT(*) FROM (SELECT … LIMIT n): reads at most n rows.
        capped = unordered[: self.exact_limit + 1].count()
        estimate = self._estimate(unordered)
        if capped <= self.exact_limit:
            return capped
        return max(estimate, capped)

    @staticmethod
    def _estimate(queryset: QuerySet) -> int:
        """Rows PostgreSQL expects the query to return: planning only, no row is read."""
        plan = json.loads(queryset.explain(format="json"))
        return int(plan[0]["Plan"]["Plan Rows"])
