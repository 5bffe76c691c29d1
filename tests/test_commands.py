"""The operator's management commands."""

from __future__ import annotations

import io
import json

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import override_settings

from cases.models import Case, CaseEvent
from connectors.models import VendorAccount, VendorIdentity


def run(*args: str, stdin: str = "") -> str:
    out = io.StringIO()
    if stdin:
        import sys

        old, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            call_command(*args, stdout=out)
        finally:
            sys.stdin = old
    else:
        call_command(*args, stdout=out)
    return out.getvalue().strip()


def test_open_case_prints_the_reference(db) -> None:
    reference = run(
        "open_case",
        "--email",
        "Ada@Example.com",
        "--first-name",
        "Ada",
        "--last-name",
        "Lovelace",
        "--salesforce-id",
        "003D000000QEq3m",
        "--type",
        "portability",
        "--justification",
        "Customer asked by e-mail.",
        "--received",
        "2026-11-02",
    )
    case = Case.objects.get()
    assert reference == case.reference
    assert case.email == "ada@example.com"
    assert case.salesforce_id == "003D000000QEq3mIAD"
    assert case.request_type == "portability"
    assert case.events.get(kind=CaseEvent.Kind.CREATED).actor_label == "open_case command"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--email", "nope"], "email: Enter a valid email address."),
        (["--email", "a@b.co", "--salesforce-id", "123"], "salesforce-id: Enter a Salesforce"),
        (["--email", "a@b.co", "--first-name", "x" * 151], "first-name: Ensure this value"),
        (["--email", "a@b.co", "--received", "2999-01-01"], "received-on: The receipt date"),
    ],
)
def test_open_case_rejects_bad_input(db, args, message) -> None:
    with pytest.raises(CommandError, match=message):
        run("open_case", *args)
    assert not Case.objects.exists()


def test_approve_case_checks_the_same_permission(make_case, dpo, support, qualifio_account):
    case = make_case()
    with pytest.raises(CommandError, match="permission"):
        run("approve_case", case.reference, "--user", "support")
    assert Case.objects.get(pk=case.pk).state == "new"
    assert run("approve_case", case.reference.lower(), "--user", "dpo") == (
        f"{case.reference} approved"
    )
    with pytest.raises(CommandError, match="cannot be approved now"):
        run("approve_case", case.reference, "--user", "dpo")
    with pytest.raises(CommandError, match="No user"):
        run("approve_case", case.reference, "--user", "ghost")
    with pytest.raises(CommandError, match="No case"):
        run("approve_case", "DSAR-2026-999999", "--user", "dpo")


def test_case_status_json(make_case) -> None:
    case = make_case()
    data = json.loads(run("case_status", case.reference, "--json"))
    assert data["reference"] == case.reference
    assert data["state"] == "new"
    assert data["due_on"] == case.due_on.isoformat()
    assert data["events"][0]["kind"] == "created"
    text = run("case_status", case.reference)
    assert case.reference in text and "Request recorded" in text


@override_settings(DSAR_ALLOW_DEMO_USERS=True)
def test_create_demo_users(db) -> None:
    output = run("create_demo_users", "--password", "demo-pass-123", "--qualifio-dpo-id", "4242")
    assert "dpo  password: demo-pass-123" in output.replace("user: ", "")
    dpo, support = User.objects.get(username="dpo"), User.objects.get(username="support")
    assert dpo.has_perm("cases.approve_case") and dpo.has_perm("cases.download_archive")
    assert not support.has_perm("cases.approve_case")
    assert not support.has_perm("cases.download_archive")
    assert support.has_perm("cases.add_case") and support.has_perm("cases.view_case")
    assert VendorIdentity.objects.get(user=dpo).external_id == "4242"


@override_settings(DSAR_ALLOW_DEMO_USERS=False)
def test_create_demo_users_refuses_in_production(db) -> None:
    with pytest.raises(CommandError, match="disabled"):
        run("create_demo_users")
    assert not User.objects.exists()


def test_add_vendor_account_qualifio_reads_the_token_from_stdin(db) -> None:
    output = run(
        "add_vendor_account",
        "qualifio",
        "--name",
        "Qualifio EU",
        "--client-id",
        "2449",
        "--api-token",
        "-",
        "--dpo-id",
        "4242",
        stdin="s3cret-token\n",
    )
    assert "Created Qualifio EU" in output and "s3cret" not in output
    account = VendorAccount.objects.get()
    assert account.api_token == "s3cret-token"
    assert account.base_url == "https://api.qualif.io"
    # Encrypted at rest: the raw column never holds the token.
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT api_token FROM connectors_vendoraccount")
        raw = cursor.fetchone()[0]
    assert "s3cret" not in raw


def test_add_vendor_account_salesforce_both_flows(db, tmp_path) -> None:
    run(
        "add_vendor_account",
        "salesforce",
        "--name",
        "Org",
        "--login-url",
        "https://acme.my.salesforce.com/",
        "--client-id",
        "key",
        "--client-secret",
        "secret",
        "--policy-name",
        "DSAR_Portability",
    )
    account = VendorAccount.objects.get(name="Org")
    assert account.login_url == "https://acme.my.salesforce.com"
    assert account.api_version == "62.0"
    key = tmp_path / "key.pem"
    key.write_text("-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
    run(
        "add_vendor_account",
        "salesforce",
        "--name",
        "Org",
        "--login-url",
        "https://login.salesforce.com",
        "--client-id",
        "key",
        "--jwt-key-file",
        str(key),
        "--username",
        "integration@acme.example",
        "--policy-name",
        "DSAR_Portability",
        "--api-version",
        "60.0",
    )
    account.refresh_from_db()
    assert account.client_secret in (None, "") and account.private_key.startswith("-----BEGIN")
    with pytest.raises(CommandError, match="api_version"):
        run(
            "add_vendor_account",
            "salesforce",
            "--name",
            "Old",
            "--login-url",
            "https://login.salesforce.com",
            "--client-id",
            "k",
            "--client-secret",
            "s",
            "--policy-name",
            "P",
            "--api-version",
            "49.0",
        )


def test_reject_case_needs_permission_and_a_reason(make_case, dpo, support) -> None:
    case = make_case()
    with pytest.raises(CommandError, match="permission"):
        run("reject_case", case.reference, "--user", "support", "--reason", "x")
    with pytest.raises(CommandError, match="reason is required"):
        run("reject_case", case.reference, "--user", "dpo", "--reason", "  ")
    assert run("reject_case", case.reference, "--user", "dpo", "--reason", "Not a customer.") == (
        f"{case.reference} rejected"
    )
    assert Case.objects.get(pk=case.pk).rejection_reason == "Not a customer."
