"""The case lifecycle: every allowed and forbidden transition, permissions, audit trail."""

from __future__ import annotations

import threading
from datetime import date

import django_fsm
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import connection
from django_fsm import TransitionNotAllowed

from cases import services
from cases.models import Case, CaseEvent

S = Case.State
ALL_STATES = list(S)

# (transition, from, to) exactly as the product defines them.
ALLOWED = [
    ("approve", S.NEW, S.APPROVED),
    ("reject", S.NEW, S.REJECTED),
    ("retry", S.FAILED, S.APPROVED),
    ("start_export", S.APPROVED, S.EXPORTING),
    ("finish", S.EXPORTING, S.FINISHED),
    ("fail", S.EXPORTING, S.FAILED),
    ("fail", S.APPROVED, S.FAILED),
]
KWARGS = {"reject": {"reason": "Identity could not be verified."}, "fail": {"reason": "x"}}


def _force_state(case: Case, state: str) -> Case:
    Case.objects.filter(pk=case.pk).update(state=state)
    return Case.objects.get(pk=case.pk)


def test_state_values_are_exactly_the_products() -> None:
    assert [s.value for s in S] == [
        "new",
        "approved",
        "exporting",
        "finished",
        "failed",
        "rejected",
    ]


@pytest.mark.parametrize(("name", "source", "target"), ALLOWED)
def test_allowed_transitions(make_case, dpo, qualifio_account, name, source, target) -> None:
    case = _force_state(make_case(), source)
    person = name in services.USER_TRANSITIONS
    case = services.transition_case(
        case, name, actor=dpo if person else None, **KWARGS.get(name, {})
    )
    assert case.state == target
    assert Case.objects.get(pk=case.pk).state == target
    event = case.events.filter(kind=CaseEvent.Kind.TRANSITION).last()
    assert (event.from_state, event.to_state) == (source, target)
    assert event.actor == (dpo if person else None)


FORBIDDEN = [
    (name, state)
    for name in ("approve", "reject", "retry", "start_export", "finish", "fail")
    for state in ALL_STATES
    if (name, state) not in {(n, s) for n, s, _ in ALLOWED}
]


@pytest.mark.parametrize(("name", "state"), FORBIDDEN)
def test_forbidden_transitions_change_nothing(make_case, dpo, name, state) -> None:
    case = _force_state(make_case(), state)
    events_before = case.events.count()
    person = name in services.USER_TRANSITIONS
    with pytest.raises(services.TransitionError):
        services.transition_case(case, name, actor=dpo if person else None, **KWARGS.get(name, {}))
    assert Case.objects.get(pk=case.pk).state == state
    assert case.events.count() == events_before


def test_state_field_is_protected(make_case) -> None:
    case = make_case()
    with pytest.raises(AttributeError):
        case.state = S.FINISHED


def test_model_transition_from_wrong_state_raises(make_case) -> None:
    case = make_case()
    with pytest.raises(TransitionNotAllowed):
        case.finish()


def test_support_cannot_approve_reject_or_retry(make_case, support, qualifio_account) -> None:
    case = make_case()
    for name, kwargs in (("approve", {}), ("reject", {"reason": "no"})):
        with pytest.raises(PermissionDenied):
            services.transition_case(case, name, actor=support, **kwargs)
    failed = _force_state(make_case(), S.FAILED)
    with pytest.raises(PermissionDenied):
        services.retry_case(failed, actor=support)
    assert Case.objects.get(pk=case.pk).state == S.NEW


def test_no_person_may_trigger_pipeline_transitions(make_case, superuser) -> None:
    case = _force_state(make_case(), S.APPROVED)
    for name in ("start_export", "finish", "fail"):
        with pytest.raises(PermissionDenied):
            services.transition_case(case, name, actor=superuser)
    assert Case.objects.get(pk=case.pk).state == S.APPROVED


def test_reject_requires_a_reason(make_case, dpo) -> None:
    case = make_case()
    with pytest.raises(ValidationError, match="reason"):
        services.reject_case(case, actor=dpo, reason="   ")
    assert Case.objects.get(pk=case.pk).state == S.NEW
    case = services.reject_case(case, actor=dpo, reason="Not our customer.")
    assert case.rejection_reason == "Not our customer."
    assert case.closed_at is not None


def test_approve_without_any_vendor_account_is_refused(make_case, dpo) -> None:
    case = make_case()
    with pytest.raises(services.TransitionError, match="No active vendor account"):
        services.approve_case(case, actor=dpo)
    assert Case.objects.get(pk=case.pk).state == S.NEW
    assert not case.events.filter(kind=CaseEvent.Kind.TRANSITION).exists()


