"""Years of history in minutes: cases, events and vendor jobs generated inside PostgreSQL.

``INSERT … SELECT generate_series`` builds every row on the server, so a million cases cost
no Python loop and no network round trip. Foreign-key triggers are switched off for the bulk
load (``session_replication_role = replica``): the rows are consistent by construction, and
checking five million event rows one by one would triple the load time. Other constraints
(unique references, lower-case e-mails) still apply.

    .venv/bin/python -m bench.generate --rows 1000000
"""

from __future__ import annotations

import argparse
import time

from bench.common import setup_django

#: How the open (in-flight) cases are spread over states, and the step of their jobs.
OPEN_MIX = {
    "mixed": "(ARRAY['new','new','approved','exporting','exporting','exporting','failed'])"
    "[1 + (g.i %% 7)]",
    "running": "'exporting'",
}

CASES_SQL = """
INSERT INTO cases_case (
    reference, request_type, email, first_name, last_name, salesforce_id, justification,
    received_on, due_on, extended, extension_reason, state, rejection_reason, failure_reason,
    approved_at, closed_at, created_at, updated_at, approved_by_id, created_by_id)
SELECT
    'DSAR-' || extract(year FROM d.received_on)::int || '-' ||
        lpad((row_number() OVER (PARTITION BY extract(year FROM d.received_on)
                                 ORDER BY d.i))::text, 6, '0'),
    CASE WHEN d.i %% 5 = 0 THEN 'portability' ELSE 'access' END,
    'subject' || d.i || '@example.org',
    (ARRAY['Ada','Grace','Alan','Edsger','Barbara','Donald','Frances','Ken'])[1 + d.i %% 8],
    (ARRAY['Lovelace','Hopper','Turing','Dijkstra','Liskov','Knuth','Allen','Thompson'])
        [1 + (d.i / 8) %% 8] || d.i,
    '',
    CASE WHEN d.i %% 5 = 0 THEN 'Data portability request under GDPR Art. 20.'
         ELSE 'Data subject access request under GDPR Art. 15.' END,
    d.received_on,
    d.received_on + 30,
    false, '', d.state,
    CASE WHEN d.state = 'rejected' THEN 'Identity could not be verified.' ELSE '' END,
    CASE WHEN d.state = 'failed' THEN 'Qualifio: the vendor reported the export failed.'
         ELSE '' END,
    CASE WHEN d.state IN ('new', 'rejected') THEN NULL
         ELSE d.received_on + time '10:00' END,
    CASE WHEN d.state IN ('finished', 'rejected')
         THEN d.received_on + (1 + d.i %% 20) * interval '1 day' + time '15:00' END,
    d.received_on + time '09:00',
    d.received_on + time '09:00',
    NULL, NULL
FROM (
    SELECT g.i,
           (current_date - %(span_days)s + ((g.i - 1) * %(span_days)s / %(total)s))::date
               AS received_on,
           CASE WHEN g.i > %(closed)s THEN {open_state}
                WHEN g.i %% 10 = 0 THEN 'rejected'
                ELSE 'finished' END AS state
    FROM generate_series(%(first)s, %(total)s) AS g(i)
) AS d
ORDER BY d.i
"""

EVENTS_SQL = """
INSERT INTO cases_caseevent (at, actor_label, kind, from_state, to_state, message, actor_id,
                             case_id)
SELECT c.created_at + k * interval '1 hour',
       CASE WHEN k = 1 THEN 'command' ELSE 'pipeline' END,
       (ARRAY['created','vendor','transition','archive_stored','transition'])[k],
       CASE WHEN k = 3 THEN 'new' WHEN k = 5 THEN 'exporting' ELSE '' END,
       CASE WHEN k = 1 THEN 'new' WHEN k = 3 THEN 'approved'
            WHEN k = 5 THEN c.state ELSE '' END,
       (ARRAY['Request recorded (Access (Art. 15)).',
              'Qualifio: found 1 record(s) for the subject.',
              'Approved.',
              'Qualifio: stored qualifio-rule.zip (4096 bytes).',
              'Finished.'])[k],
       NULL, c.id
FROM cases_case c CROSS JOIN generate_series(1, %(events)s) AS k
WHERE c.id > %(after)s
ORDER BY c.id, k
"""

JOBS_SQL = """
INSERT INTO cases_vendorjob (
    step, matches, state, external_ref, vendor_status, last_error, error_count, poll_count,
    next_attempt_at, lease_until, callback_id, archive_refs, resume_step, started_at,
    settled_at, created_at, updated_at, account_id, case_id)
SELECT s.step, '[]', '{{}}', s.ext, '', '', 0, s.polls,
       CASE WHEN s.step IN ('discover','prepare','start','running','download')
            THEN {due} END,
       NULL, gen_random_uuid(), '[]', '', s.started, s.settled, s.created_at, s.created_at,
       s.account_id, s.case_id
FROM (
    SELECT c.id AS case_id, a.account_id, c.created_at,
           CASE c.state
               WHEN 'finished' THEN CASE WHEN a.n = 2 AND c.id %% 7 = 0 THEN 'no_data'
                                         ELSE 'done' END
               WHEN 'rejected' THEN 'awaiting_approval'
               WHEN 'new' THEN 'awaiting_approval'
               WHEN 'approved' THEN 'start'
               WHEN 'exporting' THEN 'running'
               ELSE 'failed' END AS step,
           CASE WHEN a.n = 1 THEN md5(c.id::text || 'rule')::varchar(24) ELSE '' END AS ext,
           CASE WHEN c.state IN ('finished','exporting') THEN 3 ELSE 0 END AS polls,
           CASE WHEN c.state IN ('finished','exporting','failed')
                THEN c.approved_at END AS started,
           CASE WHEN c.state = 'finished' THEN c.closed_at END AS settled
    FROM cases_case c
    JOIN (SELECT %(account1)s::bigint AS account_id, 1 AS n
          UNION ALL SELECT %(account2)s::bigint, 2) AS a
      ON a.n = 1 OR c.id %% 2 = 0
    WHERE c.id > %(after)s
) AS s
ORDER BY s.case_id, s.account_id
"""


