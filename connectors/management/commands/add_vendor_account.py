"""add_vendor_account: configure a vendor account from a script (creates or updates by name).

A secret given as ``-`` is read from standard input, so it stays out of the process list
and the shell history.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from connectors.models import QUALIFIO_PRODUCTION_URL, Vendor, VendorAccount


class Command(BaseCommand):
    help = "Create or update a vendor account (qualifio or salesforce)."

    def add_arguments(self, parser: CommandParser) -> None:
        vendors = parser.add_subparsers(dest="vendor", required=True)
        qualifio = vendors.add_parser("qualifio", help="A Qualifio GDPR API account.")
        qualifio.add_argument("--name", required=True)
        qualifio.add_argument("--base-url", default=QUALIFIO_PRODUCTION_URL)
        qualifio.add_argument("--client-id", required=True)
        qualifio.add_argument("--api-token", required=True, help="'-' reads it from stdin.")
        qualifio.add_argument("--dpo-id", required=True)
        qualifio.add_argument("--ca-file", default="")
        qualifio.add_argument("--inactive", action="store_true")

        salesforce = vendors.add_parser("salesforce", help="A Salesforce Privacy Center org.")
        salesforce.add_argument("--name", required=True)
        salesforce.add_argument("--login-url", required=True)
        salesforce.add_argument("--client-id", required=True, help="The consumer key.")
        flow = salesforce.add_mutually_exclusive_group(required=True)
        flow.add_argument("--client-secret", help="Client credentials flow; '-' reads stdin.")
        flow.add_argument("--jwt-key-file", type=Path, help="JWT bearer flow: PEM private key.")
        salesforce.add_argument("--username", default="", help="JWT bearer flow: the user.")
        salesforce.add_argument("--policy-name", required=True)
        salesforce.add_argument("--api-version", default="62.0")
        salesforce.add_argument("--ca-file", default="")
        salesforce.add_argument("--inactive", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        vendor = options["vendor"]
        account = VendorAccount.objects.filter(name=options["name"]).first() or VendorAccount(
            name=options["name"]
        )
        if account.pk and account.vendor != vendor:
            raise CommandError(f"Account {account.name!r} exists for {account.vendor}.")
        account.vendor = vendor
        account.is_active = not options["inactive"]
        account.client_id = options["client_id"]
        account.ca_file = options["ca_file"]
        if vendor == Vendor.QUALIFIO:
            account.base_url = options["base_url"]
            account.api_token = _secret(options["api_token"])
            account.default_dpo_id = options["dpo_id"]
        else:
            account.base_url = ""
            account.login_url = options["login_url"].rstrip("/")
            account.policy_name = options["policy_name"]
            account.api_version = options["api_version"]
            if options["client_secret"] is not None:
                account.client_secret = _secret(options["client_secret"])
                account.username, account.private_key = "", ""
            else:
                try:
                    account.private_key = options["jwt_key_file"].read_text()
                except OSError as exc:
                    raise CommandError(f"Cannot read the key file: {exc.strerror}") from None
                if not options["username"]:
                    raise CommandError("The JWT bearer flow needs --username.")
                account.username, account.client_secret = options["username"], ""
        try:
            account.full_clean()
        except ValidationError as exc:
            raise CommandError(
                "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
            ) from None
        created = account.pk is None
        account.save()
        self.stdout.write(f"{'Created' if created else 'Updated'} {account}")


def _secret(value: str) -> str:
    return sys.stdin.readline().strip() if value == "-" else value
