"""A logging filter that masks e-mail addresses and bearer/API tokens in every log record."""

import logging
import re

EMAIL = re.compile(r"([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})")
SECRET = re.compile(
    r"(?i)(bearer\s+|x-api-token['\"]?\s*[:=]\s*['\"]?|access_token['\"]?\s*[:=]\s*['\"]?)[^\s'\",]+"
)


def mask(text: str) -> str:
    """``joao@qualifio.com`` → ``j***@qualifio.com``; tokens → ``***``."""
    text = EMAIL.sub(r"\1***@\2", text)
    return SECRET.sub(r"\1***", text)


class MaskingFormatter(logging.Formatter):
    """Masks the whole formatted record: message, traceback and stack alike.

    A filter only sees the message; the traceback a formatter appends (an exception's text
    may quote an address) would pass through unmasked.
    """

    def format(self, record: logging.LogRecord) -> str:
        return mask(super().format(record))


class MaskPersonalData(logging.Filter):
    """Rewrites the formatted message so no handler ever sees an address or a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record must still be logged
            return True
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
