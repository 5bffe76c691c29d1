"""Real processes for end-to-end tests: sandbox vendors, a Celery worker (with beat) on Redis.

The worker is a separate process on the test database (PostgreSQL) and the test's Redis
broker; everything it needs comes from the same environment bin/test exports. Tests using
these fixtures need ``transactional_db`` so that the worker sees committed rows.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from django.db import connection

from cases import services
from cases.models import Case, VendorJob
from connectors.models import Vendor, VendorAccount
from dsar.celery import app as celery_app
from sandbox.server import SandboxConfig, SandboxHandle, start_sandbox

from ..support import wait_until

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxHandle]:
    handle = start_sandbox(
        SandboxConfig(
            qualifio_port=0, salesforce_port=0, state_dir=tmp_path / "sandbox", finish_after=1.0
        )
    )
    try:
        yield handle
    finally:
        handle.stop()


def database_url() -> str:
    db = connection.settings_dict
    user = db.get("USER") or "postgres"
    auth = f"{user}:{db['PASSWORD']}@" if db.get("PASSWORD") else f"{user}@"
    return f"postgres://{auth}{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


class Worker:
    """A ``celery worker -B`` subprocess; ``restart()`` after ``kill()`` resumes the work.

    ``module="tests.e2e.crashing_worker"`` runs the test-only entry point that SIGKILLs the
    worker at a chosen pipeline point; ``loglevel="DEBUG"`` logs everything the worker can.
    """

    def __init__(
        self, env: dict[str, str], log: Path, *, module: str = "celery", loglevel: str = "INFO"
    ) -> None:
        self.env, self.log = env, log
        self.module, self.loglevel = module, loglevel
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        start_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as handle:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", self.module, "-A", "dsar", "worker", "--beat",
                    "--loglevel", self.loglevel, "--concurrency", "2", "--without-gossip",
                    "--without-mingle", "--hostname", f"e2e-{self.module}-{os.getpid()}@%h",
                    "--schedule", str(self.log.parent / "beat-schedule"),
                ],
                cwd=ROOT, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

        def ready() -> bool:
            """the worker to be ready"""
            assert self.process is not None and self.process.poll() is None, self.tail()
            with self.log.open("rb") as fh:
                fh.seek(start_offset)
                return b"ready." in fh.read()

        wait_until(ready, timeout=60)

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool), as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.process:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # leftover pool children

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[Worker]:
    """A real worker on the test database and Redis, calling back to the live server."""
    process = Worker(worker_env, tmp_path / "worker.log")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def worker_env(live_server: Any) -> dict[str, str]:
    """A worker's environment: the test database, this run's queue, quick schedules."""
    if connection.vendor != "postgresql":
        pytest.skip("the end-to-end tests run on PostgreSQL")
    if not os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"):
        pytest.skip("the end-to-end tests need Redis as the broker (bin/test sets it)")
    celery_app.control.purge()  # no stale wake-ups from earlier tests
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "DSAR_PUBLIC_URL": live_server.url,
        "DSAR_ALLOW_PRIVATE_VENDOR_HOSTS": "true",
        "DSAR_SYNC_INTERVAL": "1",
        "DSAR_POLL_INTERVAL": "1",
        "DSAR_ERROR_BACKOFF": "1",
        "DSAR_JOB_LEASE_SECONDS": "6",
        "PYTHONUNBUFFERED": "1",
    }


# --- Scenario helpers -------------------------------------------------------------------------


def sandbox_accounts(sandbox) -> None:
    qualifio = sandbox.credentials["qualifio"]
    salesforce = sandbox.credentials["salesforce"]
    VendorAccount.objects.create(
        name="Qualifio sandbox",
        vendor=Vendor.QUALIFIO,
        base_url=sandbox.qualifio_url,
        client_id=str(qualifio["client_id"]),
        api_token=qualifio["api_token"],
        default_dpo_id=str(qualifio["dpo_id"]),
    )
    VendorAccount.objects.create(
        name="Salesforce sandbox",
        vendor=Vendor.SALESFORCE,
        base_url="",
        login_url=sandbox.salesforce_url,
        client_id=salesforce["consumer_key"],
        client_secret=salesforce["consumer_secret"],
        policy_name=salesforce["policy_name"],
        ca_file=str(sandbox.ca_file),
    )


def open_prepared_case(
    dpo: Any, *, email: str = "ada@example.com", explain: Callable[[], str] | None = None
) -> Case:
    """A new case for a subject both sandbox vendors hold, once every job awaits approval."""
    case = services.open_case(
        Case(email=email, first_name="Ada", last_name="Lovelace", received_on=date.today()),
        actor=dpo,
    )

    def prepared() -> bool:
        """discovery and the Qualifio rule, before approval"""
        steps = set(VendorJob.objects.filter(case=case).values_list("step", flat=True))
        return steps == {VendorJob.Step.AWAITING_APPROVAL}

    wait_until(prepared, timeout=30, explain=explain)
    return case
