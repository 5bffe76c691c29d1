"""The statutory deadline of a request: GDPR Art. 12(3), counted the way the UK ICO counts it.

The day of receipt is day one, so the response is due on the corresponding calendar date of the
next month (received 3 September → due 3 October). When that month has no such date, the last
day of the month (received 31 January → due 28 or 29 February). When that date is a weekend or
public holiday, the next working day. An extension (for complex or numerous requests) makes it
three months from the receipt date instead of one.
"""

from __future__ import annotations

import functools
from datetime import date, timedelta

import holidays
from dateutil.relativedelta import relativedelta
from django.conf import settings

STANDARD_MONTHS = 1
EXTENDED_MONTHS = 3


@functools.lru_cache(maxsize=8)
def _holiday_calendar(country: str, subdivision: str | None) -> holidays.HolidayBase:
    return holidays.country_holidays(country, subdiv=subdivision)


def is_working_day(
    day: date, *, country: str | None = None, subdivision: str | None = None
) -> bool:
    """Weekdays that are not public holidays; by default in the configured country."""
    if country is None:  # the configured calendar, subdivision included
        country, subdivision = settings.DSAR_HOLIDAY_COUNTRY, settings.DSAR_HOLIDAY_SUBDIVISION
    return day.weekday() < 5 and day not in _holiday_calendar(country, subdivision)


def due_date(
    received: date,
    *,
    extended: bool = False,
    country: str | None = None,
    subdivision: str | None = None,
) -> date:
    """The date by which the controller must respond to a request received on ``received``."""
    months = EXTENDED_MONTHS if extended else STANDARD_MONTHS
    # relativedelta clamps to the month's last day when the corresponding date does not exist.
    due = received + relativedelta(months=months)
    while not is_working_day(due, country=country, subdivision=subdivision):
        due += timedelta(days=1)
    return due
