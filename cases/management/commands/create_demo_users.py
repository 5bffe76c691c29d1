"""create_demo_users: a DPO and a support agent for demos, with their passwords printed."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError, CommandParser

from connectors.models import Vendor, VendorIdentity

DEMO_USERS = (("dpo", "DPO"), ("support", "Support"))


class Command(BaseCommand):
    help = "Create or reset the demo users 'dpo' and 'support' (never in production)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--password", help="Use this password for both (default: a random one each)."
        )
        parser.add_argument("--qualifio-dpo-id", default="", help="The demo DPO's Qualifio id.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DSAR_ALLOW_DEMO_USERS:
            raise CommandError(
                "Demo users are disabled here (production settings). "
                "Set DSAR_ALLOW_DEMO_USERS=true only on a demo or development machine."
            )
        user_model = get_user_model()
        for username, group_name in DEMO_USERS:
            password = options["password"] or secrets.token_urlsafe(9)
            user, _ = user_model.objects.get_or_create(username=username)
            user.is_staff = True
            user.is_active = True
            user.set_password(password)
            user.save()
            user.groups.set([Group.objects.get(name=group_name)])
            if username == "dpo" and options["qualifio_dpo_id"]:
                VendorIdentity.objects.update_or_create(
                    user=user,
                    vendor=Vendor.QUALIFIO,
                    defaults={"external_id": options["qualifio_dpo_id"]},
                )
            self.stdout.write(f"{group_name:8} user: {username}  password: {password}")
