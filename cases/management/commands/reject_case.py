"""reject_case: the Reject button for scripts, with the same permission check and reason."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cases import services

from .approve_case import case_and_user


class Command(BaseCommand):
    help = "Reject a case as USERNAME (who must hold cases.approve_case), with a reason."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("reference")
        parser.add_argument("--user", required=True, help="The deciding person's username.")
        parser.add_argument("--reason", required=True)

    def handle(self, *args: Any, **options: Any) -> None:
        case, user = case_and_user(options["reference"], options["user"])
        try:
            case = services.reject_case(
                case, actor=user, reason=options["reason"], actor_label="reject_case command"
            )
        except (PermissionDenied, services.TransitionError) as exc:
            raise CommandError(str(exc) or "Permission denied.") from None
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from None
        self.stdout.write(f"{case.reference} {case.state}")
