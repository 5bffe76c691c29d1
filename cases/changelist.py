"""The case list's rows, written straight to HTML: Django's markup without its per-cell cost.

Django's ``{% result_list %}`` builds every cell through ``items_for_result``: a field lookup,
``get_empty_value_display()``, lazy-string proxies, ``format_html`` twice, and for the link
column a ``reverse()`` and, whenever a filter or search is active, a URL ``resolve()`` per row.
For 50 rows × 7 columns that was half the page's time. ``case_rows`` writes the same HTML
(tests/test_admin.py compares the two, byte for byte, on every kind of row and page) but works
out once per page what does not change from row to row: each column's class attribute and
kind, the change URL around the primary key (with the preserved filters), choice labels, and,
through ``CaseAdmin.page_cells``, the state badges and the due date's wording; a date is
formatted once per process (``date_formatter``).

Whatever it does not know how to draw exactly as Django would (a ``list_editable`` formset, a
popup, the action checkbox, a column of another kind, a display method returning something
other than text) makes it return None, and the page falls back to Django's own rendering.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from django.contrib.admin.templatetags.admin_list import ResultList
from django.contrib.admin.templatetags.admin_urls import add_preserved_filters
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import FieldDoesNotExist, ObjectDoesNotExist
from django.db import models
from django.urls import NoReverseMatch, reverse
from django.utils import dateformat, formats, translation
from django.utils.safestring import SafeString

#: Stands for the primary key while the change URL is reversed once per page.
PK_MARKER = "__pk__"


class ColumnsChangeList(ChangeList):
    """A ChangeList whose page query loads only ``model_admin.list_columns``, when it has any.

    The list shows a few columns of a wide row; reading, sending and parsing the others (four
    timestamps, free texts) for 50 rows cost more than drawing them. A display method reading
    a column not listed would cost one query per row: tests/test_admin.py counts the list's
    queries against the number of rows to catch that.
    """

    def get_queryset(self, request: Any, exclude_parameters: Any = None) -> Any:
        queryset = super().get_queryset(request, exclude_parameters)
        columns = getattr(self.model_admin, "list_columns", None)
        return queryset.only(*columns) if columns else queryset


def date_formatter(format_name: str) -> Callable[[date], str]:
    """``django.utils.formats.date_format(value, format_name)`` for the dates of one page.

    The format and the language are resolved once; each (date, format, language) is formatted
    once per process (an LRU cache: the same cases, hence dates, are listed page after page).
    """
    fmt = formats.get_format(format_name)
    language = translation.get_language()

    def format_date(value: date) -> str:
        return _formatted_date(value, fmt, language)

    return format_date


@lru_cache(maxsize=4096)
def _formatted_date(value: date, fmt: str, language: str | None) -> str:
    return dateformat.format(value, fmt)  # in ``language``, the active one when called


class Unsupported(Exception):
    """A page (or a value) that only Django's own rendering draws exactly."""


def _html(value: Any) -> str:
    """``conditional_escape`` without its lazy-string wrapper: safe strings pass through."""
    if hasattr(value, "__html__"):
        return str(value.__html__())
    return html.escape(str(value))


def case_rows(cl: Any) -> list[ResultList] | None:
    """The page's rows for ``admin/change_list_results.html``, or None to use Django's.

    Each row is a ``ResultList`` holding one safe string (all its cells), so the template's
    ``{% for item in result %}{{ item }}{% endfor %}`` writes exactly what it writes for
    Django's per-cell items.
    """
    try:
        writer = RowWriter(cl)
        return [ResultList(None, [SafeString(writer.row(obj))]) for obj in cl.result_list]
    except Unsupported:
        return None


