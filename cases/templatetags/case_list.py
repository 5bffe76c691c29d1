"""``{% case_result_list cl %}``: Django's ``{% result_list %}``, rows from cases.changelist.

Same context, same (overridable) ``change_list_results.html``; only the rows are written by
``cases.changelist.case_rows``, which hands back to Django's ``result_list`` whatever it does
not draw itself.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.contrib.admin.templatetags import admin_list
from django.contrib.admin.templatetags.base import InclusionAdminNode

from cases.changelist import case_rows

register = template.Library()


def case_result_list(cl: Any) -> dict[str, Any]:
    rows = case_rows(cl)
    if rows is None:
        return admin_list.result_list(cl)
    headers = list(admin_list.result_headers(cl))
    return {
        "cl": cl,
        "result_hidden_fields": list(admin_list.result_hidden_fields(cl)),
        "result_headers": headers,
        "num_sorted_fields": sum(1 for h in headers if h["sortable"] and h["sorted"]),
        "results": rows,
    }


@register.tag(name="case_result_list")
def case_result_list_tag(parser: Any, token: Any) -> InclusionAdminNode:
    return InclusionAdminNode(
        parser,
        token,
        func=case_result_list,
        template_name="change_list_results.html",
        takes_context=False,
    )
