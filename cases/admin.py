"""The DPO's and support staff's workspace: the case list, the case page and its actions.

Extended only through ModelAdmin hooks, templates and ``get_urls``. Every action is checked
on the server by ``cases.services`` (permission, state, row lock); buttons are merely hidden
from those who may not use them.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IS_POPUP_VAR
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q, QuerySet
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html
from django_fsm.admin import FSMAdminMixin

from connectors.salesforce_ids import is_valid_salesforce_id, to_18

from . import selectors, services
from .changelist import ColumnsChangeList, date_formatter
from .forms import ConfirmForm, ReasonForm
from .models import Case, CaseEvent
from .paginators import EstimatedCountPaginator

REFERENCE = re.compile(r"^DSAR-\d{4}-\d{6}$", re.IGNORECASE)
STATE_COLOURS = {
    Case.State.NEW: "#1f6feb",
    Case.State.APPROVED: "#8250df",
    Case.State.EXPORTING: "#bf8700",
    Case.State.FINISHED: "#1a7f37",
    Case.State.FAILED: "#cf222e",
    Case.State.REJECTED: "#57606a",
}


def _due_badge(case: Case, today: date, due: str) -> str:
    """The due date, red with the days overdue, amber with the days left when due soon."""
    if case.overdue_on(today):
        days = -case.days_left(today)
        return format_html(
            '<span class="dsar-overdue" title="{} days overdue">{}</span>', days, due
        )
    if case.due_soon_on(today):
        days = case.days_left(today)
        return format_html('<span class="dsar-due-soon" title="{} days left">{}</span>', days, due)
    return due


class DeadlineFilter(admin.SimpleListFilter):
    title = "deadline"
    parameter_name = "deadline"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            ("overdue", "Overdue"),
            ("soon", f"Due in {settings.DSAR_DUE_SOON_DAYS} days"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Case]) -> QuerySet[Case]:
        today = timezone.localdate()
        open_cases = queryset.filter(closed_at__isnull=True)
        if self.value() == "overdue":
            return open_cases.filter(due_on__lt=today)
        if self.value() == "soon":
            horizon = today + timedelta(days=settings.DSAR_DUE_SOON_DAYS)
            return open_cases.filter(due_on__gte=today, due_on__lte=horizon)
        return queryset


@admin.register(Case)
class CaseAdmin(FSMAdminMixin, admin.ModelAdmin):
    fsm_fields = ["state"]
    change_form_template = "admin/cases/case/change_form.html"
    # Django's change list; its rows are written by cases.changelist (same HTML, cheaper).
    change_list_template = "admin/cases/case/change_list.html"
    list_display = (
        "reference",
        "email",
        "state_badge",
        "request_type",
        "received_on",
        "due_badge",
        "vendor_progress",
    )
    list_display_links = ("reference",)
    #: What the list reads of each case (its columns and what the display methods use);
    #: the page's query loads only these (cases.changelist.ColumnsChangeList).
    list_columns = ("id", "reference", "email", "state", "request_type", "received_on", "due_on")
    list_filter = ("state", DeadlineFilter, "request_type")
    # The search box is ours (get_search_results): exact and prefix lookups on indexed columns.
    search_fields = ("reference",)
    search_help_text = (
        "Reference (DSAR-2026-000123), exact e-mail, Salesforce id, vendor rule id, "
        "or the start of a first or last name."
    )
    list_per_page = 50
    show_full_result_count = False
    # Exact counts up to 10,000 rows, PostgreSQL's estimate beyond: see cases.paginators.
    paginator = EstimatedCountPaginator
    ordering = ("-id",)
    add_fields = (
        "email",
        "first_name",
        "last_name",
        "salesforce_id",
        "request_type",
        "received_on",
        "justification",
    )
    detail_fields = (
        "reference",
        "state",
        "request_type",
        "email",
        "first_name",
        "last_name",
        "salesforce_id",
        "justification",
        "received_on",
        "due_on",
        "extended",
        "extension_reason",
        "rejection_reason",
        "failure_reason",
        "created_by",
        "approved_by",
        "approved_at",
        "created_at",
    )

    # --- List ---------------------------------------------------------------------------

    class Media:
        css = {"all": ("cases/admin.css",)}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Case]:
        return selectors.cases_for_admin(super().get_queryset(request))

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ColumnsChangeList]:
        return ColumnsChangeList

    @admin.display(description="state", ordering="state")
    def state_badge(self, case: Case) -> str:
        return format_html(
            '<span class="dsar-badge" style="background:{}">{}</span>',
            STATE_COLOURS.get(case.state, "#57606a"),
            case.get_state_display(),
        )

    @admin.display(description="due", ordering="due_on")
    def due_badge(self, case: Case) -> str:
        return _due_badge(case, timezone.localdate(), date_format(case.due_on, "j M Y"))

    @admin.display(description="vendors")
    def vendor_progress(self, case: Case) -> str:
        return selectors.vendor_progress_label(case)

    def page_cells(self) -> dict[str, Any]:
        """The display methods above for one page of the list (cases.changelist): the same
        text, with what rows share worked out once (today, each state's badge, each date)."""
        today = timezone.localdate()
        badges: dict[str, str] = {}
        due_format = date_formatter("j M Y")

        def state_badge(case: Case) -> str:
            badge = badges.get(case.state)
            if badge is None:
                badge = badges[case.state] = self.state_badge(case)
            return badge

        def due_badge(case: Case) -> str:
            return _due_badge(case, today, due_format(case.due_on))

        return {
            "state_badge": state_badge,
            "due_badge": due_badge,
            "vendor_progress": self.vendor_progress,
        }

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Case], search_term: str
    ) -> tuple[QuerySet[Case], bool]:
        """Only lookups an index can answer: no ``LIKE '%…%'`` scan of the whole table."""
        term = search_term.strip()
        if not term:
            return queryset, False
        if REFERENCE.match(term):
            return queryset.filter(reference=term.upper()), False
        if "@" in term:
            return queryset.filter(email=term.lower()), False
        condition = Q()
        if is_valid_salesforce_id(term):
            condition |= Q(salesforce_id=to_18(term))
        vendor_ref = selectors.cases_with_vendor_reference(term)
        if vendor_ref is not None:
            condition |= Q(pk__in=vendor_ref)
        words = term.split()
        if words:
            name_condition = Q()
            for word in words:
                name_condition &= (
                    Q(first_name__istartswith=word)
                    | Q(last_name__istartswith=word)
                    | Q(email__startswith=word.lower())
                )
            condition |= name_condition
        return queryset.filter(condition), False

    # --- Case page ----------------------------------------------------------------------

    def get_fields(self, request: HttpRequest, obj: Case | None = None) -> tuple[str, ...]:
        return self.detail_fields if obj else self.add_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Case | None = None) -> tuple[str, ...]:
        # A recorded request is a record: it is not edited, it moves through its lifecycle.
        return self.detail_fields if obj else ()

    def has_delete_permission(self, request: HttpRequest, obj: Case | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Case, form: Any, change: bool) -> None:
        if change:  # every field is read-only once recorded; nothing to save
            return
        try:
            services.open_case(obj, actor=request.user)
        except ValidationError as exc:  # pragma: no cover - the form validated the same rules
            raise PermissionDenied(str(exc)) from exc

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: Case | None = None,
    ) -> HttpResponse:
        """The case page: its history, vendor jobs and archives, read after the case itself.

        ``obj`` is the case Django fetched for this page; reading what hangs off it afterwards
        means a page never shows a case finished beside a job still downloading (a job is
        written done before its case moves on). Reading them first tore exactly that way.
        """
        if obj is not None and not add:
            context.update(selectors.case_page_context(obj, request.user))
            context.update(
                title=f"Case {obj.reference}",
                show_save=False,
                show_save_and_continue=False,
                show_save_and_add_another=False,
                show_delete=False,
                can_extend=(
                    obj.is_open and not obj.extended and request.user.has_perm("cases.approve_case")
                ),
            )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def response_add(
        self, request: HttpRequest, obj: Case, post_url_continue: str | None = None
    ) -> HttpResponse:
        """Show the recorded case (to support staff too, who may view but not change it)."""
        if "_addanother" in request.POST or IS_POPUP_VAR in request.POST:
            return super().response_add(request, obj, post_url_continue)
        url = self._change_url(obj)
        self.message_user(
            request,
            format_html(
                'Case <a href="{}">{}</a> recorded, due {}. The vendors are being searched now.',
                url,
                obj.reference,
                date_format(obj.due_on, "j M Y"),
            ),
            messages.SUCCESS,
        )
        return HttpResponseRedirect(url)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(request, {"title": "Cases", **(extra_context or {})})

    def response_change(self, request: HttpRequest, obj: Case) -> HttpResponse:
        """A POSTed ``_fsm_transition_to`` never performs anything by itself here.

        FSMAdminMixin would run the transition straight from the change form, checking no
        permission; we send the person to the confirmation page, whose view enforces it.
        """
        name = request.POST.get(self.fsm_post_param)
        if name:
            if name not in services.USER_TRANSITIONS:
                raise PermissionDenied("Not a transition a person can ask for.")
            return HttpResponseRedirect(self._transition_url(obj, name))
        return admin.ModelAdmin.response_change(self, request, obj)

    def get_urls(self) -> list[Any]:
        opts = self.model._meta
        return [
            path(
                "<path:object_id>/extend/",
                self.admin_site.admin_view(self.extend_view),
                name=f"{opts.app_label}_{opts.model_name}_extend",
            ),
            path(
                "<path:object_id>/archives/<int:archive_id>/",
                self.admin_site.admin_view(self.archive_view),
                name=f"{opts.app_label}_{opts.model_name}_archive",
            ),
            *super().get_urls(),
        ]

    def archive_view(self, request: HttpRequest, object_id: str, archive_id: int) -> HttpResponse:
        """Hand one stored archive to a DPO, as a download, and say so in the case history."""
        case = self.get_object(request, unquote(object_id))
        if case is None or not self.has_view_permission(request, case):
            raise Http404("No such case.")
        if not request.user.has_perm("cases.download_archive"):
            raise PermissionDenied
        archive = selectors.archive_of(case, archive_id)
        if archive is None:
            raise Http404("No such archive.")
        handle = services.open_archive_for_download(archive, actor=request.user)
        return FileResponse(
            handle, as_attachment=True, filename=archive.filename, content_type=archive.content_type
        )

    def fsm_transition_view(
        self, request: HttpRequest, object_id: str, transition_name: str, **kwargs: Any
    ) -> HttpResponse:
        """Confirmation page for Approve / Reject / Retry; its POST performs the transition."""
        case = self.get_object(request, unquote(object_id))
        if case is None:
            raise Http404("No such case.")
        if transition_name not in services.USER_TRANSITIONS:
            raise Http404("No such action.")
        if not services.may_transition(case, transition_name, request.user):
            raise PermissionDenied
        form_class = ReasonForm if transition_name == "reject" else ConfirmForm
        form = form_class(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                services.transition_case(
                    case, transition_name, actor=request.user, **form.cleaned_data
                )
            except services.TransitionError as exc:
                self.message_user(request, str(exc), messages.WARNING)
            except ValidationError as exc:
                self.message_user(request, "; ".join(exc.messages), messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"Case {case.reference} {services._past(transition_name)}.",
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(self._change_url(case))
        transition = self._get_fsm_transition_by_name(obj=case, transition_name=transition_name)
        context = {
            **self.admin_site.each_context(request),
            **selectors.case_page_context(case, request.user),
            "opts": self.model._meta,
            "original": case,
            "title": f"{self.get_fsm_label(transition)} {case.reference}?",
            "transition_name": transition_name,
            "transition_label": self.get_fsm_label(transition),
            "help_text": self.get_help_text(transition),
            "form": form,
            "possible": case.state in transition_sources(transition_name),
        }
        return TemplateResponse(request, "admin/cases/case/transition_confirm.html", context)

    def extend_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Extend the deadline to three months, with a reason (Art. 12(3))."""
        case = self.get_object(request, unquote(object_id))
        if case is None:
            raise Http404("No such case.")
        if not request.user.has_perm("cases.approve_case"):
            raise PermissionDenied
        form = ReasonForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            try:
                services.extend_deadline(
                    case, actor=request.user, reason=form.cleaned_data["reason"]
                )
            except services.TransitionError as exc:
                self.message_user(request, str(exc), messages.WARNING)
            else:
                self.message_user(request, f"Deadline of {case.reference} extended.")
            return HttpResponseRedirect(self._change_url(case))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "original": case,
            "title": f"Extend the deadline of {case.reference}?",
            "form": form,
            "new_due_on": services.deadlines.due_date(case.received_on, extended=True),
        }
        return TemplateResponse(request, "admin/cases/case/extend_confirm.html", context)

    def _change_url(self, case: Case) -> str:
        return reverse("admin:cases_case_change", args=[case.pk])

    def _transition_url(self, case: Case, name: str) -> str:
        return reverse("admin:cases_case_transition", args=[case.pk, name])


def transition_sources(name: str) -> set[str]:
    """The states from which transition ``name`` is declared."""
    return set(getattr(Case, name)._django_fsm.transitions)


@admin.register(CaseEvent)
class CaseEventAdmin(admin.ModelAdmin):
    """The audit trail across cases: readable by whoever may view cases, editable by nobody."""

    list_display = ("at", "case", "kind", "actor_display", "from_state", "to_state", "message")
    list_filter = ("kind",)
    list_select_related = ("case", "actor")
    search_fields = ("case__reference",)
    search_help_text = "Exact case reference."
    show_full_result_count = False
    readonly_fields = list_display

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[CaseEvent], search_term: str
    ) -> tuple[QuerySet[CaseEvent], bool]:
        term = search_term.strip().upper()
        return (queryset.filter(case__reference=term), False) if term else (queryset, False)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("cases.view_case")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