def vendor_accounts() -> tuple[int, int]:
    """Two accounts, as a real deployment has (every case fans out to both)."""
    from connectors.models import Vendor, VendorAccount

    qualifio, _ = VendorAccount.objects.get_or_create(
        name="Qualifio bench",
        defaults={
            "vendor": Vendor.QUALIFIO,
            "base_url": "http://127.0.0.1:9",
            "client_id": "2449",
            "api_token": "bench-token",
            "default_dpo_id": "4242",
            "is_active": False,
        },
    )
    salesforce, _ = VendorAccount.objects.get_or_create(
        name="Salesforce bench",
        defaults={
            "vendor": Vendor.SALESFORCE,
            "login_url": "https://127.0.0.1:9",
            "client_id": "bench-key",
            "client_secret": "bench-secret",
            "policy_name": "DSAR_Portability",
            "is_active": False,
        },
    )
    return qualifio.pk, salesforce.pk


def wipe() -> None:
    """Empty the case tables (bench database only) so sizes are exactly what is asked."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "TRUNCATE cases_archive, cases_vendorjob, cases_caseevent, cases_case, "
            "cases_referencecounter RESTART IDENTITY CASCADE"
        )


def populate(
    rows: int,
    *,
    open_cases: int = 3000,
    events: int = 5,
    mix: str = "mixed",
    due: str = "now() + (s.case_id %% 3600) * interval '1 second'",
    fresh: bool = True,
    quiet: bool = False,
) -> dict[str, float]:
    """Insert ``rows`` cases (the newest ``open_cases`` still open), their events and jobs.

    Returns the seconds each phase took. With ``fresh`` the case tables are emptied first;
    without, the new cases are appended after the existing ones (references continue per
    year only if the table was empty, so appending is meant for a table generated by this).
    """
    from django.db import connection, transaction

    account1, account2 = vendor_accounts()
    if fresh:
        wipe()
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(id), 0) FROM cases_case")
        after = cursor.fetchone()[0]
    params = {
        "first": after + 1,
        "total": after + rows,
        "closed": after + rows - open_cases,
        "span_days": 4 * 365,
        "events": events,
        "after": after,
        "account1": account1,
        "account2": account2,
    }
    timings: dict[str, float] = {}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL session_replication_role = replica")
        cursor.execute("SET LOCAL synchronous_commit = off")
        cursor.execute("SET LOCAL maintenance_work_mem = '256MB'")
        cursor.execute("SET LOCAL work_mem = '128MB'")
        for name, sql in (
            ("cases", CASES_SQL.format(open_state=OPEN_MIX[mix])),
            ("events", EVENTS_SQL),
            ("jobs", JOBS_SQL.format(due=due)),
        ):
            start = time.perf_counter()
            cursor.execute(sql, params)
            timings[name] = time.perf_counter() - start
            if not quiet:
                print(f"  {name}: {cursor.rowcount:,} rows in {timings[name]:.1f} s", flush=True)
        # Keep the reference counter consistent with what was generated.
        cursor.execute(
            "INSERT INTO cases_referencecounter (year, last) "
            "SELECT split_part(reference, '-', 2)::int, max(split_part(reference, '-', 3)::int) "
            "FROM cases_case GROUP BY 1 "
            "ON CONFLICT (year) DO UPDATE SET last = excluded.last"
        )
    start = time.perf_counter()
    with connection.cursor() as cursor:
        # A table with years behind it has been vacuumed and analysed by autovacuum.
        for table in ("cases_case", "cases_caseevent", "cases_vendorjob"):
            cursor.execute(f"VACUUM (ANALYZE) {table}")
    timings["vacuum_analyze"] = time.perf_counter() - start
    if not quiet:
        print(f"  vacuum/analyze: {timings['vacuum_analyze']:.1f} s", flush=True)
    return timings


def counts() -> dict[str, int]:
    from cases.models import Case, CaseEvent, VendorJob

    return {
        "cases": Case.objects.count(),
        "events": CaseEvent.objects.count(),
        "jobs": VendorJob.objects.count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--open", type=int, default=3000, help="open cases among them")
    parser.add_argument("--events", type=int, default=5, help="events per case")
    args = parser.parse_args()
    setup_django()
    start = time.perf_counter()
    populate(args.rows, open_cases=args.open, events=args.events)
    print(f"generated {counts()} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