class RowWriter:
    """Writes one row's cells as Django's ``items_for_result`` would, column kinds set once."""

    def __init__(self, cl: Any) -> None:
        if cl.formset is not None or cl.is_popup or cl.to_field:
            raise Unsupported("list_editable, popups and to_field are Django's")
        model_admin = cl.model_admin
        self.empty = model_admin.get_empty_value_display()
        page_cells = getattr(model_admin, "page_cells", None)
        fast: dict[str, Callable[[Any], Any]] = page_cells() if page_cells else {}
        self.cells: list[Callable[[Any], str]] = []
        first = True
        for name in cl.list_display:
            if not isinstance(name, str) or name in ("action_checkbox", "__str__"):
                raise Unsupported(f"column {name!r}")
            links = cl.list_display_links
            link = links is not None and ((first and not links) or name in links)
            cell = self._cell(cl, name, fast)
            if link:
                self.cells.append(self._link(cl, cell, "th" if first else "td"))
                first = False
            else:
                self.cells.append(self._plain(cell))

    def row(self, obj: Any) -> str:
        return "".join([cell(obj) for cell in self.cells])

    # --- Columns ------------------------------------------------------------------------

    def _cell(
        self, cl: Any, name: str, fast: dict[str, Callable[[Any], Any]]
    ) -> tuple[str, Callable[[Any], str]]:
        """(class attribute, obj → escaped HTML of the cell's content) for column ``name``."""
        opts = cl.lookup_opts
        try:
            field = opts.get_field(name)
        except FieldDoesNotExist:
            field = None
        if field is not None:
            return self._field_cell(field, name)
        method = getattr(cl.model_admin, name, None)
        if not callable(method) or getattr(method, "boolean", False):
            raise Unsupported(f"column {name!r}")
        empty = getattr(method, "empty_value_display", self.empty)
        compute = fast.get(name, method)
        default_empty = self.empty

        def content(obj: Any) -> str:
            try:
                value = compute(obj)
            except ObjectDoesNotExist:
                return _html(default_empty)
            if value is None:
                return _html(empty)
            if not isinstance(value, str):  # numbers, dates, booleans… are Django's
                raise Unsupported(f"{name} returned {type(value).__name__}")
            return _html(empty if value.strip() == "" else value)

        return f' class="field-{name}"', content

    def _field_cell(self, field: models.Field, name: str) -> tuple[str, Callable[[Any], str]]:
        if (
            field.is_relation
            or field.auto_created
            or field.attname != field.name
            or not isinstance(field, (models.CharField, models.TextField, models.DateField))
            or isinstance(field, (models.URLField, models.DateTimeField))
        ):
            raise Unsupported(f"field {name!r}")
        empty = self.empty
        if field.flatchoices:
            try:
                labels = dict(field.flatchoices)
            except TypeError as exc:
                raise Unsupported(f"choices of {name!r}") from exc

            def choice(obj: Any) -> str:
                value = getattr(obj, name)
                if isinstance(value, str) and value.strip() == "":
                    value = ""
                try:
                    return _html(labels.get(value, empty))
                except TypeError as exc:  # an unhashable value
                    raise Unsupported(f"value of {name!r}") from exc

            return f' class="field-{name}"', choice
        if isinstance(field, models.DateField):
            localize = date_formatter("DATE_FORMAT")  # formats.localize(value) for a date

            def day(obj: Any) -> str:
                value = getattr(obj, name)
                if value in field.empty_values:
                    return _html(empty)
                if not isinstance(value, date) or isinstance(value, datetime):
                    raise Unsupported(f"value of {name!r}")
                return _html(localize(value))

            return f' class="field-{name} nowrap"', day

        def text(obj: Any) -> str:
            value = getattr(obj, name)
            if value is None:
                return _html(empty)
            if not isinstance(value, str):
                raise Unsupported(f"value of {name!r}")
            return _html(empty if value.strip() == "" else value)

        return f' class="field-{name}"', text

    # --- Cells --------------------------------------------------------------------------

    @staticmethod
    def _plain(cell: tuple[str, Callable[[Any], str]]) -> Callable[[Any], str]:
        class_attr, content = cell
        start = f"<td{class_attr}>"

        def write(obj: Any) -> str:
            return start + content(obj) + "</td>"

        return write

    @staticmethod
    def _link(cl: Any, cell: tuple[str, Callable[[Any], str]], tag: str) -> Callable[[Any], str]:
        """The cell linking to the case page: the URL is reversed once, the pk put in per row."""
        class_attr, content = cell
        opts = cl.opts
        try:
            url = reverse(
                f"admin:{opts.app_label}_{opts.model_name}_change",
                args=(PK_MARKER,),
                current_app=cl.model_admin.admin_site.name,
            )
        except NoReverseMatch:
            raise Unsupported("no change URL") from None
        url = add_preserved_filters({"preserved_filters": cl.preserved_filters, "opts": opts}, url)
        if PK_MARKER not in url:
            raise Unsupported("the change URL does not carry its pk as given")
        before, after = url.split(PK_MARKER, 1)
        start = f'<{tag}{class_attr}><a href="{html.escape(before)}'
        middle = f'{html.escape(after)}">'
        end = f"</a></{tag}>"
        pk_name = cl.pk_attname

        def write(obj: Any) -> str:
            pk = getattr(obj, pk_name)
            if type(pk) is not int:  # admin's quote() and reverse() only leave ints as they are
                raise Unsupported("a primary key other than an integer")
            return f"{start}{pk}{middle}{content(obj)}{end}"

        return write
