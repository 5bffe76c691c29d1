"""approve_case: the Approve button for scripts, with the same permission check."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cases import services
from cases.models import Case


class Command(BaseCommand):
    help = "Approve a case as USERNAME (who must hold cases.approve_case)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("reference")
        parser.add_argument("--user", required=True, help="The approving person's username.")

    def handle(self, *args: Any, **options: Any) -> None:
        case, user = case_and_user(options["reference"], options["user"])
        try:
            case = services.approve_case(case, actor=user, actor_label="approve_case command")
        except PermissionDenied as exc:
            raise CommandError(str(exc) or "Permission denied.") from None
        except services.TransitionError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{case.reference} {case.state}")


def case_and_user(reference: str, username: str) -> tuple[Case, Any]:
    """The case and the acting person, or a CommandError naming what was not found."""
    user_model = get_user_model()
    try:
        user = user_model.objects.get(**{user_model.USERNAME_FIELD: username})
    except user_model.DoesNotExist:
        raise CommandError(f"No user {username!r}.") from None
    try:
        case = Case.objects.get(reference=reference.strip().upper())
    except Case.DoesNotExist:
        raise CommandError(f"No case {reference!r}.") from None
    return case, user
