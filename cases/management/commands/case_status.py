"""case_status: state, deadline, vendor jobs and history of one case."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from cases.models import Case


class Command(BaseCommand):
    help = "Print a case's state, deadline, vendor jobs and events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("reference")
        parser.add_argument("--json", action="store_true", help="Machine-readable output.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            case = Case.objects.get(reference=options["reference"].strip().upper())
        except Case.DoesNotExist:
            raise CommandError(f"No case {options['reference']!r}.") from None
        data = {
            "reference": case.reference,
            "state": case.state,
            "request_type": case.request_type,
            "received_on": case.received_on.isoformat(),
            "due_on": case.due_on.isoformat(),
            "extended": case.extended,
            "overdue": case.is_overdue,
            "failure_reason": case.failure_reason,
            "rejection_reason": case.rejection_reason,
            "jobs": [
                {
                    "account": job.account.name,
                    "vendor": job.account.vendor,
                    "step": job.step,
                    "vendor_status": job.vendor_status,
                    "external_ref": job.external_ref,
                    "last_error": job.last_error,
                    "archives": [
                        {"filename": a.filename, "size": a.size, "sha256": a.sha256}
                        for a in job.archives.all()
                    ],
                }
                for job in case.jobs.select_related("account").prefetch_related("archives")
            ],
            "events": [
                {
                    "at": event.at.isoformat(),
                    "actor": event.actor_display,
                    "kind": event.kind,
                    "from_state": event.from_state,
                    "to_state": event.to_state,
                    "message": event.message,
                }
                for event in case.events.select_related("actor")
            ],
        }
        if options["json"]:
            self.stdout.write(json.dumps(data, indent=2))
            return
        self.stdout.write(
            f"{case.reference}  {case.state}  due {case.due_on:%Y-%m-%d}"
            + ("  OVERDUE" if case.is_overdue else "")
        )
        for job in data["jobs"]:
            self.stdout.write(
                f"  {job['account']}: {job['step']} {job['vendor_status']} {job['last_error']}"
            )
            for archive in job["archives"]:
                self.stdout.write(
                    f"    {archive['filename']} {archive['size']} {archive['sha256']}"
                )
        for event in data["events"]:
            self.stdout.write(f"  {event['at']}  {event['actor']}: {event['message']}")
