"""open_case: record a new request from a script; prints the new reference."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from cases import services
from cases.models import Case


class Command(BaseCommand):
    help = "Record a new data subject request and print its reference."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--email", required=True)
        parser.add_argument("--first-name", default="")
        parser.add_argument("--last-name", default="")
        parser.add_argument("--salesforce-id", default="")
        parser.add_argument("--type", choices=Case.RequestType.values, default="access")
        parser.add_argument("--justification", default="")
        parser.add_argument(
            "--received", type=date.fromisoformat, default=None, help="YYYY-MM-DD (default today)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        case = Case(
            email=options["email"],
            first_name=options["first_name"],
            last_name=options["last_name"],
            salesforce_id=options["salesforce_id"],
            request_type=options["type"],
            justification=options["justification"],
            received_on=options["received"],
        )
        try:
            case = services.open_case(case, actor_label="open_case command")
        except ValidationError as exc:
            raise CommandError(_describe(exc)) from None
        self.stdout.write(case.reference)


def _describe(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(
            f"{field.replace('_', '-')}: {' '.join(msgs)}"
            for field, msgs in exc.message_dict.items()
        )
    return " ".join(exc.messages)
