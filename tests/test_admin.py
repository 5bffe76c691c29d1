"""The admin as each role uses it, through Django's test client."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from cases.models import Case, CaseEvent

from .conftest import login

S = Case.State
LIST = reverse("admin:cases_case_changelist")
ADD = reverse("admin:cases_case_add")


def change_url(case: Case) -> str:
    return reverse("admin:cases_case_change", args=[case.pk])


def transition_url(case: Case, name: str) -> str:
    return reverse("admin:cases_case_transition", args=[case.pk, name])


# --- Who can do what --------------------------------------------------------------------------


def test_anonymous_is_sent_to_the_login_page(client: Client, make_case) -> None:
    case = make_case()
    for url in (LIST, ADD, change_url(case), transition_url(case, "approve")):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))
    response = client.post(transition_url(case, "approve"))
    assert response.status_code == 302
    assert Case.objects.get(pk=case.pk).state == S.NEW


def test_support_records_and_reads_but_cannot_decide(
    client: Client, support, make_case, qualifio_account
) -> None:
    login(client, support)
    response = client.post(
        ADD,
        {
            "email": "Ada@Example.com",
            "first_name": "Ada",
            "last_name": "Lovelace",
            "request_type": "access",
            "received_on": "2026-11-20",
            "justification": "",
        },
    )
    assert response.status_code == 302, response.content
    case = Case.objects.get()
    assert response["Location"] == change_url(case)  # straight to what they recorded
    message = client.get(response["Location"]).content.decode()
    assert f'Case <a href="{change_url(case)}">{case.reference}</a> recorded' in message
    assert case.email == "ada@example.com" and case.created_by == support
    assert case.justification.startswith("Data subject access request")

    page = client.get(change_url(case))
    assert page.status_code == 200
    body = page.content.decode()
    assert case.reference in body
    assert "dsar-action-approve" not in body and "Extend deadline" not in body

    for name in ("approve", "reject"):
        assert client.get(transition_url(case, name)).status_code == 403
        response = client.post(transition_url(case, name), {"reason": "no"})
        assert response.status_code == 403
    assert Case.objects.get(pk=case.pk).state == S.NEW
    assert not case.events.filter(kind=CaseEvent.Kind.TRANSITION).exists()


def test_dpo_approves_through_the_confirmation_page(
    client: Client, dpo, make_case, qualifio_account
) -> None:
    case = make_case()
    login(client, dpo)
    page = client.get(change_url(case)).content.decode()
    assert transition_url(case, "approve") in page
    assert transition_url(case, "reject") in page

    confirm = client.get(transition_url(case, "approve"))
    assert confirm.status_code == 200
    assert b"Approve the export" in confirm.content
    assert Case.objects.get(pk=case.pk).state == S.NEW  # looking is not approving

    response = client.post(transition_url(case, "approve"), {"confirm": "1"})
    assert response.status_code == 302 and response["Location"] == change_url(case)
    case.refresh_from_db()
    assert case.state == S.APPROVED and case.approved_by == dpo
    event = case.events.get(kind=CaseEvent.Kind.TRANSITION)
    assert (event.actor, event.from_state, event.to_state) == (dpo, "new", "approved")

    # A second click (stale page) changes nothing and says why.
    response = client.post(transition_url(case, "approve"), follow=True)
    assert "cannot be approved now" in response.content.decode()
    assert case.events.filter(kind=CaseEvent.Kind.TRANSITION).count() == 1


def test_dpo_rejects_with_a_reason(client: Client, dpo, make_case) -> None:
    case = make_case()
    login(client, dpo)
    response = client.post(transition_url(case, "reject"), {"reason": ""})
    assert response.status_code == 200  # the form again, with its error
    assert b"This field is required" in response.content
    assert Case.objects.get(pk=case.pk).state == S.NEW
    client.post(transition_url(case, "reject"), {"reason": "Requester is not the subject."})
    case.refresh_from_db()
    assert case.state == S.REJECTED
    assert case.rejection_reason == "Requester is not the subject."


def test_dpo_retries_a_failed_case(client: Client, dpo, make_case, qualifio_account) -> None:
    case = make_case()
    Case.objects.filter(pk=case.pk).update(state=S.FAILED, failure_reason="vendor down")
    login(client, dpo)
    assert transition_url(case, "retry") in client.get(change_url(case)).content.decode()
    client.post(transition_url(case, "retry"))
    assert Case.objects.get(pk=case.pk).state == S.APPROVED


def test_forged_fsm_post_without_permission_changes_nothing(
    client: Client, editor_without_approval, make_case, qualifio_account
) -> None:
    """FSMAdminMixin would run ``_fsm_transition_to`` from the change form unchecked."""
    case = make_case()
    login(client, editor_without_approval)
    assert client.get(change_url(case)).status_code == 200
    response = client.post(change_url(case), {"_fsm_transition_to": "approve"})
    assert Case.objects.get(pk=case.pk).state == S.NEW
    assert not case.events.filter(kind=CaseEvent.Kind.TRANSITION).exists()
    if response.status_code == 302:  # sent to the confirmation page, which refuses
        assert client.get(response["Location"]).status_code == 403
    else:
        assert response.status_code == 403
    # The confirmation view itself, posted to directly:
    assert client.post(transition_url(case, "approve")).status_code == 403
    # Pipeline-only transitions cannot be named at all.
    for name in ("finish", "start_export", "fail"):
        client.post(change_url(case), {"_fsm_transition_to": name})
        assert client.post(transition_url(case, name)).status_code in (403, 404)
    assert Case.objects.get(pk=case.pk).state == S.NEW


def test_forged_fsm_post_by_dpo_still_needs_the_confirmation(
    client: Client, dpo, make_case, qualifio_account
) -> None:
    case = make_case()
    login(client, dpo)
    response = client.post(change_url(case), {"_fsm_transition_to": "approve"})
    assert response.status_code == 302
    assert response["Location"] == transition_url(case, "approve")
    assert Case.objects.get(pk=case.pk).state == S.NEW


def test_csrf_is_enforced_on_every_action(dpo, make_case, qualifio_account) -> None:
    case = make_case()
    client = login(Client(enforce_csrf_checks=True), dpo)
    for url, data in (
        (transition_url(case, "approve"), {}),
        (transition_url(case, "reject"), {"reason": "x"}),
        (reverse("admin:cases_case_extend", args=[case.pk]), {"reason": "x"}),
        (ADD, {"email": "a@b.co", "request_type": "access", "received_on": "2026-11-20"}),
    ):
        assert client.post(url, data).status_code == 403
    assert Case.objects.get(pk=case.pk).state == S.NEW
    assert Case.objects.count() == 1


def test_bad_input_in_the_add_form_shows_clear_errors(client: Client, support) -> None:
    login(client, support)
    response = client.post(
        ADD,
        {
            "email": "not-an-email",
            "first_name": "x" * 151,
            "salesforce_id": "12345",
            "request_type": "access",
            "received_on": (timezone.localdate() + timedelta(days=3)).isoformat(),
        },
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "Enter a valid email address." in errors["email"]
    assert "at most 150 characters" in errors["first_name"][0]
    assert "15 or 18 letters and digits" in errors["salesforce_id"][0]
    assert "cannot be in the future" in errors["received_on"][0]
    assert not Case.objects.exists()


def test_events_cannot_be_edited_or_deleted_in_the_admin(
    client: Client, superuser, make_case
) -> None:
    case = make_case()
    event = case.events.first()
    login(client, superuser)
    assert client.get(reverse("admin:cases_caseevent_changelist")).status_code == 200
    assert client.get(reverse("admin:cases_caseevent_add")).status_code == 403
    client.post(reverse("admin:cases_caseevent_change", args=[event.pk]), {"message": "x"})
    response = client.post(
        reverse("admin:cases_caseevent_delete", args=[event.pk]), {"post": "yes"}
    )
    assert response.status_code == 403
    assert CaseEvent.objects.get(pk=event.pk).message == event.message
    # Cases are never deleted either.
    response = client.post(reverse("admin:cases_case_delete", args=[case.pk]), {"post": "yes"})
    assert response.status_code == 403
    assert Case.objects.filter(pk=case.pk).exists()


def test_deadline_extension_in_the_admin(client: Client, dpo, support, make_case) -> None:
    case = make_case(received_on=date(2026, 9, 1))
    url = reverse("admin:cases_case_extend", args=[case.pk])
    assert login(Client(), support).post(url, {"reason": "complex"}).status_code == 403
    login(client, dpo)
    assert b"Extend deadline" in client.get(change_url(case)).content
    client.post(url, {"reason": "Complex request across three systems."})
    assert Case.objects.get(pk=case.pk).due_on == date(2026, 12, 1)


# --- The list: badges, filters, search, queries ------------------------------------------------


def test_list_shows_badges_and_overdue(client: Client, dpo, make_case) -> None:
    overdue = make_case(received_on=timezone.localdate() - timedelta(days=60))
    fresh = make_case(received_on=timezone.localdate())
    login(client, dpo)
    body = client.get(LIST).content.decode()
    assert overdue.reference in body and fresh.reference in body
    assert 'class="dsar-badge"' in body
    assert body.count("dsar-overdue") == 1


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("deadline=overdue", {"old"}),
        ("deadline=soon", {"soon"}),
        ("state__exact=rejected", {"rejected"}),
        ("request_type__exact=portability", {"soon"}),
    ],
)
def test_list_filters(client: Client, dpo, make_case, query, expected) -> None:
    today = timezone.localdate()
    cases = {
        "old": make_case(received_on=today - timedelta(days=60)),
        "soon": make_case(received_on=today - timedelta(days=27), request_type="portability"),
        "later": make_case(received_on=today),
        "rejected": make_case(received_on=today - timedelta(days=90)),
    }
    Case.objects.filter(pk=cases["rejected"].pk).update(state=S.REJECTED, closed_at=timezone.now())
    login(client, dpo)
    response = client.get(f"{LIST}?{query}")
    shown = {name for name, case in cases.items() if case.reference in response.content.decode()}
    assert shown == expected


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("ADA@example.COM", {"ada"}),
        ("dsar-2026-000002", {"grace"}),
        ("Lovel", {"ada"}),
        ("grace hop", {"grace"}),
        ("hopper", {"grace"}),
        ("003D000000QEq3m", {"grace"}),
        ("joao", {"joao"}),
        ("nobody", set()),
    ],
)
def test_search(client: Client, dpo, make_case, term, expected) -> None:
    people = {
        "ada": make_case(email="ada@example.com", first_name="Ada", last_name="Lovelace"),
        "grace": make_case(
            email="grace@example.com",
            first_name="Grace",
            last_name="Hopper",
            salesforce_id="003D000000QEq3mIAD",
        ),
        "joao": make_case(email="joao@qualifio.com", first_name="", last_name=""),
    }
    login(client, dpo)
    body = client.get(LIST, {"q": term}).content.decode()
    shown = {name for name, case in people.items() if f">{case.reference}<" in body}
    assert shown == expected


def test_email_search_is_an_index_lookup_not_a_scan(make_case) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL plans only")
    from django.contrib.admin.sites import site

    make_case()
    model_admin = site._registry[Case]
    queryset, _ = model_admin.get_search_results(None, Case.objects.all(), "Ada@Example.com")
    sql, params = queryset.query.sql_with_params()
    assert "LIKE" not in sql.upper()
    with connection.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("EXPLAIN " + sql, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("SET enable_seqscan = on")
    assert "case_email_idx" in plan


def test_list_queries_do_not_grow_with_rows(client: Client, dpo, make_case, qualifio_account):
    login(client, dpo)
    make_case()
    client.get(LIST)  # warm up (session, content types)
    with CaptureQueriesContext(connection) as few:
        assert client.get(LIST).status_code == 200
    for _ in range(30):
        make_case()
    with CaptureQueriesContext(connection) as many:
        assert client.get(LIST).status_code == 200
    assert len(many) == len(few), [q["sql"] for q in many.captured_queries]
    # The session, the user, their own and their groups' permissions, the capped count and
    # the estimate (cases.paginators), the page with each case's job steps (selectors).
    assert len(many) <= 7, [q["sql"] for q in many.captured_queries]


def test_case_page_queries_do_not_grow_with_history(
    client: Client, dpo, make_case, qualifio_account
):
    from cases import services

    case = make_case()
    login(client, dpo)
    client.get(change_url(case))
    with CaptureQueriesContext(connection) as few:
        client.get(change_url(case))
    for i in range(20):
        services.record_event(case, CaseEvent.Kind.NOTE, f"note {i}", actor=dpo)
    with CaptureQueriesContext(connection) as many:
        page = client.get(change_url(case))
    assert page.status_code == 200 and b"note 19" in page.content
    assert len(many) == len(few)


@pytest.mark.parametrize(
    ("state", "steps", "label"),
    [
        ("new", ["discover", "discover"], "0/2 ready"),
        ("new", ["awaiting_approval", "no_data"], "2/2 ready"),
        ("new", ["no_data", "no_data"], "no data held"),
        ("new", ["awaiting_approval", "failed"], "1/2 ready, 1 failed"),
        ("exporting", ["done", "running"], "1/2 done"),
        ("failed", ["done", "failed"], "1/2 done, 1 failed"),
        ("finished", ["done", "no_data"], "2/2 done"),
        ("rejected", ["cancelled", "cancelled"], "cancelled"),
    ],
)
def test_vendor_progress_label(make_case, state, steps, label) -> None:
    from cases.models import VendorJob
    from cases.selectors import cases_for_admin, vendor_progress_label
    from connectors.models import Vendor, VendorAccount

    case = make_case()
    Case.objects.filter(pk=case.pk).update(state=state)
    for number, step in enumerate(steps):
        account = VendorAccount.objects.create(
            name=f"account {number}", vendor=Vendor.QUALIFIO, client_id="1"
        )
        VendorJob.objects.create(case=case, account=account, step=step)
    assert vendor_progress_label(cases_for_admin(Case.objects.all()).get()) == label
    assert vendor_progress_label(Case.objects.get()) == label  # not annotated: reads the jobs


def test_list_count_is_exact_when_small_and_estimated_when_large(make_case, monkeypatch) -> None:
    from cases.paginators import EstimatedCountPaginator

    for _ in range(5):
        make_case()
    exact = EstimatedCountPaginator(Case.objects.all(), 2)
    assert exact.count == 5 and exact.num_pages == 3
    assert EstimatedCountPaginator(Case.objects.filter(pk__in=[]), 2).count == 0
    assert EstimatedCountPaginator(Case.objects.filter(state="new", email="x@y.z"), 2).count == 0
    if connection.vendor != "postgresql":
        pytest.skip("estimates come from PostgreSQL's planner")
    monkeypatch.setattr(EstimatedCountPaginator, "exact_limit", 3)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE cases_case")
    estimated = EstimatedCountPaginator(Case.objects.all(), 2)
    assert estimated.count >= 4  # more than the exact limit: the planner's figure
    with CaptureQueriesContext(connection) as queries:
        EstimatedCountPaginator(Case.objects.all(), 2).count  # noqa: B018
    assert len(queries) == 2  # a capped COUNT and one EXPLAIN, whatever the table size


# --- The list's rows: Django's HTML, written by cases.changelist ------------------------------


@pytest.fixture
def every_kind_of_row(make_case, qualifio_account):
    """Cases in every state, overdue, due soon or not, closed late, with and without jobs."""
    from cases.models import VendorJob

    today = timezone.localdate()
    made = {}
    for state in Case.State.values:
        for name, received in (("old", 60), ("soon", 27), ("fresh", 0)):
            case = make_case(
                received_on=today - timedelta(days=received),
                request_type="portability" if name == "soon" else "access",
                email=f"{state}.{name}+o'hara&co@example.com",
            )
            closed = timezone.now() if state in ("finished", "rejected") else None
            Case.objects.filter(pk=case.pk).update(state=state, closed_at=closed)
            made[f"{state}-{name}"] = case
    steps = ["discover", "awaiting_approval", "no_data", "done", "failed", "cancelled", "running"]
    for index, case in enumerate(made.values()):
        jobs = VendorJob.objects.filter(case=case)
        if index % 5 == 4:
            jobs.delete()  # a case no vendor was asked about
        else:
            jobs.update(step=steps[index % len(steps)])
    return made


def _without_csrf(body: str) -> str:
    import re

    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]*"', "", body)


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?state__exact=new",
        "?deadline=overdue",
        "?deadline=soon&request_type__exact=portability",
        "?q=new",
        "?o=5.-2",
        "?o=-3",
        "?_popup=1",  # Django's own rendering, either way
    ],
)
def test_list_rows_are_exactly_djangos(
    client: Client, dpo, every_kind_of_row, monkeypatch, query
) -> None:
    from cases.templatetags import case_list

    login(client, dpo)
    written = []
    fast_rows = case_list.case_rows
    monkeypatch.setattr(
        case_list, "case_rows", lambda cl: written.append(rows := fast_rows(cl)) or rows
    )
    ours = client.get(LIST + query).content.decode()
    monkeypatch.setattr(case_list, "case_rows", lambda cl: None)  # Django's result_list
    djangos = client.get(LIST + query).content.decode()
    assert _without_csrf(ours) == _without_csrf(djangos)
    assert written and (written[0] is None) == ("_popup" in query)
    assert ours.count("<tr>") >= 2 and "o&#x27;hara&amp;co@example.com" in ours


def test_list_rows_fall_back_to_django_for_other_columns(
    client: Client, dpo, every_kind_of_row, monkeypatch
) -> None:
    """A column the writer does not draw (here a timestamp) leaves the page to Django."""
    from django.contrib.admin.sites import site

    from cases.templatetags import case_list

    model_admin = site._registry[Case]
    monkeypatch.setattr(model_admin, "list_display", (*model_admin.list_display, "created_at"))
    monkeypatch.setattr(model_admin, "list_columns", (*model_admin.list_columns, "created_at"))
    login(client, dpo)
    written = []
    fast_rows = case_list.case_rows
    monkeypatch.setattr(
        case_list, "case_rows", lambda cl: written.append(rows := fast_rows(cl)) or rows
    )
    body = client.get(LIST).content.decode()
    assert written == [None]
    assert body.count('class="field-created_at nowrap"') == len(every_kind_of_row)


@pytest.mark.parametrize("days", [-30, -1, 0, 1, 7, 8, 40])
@pytest.mark.parametrize("state", ["new", "failed", "finished", "rejected"])
def test_due_badge_follows_the_models_deadline(days, state) -> None:
    """The due column (per row, and per page in cases.changelist) says what the model says."""
    from django.contrib.admin.sites import site

    model_admin = site._registry[Case]
    case = Case(state=state, due_on=timezone.localdate() + timedelta(days=days))
    badge = model_admin.due_badge(case)
    assert ("dsar-overdue" in badge) == case.is_overdue
    assert ("dsar-due-soon" in badge) == case.is_due_soon
    assert model_admin.page_cells()["due_badge"](case) == badge
    assert model_admin.page_cells()["state_badge"](case) == model_admin.state_badge(case)


def test_case_page_never_shows_a_finished_case_beside_a_job_still_downloading(
    client: Client, dpo, make_case, qualifio_account, monkeypatch
):
    """The worker may finish the job and then the case while the page is being built.

    The case is read twice (django-fsm's buttons, then Django's page); the jobs are read
    after the second, the one shown: a job is written done before its case moves on, so the
    page cannot show "finished" beside "downloading". Here the worker finishes right before
    that second read, where the page used to tear (seen once in the browser test).
    """
    from django.contrib import admin

    from cases.models import VendorJob

    case = make_case()
    Case.objects.filter(pk=case.pk).update(state=Case.State.EXPORTING)
    VendorJob.objects.filter(case=case).update(step=VendorJob.Step.DOWNLOAD)
    case_admin = admin.site._registry[Case]
    original, reads = case_admin.get_object, []

    def get_object(request, object_id, from_field=None):
        reads.append(object_id)
        if len(reads) == 2:  # the worker: job done, then the case finished
            VendorJob.objects.filter(case=case).update(step=VendorJob.Step.DONE)
            Case.objects.filter(pk=case.pk).update(state=Case.State.FINISHED)
        return original(request, object_id, from_field)

    monkeypatch.setattr(case_admin, "get_object", get_object)
    login(client, dpo)
    page = client.get(change_url(case)).content.decode()
    assert "dsar-state-finished" in page  # the page shows the case as the worker left it
    assert "dsar-job-download" not in page and "dsar-job-done" in page