def test_on_error_state_is_saved_for_pipeline_transitions(make_case, monkeypatch) -> None:
    """django-fsm sets on_error in memory only; the service persists it, with the reason."""
    case = _force_state(make_case(), S.EXPORTING)

    @django_fsm.transition(
        field=Case._meta.get_field("state"),
        source=S.EXPORTING,
        target=S.FINISHED,
        on_error=S.FAILED,
        permission=lambda instance, user: False,
    )
    def finish_with_missing_archive(self: Case) -> None:
        raise RuntimeError("archive missing")

    monkeypatch.setattr(Case, "finish", finish_with_missing_archive)
    case = services.transition_case(case, "finish")
    stored = Case.objects.get(pk=case.pk)
    assert stored.state == S.FAILED
    assert "archive missing" in stored.failure_reason
    event = stored.events.filter(kind=CaseEvent.Kind.TRANSITION).last()
    assert (event.from_state, event.to_state) == (S.EXPORTING, S.FAILED)


def test_opening_numbers_and_dates_the_case(make_case) -> None:
    first = make_case(received_on=date(2026, 9, 3))
    second = make_case(received_on=date(2026, 9, 3))
    assert first.reference == "DSAR-2026-000001"
    assert second.reference == "DSAR-2026-000002"
    assert first.due_on == date(2026, 10, 5)
    created = first.events.get(kind=CaseEvent.Kind.CREATED)
    assert created.kind == CaseEvent.Kind.CREATED and created.to_state == S.NEW


def test_email_is_stored_lower_cased_and_names_trimmed(make_case) -> None:
    case = make_case(email="  Joao@Qualifio.COM ", first_name=" Joao ")
    assert case.email == "joao@qualifio.com"
    assert case.first_name == "Joao"


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"email": "not-an-email"}, "email", "valid email"),
        ({"email": ""}, "email", "cannot be blank"),
        ({"first_name": "x" * 151}, "first_name", "at most 150"),
        ({"last_name": "y" * 151}, "last_name", "at most 150"),
        ({"salesforce_id": "003D000000QEq3"}, "salesforce_id", "15 or 18 letters"),
        ({"salesforce_id": "003D000000QEq3mXXX"}, "salesforce_id", "15 or 18 letters"),
        ({"salesforce_id": "003D00000-QEq3m"}, "salesforce_id", "15 or 18 letters"),
        ({"received_on": date(2099, 1, 1)}, "received_on", "future"),
        ({"justification": "z" * 2001}, "justification", "at most 2000"),
        ({"request_type": "erasure"}, "request_type", "not a valid choice"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(make_case, fields, field, message) -> None:
    with pytest.raises((ValidationError, KeyError, ValueError)) as exc:
        make_case(**fields)
    if isinstance(exc.value, ValidationError):
        assert field in exc.value.message_dict
        assert message in " ".join(exc.value.message_dict[field])
    assert not Case.objects.exists()


def test_salesforce_id_is_normalised_to_18_characters(make_case) -> None:
    assert make_case(salesforce_id="003D000000QEq3m").salesforce_id == "003D000000QEq3mIAD"


def test_extension_moves_the_deadline_and_is_audited(make_case, dpo, support) -> None:
    case = make_case(received_on=date(2026, 9, 1))
    with pytest.raises(PermissionDenied):
        services.extend_deadline(case, actor=support, reason="complex")
    case = services.extend_deadline(case, actor=dpo, reason="Numerous requests from the subject.")
    assert case.due_on == date(2026, 12, 1)
    assert Case.objects.get(pk=case.pk).due_on == date(2026, 12, 1)
    assert case.events.filter(kind=CaseEvent.Kind.DEADLINE, actor=dpo).exists()
    with pytest.raises(services.TransitionError, match="already extended"):
        services.extend_deadline(case, actor=dpo, reason="again")


def test_events_are_append_only(make_case) -> None:
    event = make_case().events.get(kind=CaseEvent.Kind.CREATED)
    event.message = "rewritten"
    with pytest.raises(TypeError):
        event.save()
    with pytest.raises(TypeError):
        event.delete()
    with pytest.raises(TypeError):
        CaseEvent.objects.filter(pk=event.pk).update(message="rewritten")
    with pytest.raises(TypeError):
        CaseEvent.objects.all().delete()
    assert CaseEvent.objects.get(pk=event.pk).message.startswith("Request recorded")


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_approvals_make_one_transition(make_case, dpo, qualifio_account) -> None:
    """Ten simultaneous approvals: the row lock lets exactly one through."""
    if connection.vendor != "postgresql":
        pytest.skip("row locks need PostgreSQL")
    case = make_case()
    outcomes: list[str] = []
    barrier = threading.Barrier(10)

    def approve() -> None:
        barrier.wait()
        try:
            services.approve_case(case.pk, actor=dpo)
            outcomes.append("approved")
        except services.TransitionError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=approve) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["approved"] + ["refused"] * 9
    assert Case.objects.get(pk=case.pk).state == S.APPROVED
    assert case.events.filter(kind=CaseEvent.Kind.TRANSITION).count() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_stale_save_cannot_overwrite_a_transition(make_case, dpo, qualifio_account) -> None:
    """ConcurrentTransitionMixin: a save from a stale copy cannot undo another's transition."""
    from django_fsm import ConcurrentTransition

    case = make_case()
    stale = Case.objects.get(pk=case.pk)
    services.approve_case(case, actor=dpo)
    stale.reject(reason="too late")
    with pytest.raises(ConcurrentTransition):
        stale.save()
    assert Case.objects.get(pk=case.pk).state == S.APPROVED
