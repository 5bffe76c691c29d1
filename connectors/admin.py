"""Vendor accounts in the admin. Secrets are write-only: typed in, never shown back."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.db import models
from django.http import HttpRequest

from .models import VendorAccount, VendorIdentity


def _https_by_default(field: models.Field, **kwargs: Any) -> forms.Field | None:
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class VendorAccountForm(forms.ModelForm):
    """Empty secret fields keep the stored value; the stored value is never rendered."""

    api_token = forms.CharField(
        label="API token", required=False, widget=forms.PasswordInput(render_value=False)
    )
    client_secret = forms.CharField(
        label="Consumer secret", required=False, widget=forms.PasswordInput(render_value=False)
    )
    private_key = forms.CharField(
        label="JWT private key (PEM)",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "autocomplete": "off"}),
    )

    class Meta:
        model = VendorAccount
        formfield_callback = _https_by_default
        fields = (
            "name",
            "vendor",
            "is_active",
            "client_id",
            "base_url",
            "api_token",
            "default_dpo_id",
            "login_url",
            "client_secret",
            "username",
            "private_key",
            "policy_name",
            "api_version",
            "ca_file",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in VendorAccount.SECRET_FIELDS:
            self.initial[name] = ""
            stored = bool(self.instance.pk and getattr(self.instance, name))
            self.fields[name].help_text = (
                "A value is stored. Leave empty to keep it, or type a new one to replace it."
                if stored
                else "Not set."
            )

    def _post_clean(self) -> None:
        # Keep stored secrets where nothing new was typed, before the model's own validation.
        if self.instance.pk:
            stored = VendorAccount.objects.get(pk=self.instance.pk)
            for name in VendorAccount.SECRET_FIELDS:
                if not self.cleaned_data.get(name):
                    self.cleaned_data[name] = getattr(stored, name)
        super()._post_clean()


@admin.register(VendorAccount)
class VendorAccountAdmin(admin.ModelAdmin):
    form = VendorAccountForm
    # The admin builds its own form fields (the form's Meta callback covers the class itself).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}
    list_display = ("name", "vendor", "is_active", "api_url", "api_usage", "updated_at")
    list_filter = ("vendor", "is_active")
    readonly_fields = ("api_usage", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("name", "vendor", "is_active", "client_id")}),
        ("Qualifio", {"fields": ("base_url", "api_token", "default_dpo_id")}),
        (
            "Salesforce",
            {
                "fields": (
                    "login_url",
                    "client_secret",
                    "username",
                    "private_key",
                    "policy_name",
                    "api_version",
                )
            },
        ),
        ("Connection", {"fields": ("ca_file", "api_usage", "created_at", "updated_at")}),
    )

    @admin.display(description="API URL")
    def api_url(self, account: VendorAccount) -> str:
        return account.api_url

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        """Those who may only view an account see whether each secret is set, never its value."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fieldsets
        return [
            (name, {**options, "fields": [_masked(f) for f in options["fields"]]})
            for name, options in fieldsets
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is not None and not self.has_change_permission(request, obj):
            readonly += [_masked(name) for name in VendorAccount.SECRET_FIELDS]
        return readonly

    @admin.display(description="API token")
    def api_token_state(self, account: VendorAccount) -> str:
        return _set_or_not(account.api_token)

    @admin.display(description="consumer secret")
    def client_secret_state(self, account: VendorAccount) -> str:
        return _set_or_not(account.client_secret)

    @admin.display(description="JWT private key")
    def private_key_state(self, account: VendorAccount) -> str:
        return _set_or_not(account.private_key)


def _masked(field: str) -> str:
    return f"{field}_state" if field in VendorAccount.SECRET_FIELDS else field


def _set_or_not(value: str | None) -> str:
    return "set (hidden)" if value else "not set"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Jobs keep a reference to their account: deactivate it instead.
        return False


class VendorIdentityInline(admin.TabularInline):
    model = VendorIdentity
    extra = 0
    verbose_name = "id at a vendor"
    verbose_name_plural = "ids at vendors (e.g. your Qualifio DPO id, used when you approve)"


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class DSARUserAdmin(UserAdmin):
    inlines = [*UserAdmin.inlines, VendorIdentityInline]
