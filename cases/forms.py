"""Forms for the steps a DPO confirms in the admin."""

from django import forms


class ConfirmForm(forms.Form):
    """Approve and Retry: nothing to type, but a deliberate second click (POST with CSRF)."""


class ReasonForm(forms.Form):
    """Reject and deadline extension: the reason is recorded and may be told to the subject."""

    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80}),
        max_length=1000,
        strip=True,
        help_text="Recorded in the case history.",
    )
