"""Vendor accounts (credentials encrypted at rest) and people's own ids at the vendors."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from encrypted_fields.fields import EncryptedCharField, EncryptedTextField

QUALIFIO_PRODUCTION_URL = "https://api.qualif.io"
ONE_FLOW_ONLY = (
    "Configure exactly one flow: a consumer secret (client credentials) or a username and "
    "private key (JWT bearer)."
)


class Vendor(models.TextChoices):
    QUALIFIO = "qualifio", "Qualifio"
    SALESFORCE = "salesforce", "Salesforce Privacy Center"


class VendorAccount(models.Model):
    """One set of credentials at one vendor. Every active account receives every new case."""

    name = models.CharField(max_length=100, unique=True)
    vendor = models.CharField(max_length=20, choices=Vendor.choices)
    is_active = models.BooleanField(default=True)

    # Qualifio
    base_url = models.URLField(
        "API base URL", blank=True, default=QUALIFIO_PRODUCTION_URL, max_length=300
    )
    client_id = models.CharField(
        "client id / consumer key",
        max_length=255,
        help_text="Qualifio: the numeric clientId. Salesforce: the connected app's consumer key.",
    )
    api_token = EncryptedCharField("API token", max_length=500, blank=True, null=True)
    default_dpo_id = models.CharField(
        "default DPO id",
        max_length=50,
        blank=True,
        help_text="Qualifio user id sent as userId and, unless the approver has their own, dpo.",
    )

    # Salesforce
    login_url = models.URLField(
        blank=True,
        max_length=300,
        help_text="https://login.salesforce.com, https://test.salesforce.com or your My Domain.",
    )
    client_secret = EncryptedCharField("consumer secret", max_length=500, blank=True, null=True)
    username = models.CharField(
        max_length=255, blank=True, help_text="Integration user for the JWT bearer flow."
    )
    private_key = EncryptedTextField(
        "JWT private key",
        blank=True,
        null=True,
        help_text="PEM of the connected app's certificate key.",
    )
    policy_name = models.CharField(max_length=255, blank=True)
    api_version = models.CharField(max_length=8, blank=True, default="62.0")

    ca_file = models.CharField(
        "CA bundle path",
        max_length=500,
        blank=True,
        help_text="Optional PEM file to trust for this vendor's TLS (sandboxes, TLS proxies).",
    )
    api_usage = models.CharField(
        "API usage", max_length=100, blank=True, editable=False, help_text="Last reported usage."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    SECRET_FIELDS = ("api_token", "client_secret", "private_key")

    class Meta:
        ordering = ("vendor", "name")

    def __str__(self) -> str:
        return f"{self.name} ({self.get_vendor_display()})"

    def __repr__(self) -> str:  # never the secrets
        return f"<VendorAccount {self.pk} {self.vendor} {self.name!r}>"

    @property
    def api_url(self) -> str:
        return self.base_url if self.vendor == Vendor.QUALIFIO else self.login_url

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.vendor == Vendor.QUALIFIO:
            if not self.base_url:
                errors["base_url"] = "Qualifio needs its API base URL."
            if not str(self.client_id).isdigit():
                errors["client_id"] = "Qualifio's clientId is a number, e.g. 2449."
            if not self.api_token:
                errors["api_token"] = "Qualifio needs the account's API token."  # noqa: S105
            if not str(self.default_dpo_id).isdigit():
                errors["default_dpo_id"] = "Qualifio needs a numeric DPO user id."
        elif self.vendor == Vendor.SALESFORCE:
            if not self.login_url:
                errors["login_url"] = "Salesforce needs the login URL or My Domain URL."
            if not self.policy_name:
                errors["policy_name"] = "Salesforce needs the name of an active portability policy."
            has_secret = bool(self.client_secret)
            has_jwt = bool(self.username and self.private_key)
            if has_secret == has_jwt:
                errors["client_secret"] = ONE_FLOW_ONLY
            try:
                if float(self.api_version or "0") < 50.0:
                    errors["api_version"] = "The Portability API needs API version 50.0 or later."
            except ValueError:
                errors["api_version"] = "Write the API version like 62.0."
        if errors:
            raise ValidationError(errors)


class VendorIdentity(models.Model):
    """A person's own id at a vendor: the Qualifio DPO id used when *they* approve a case."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="vendor_identities"
    )
    vendor = models.CharField(max_length=20, choices=Vendor.choices)
    external_id = models.CharField("id at the vendor", max_length=100)

    class Meta:
        verbose_name_plural = "vendor identities"
        constraints = [
            models.UniqueConstraint(fields=["user", "vendor"], name="one_identity_per_vendor")
        ]

    def __str__(self) -> str:
        return f"{self.get_vendor_display()} id {self.external_id}"
