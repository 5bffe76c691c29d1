"""GDPR Art. 12(3) as the UK ICO counts it, on a table of dates (England's bank holidays)."""

from datetime import date

import pytest

from cases.deadlines import due_date

# (received, extended, due, why)
CASES = [
    (date(2026, 9, 3), False, date(2026, 10, 5), "3 Oct 2026 is a Saturday → Monday 5 Oct"),
    (date(2026, 9, 1), False, date(2026, 10, 1), "plain corresponding date, a Thursday"),
    (date(2026, 1, 31), False, date(2026, 3, 2), "no 31 Feb → 28 Feb (Sat) → Mon 2 Mar"),
    (date(2027, 1, 29), False, date(2027, 3, 1), "no 29 Feb 2027 → 28 Feb (Sun) → Mon 1 Mar"),
    (date(2028, 1, 31), False, date(2028, 2, 29), "leap year: 29 Feb 2028, a Tuesday"),
    (date(2028, 1, 29), False, date(2028, 2, 29), "leap year: 29 Feb exists"),
    (date(2028, 2, 29), False, date(2028, 3, 29), "received on 29 Feb → 29 Mar (Wed)"),
    (date(2026, 3, 31), False, date(2026, 4, 30), "no 31 Apr → 30 Apr (Thu)"),
    (date(2026, 5, 31), False, date(2026, 6, 30), "no 31 Jun → 30 Jun (Tue)"),
    (date(2026, 8, 31), False, date(2026, 9, 30), "no 31 Sep → 30 Sep (Wed)"),
    (date(2026, 10, 31), False, date(2026, 11, 30), "no 31 Nov → 30 Nov (Mon)"),
    (date(2026, 11, 25), False, date(2026, 12, 29), "25 Dec Fri, 28 Dec boxing day substitute"),
    (date(2026, 11, 26), False, date(2026, 12, 29), "26 Dec Sat → 28 (holiday) → Tue 29"),
    (date(2026, 12, 1), False, date(2027, 1, 4), "1 Jan 2027 is New Year's Day → Mon 4 Jan"),
    (date(2026, 4, 6), False, date(2026, 5, 6), "6 May 2026, a Wednesday"),
    (date(2026, 4, 4), False, date(2026, 5, 5), "4 May 2026 is the early May bank holiday"),
    (date(2026, 4, 25), False, date(2026, 5, 26), "25 May 2026 is the spring bank holiday"),
    (date(2026, 7, 31), False, date(2026, 9, 1), "31 Aug 2026 is the summer bank holiday"),
    (date(2026, 3, 3), False, date(2026, 4, 7), "3 Apr Good Friday, 6 Apr Easter Monday"),
    (date(2026, 2, 14), False, date(2026, 3, 16), "14 Mar 2026 is a Saturday → Mon 16"),
    (date(2026, 9, 1), True, date(2026, 12, 1), "extension: three months, a Tuesday"),
    (date(2026, 11, 30), True, date(2027, 3, 1), "extension, no 30 Feb → 28 Feb (Sun) → 1 Mar"),
    (date(2026, 9, 26), True, date(2026, 12, 29), "extension onto Boxing Day substitute"),
    (date(2027, 12, 31), False, date(2028, 1, 31), "year boundary, 31 Jan 2028 a Monday"),
]


@pytest.mark.parametrize(("received", "extended", "due", "why"), CASES, ids=[c[3] for c in CASES])
def test_due_date(received: date, extended: bool, due: date, why: str) -> None:
    assert due_date(received, extended=extended, country="GB", subdivision="ENG") == due


def test_holiday_country_is_configurable() -> None:
    # 17 Mar 2026 (a Tuesday) is St Patrick's Day in Northern Ireland only.
    assert due_date(date(2026, 2, 17), country="GB", subdivision="ENG") == date(2026, 3, 17)
    assert due_date(date(2026, 2, 17), country="GB", subdivision="NIR") == date(2026, 3, 18)
    # 21 Jul 2026 is Belgium's national day.
    assert due_date(date(2026, 6, 21), country="BE") == date(2026, 7, 22)
