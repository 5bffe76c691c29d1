"""Input validation for the fields a person types when recording a request."""

from django.core.exceptions import ValidationError

from connectors.salesforce_ids import is_valid_salesforce_id


def validate_salesforce_id(value: str) -> None:
    """A Salesforce record id: 15 or 18 letters and digits (18 with a matching checksum)."""
    if value and not is_valid_salesforce_id(value):
        raise ValidationError(
            "Enter a Salesforce record id: 15 or 18 letters and digits, as shown in the record's "
            "URL (for example 003D000000QEq3m or 003D000000QEq3mIAD).",
            code="invalid_salesforce_id",
        )
