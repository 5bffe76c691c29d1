"""Crash safety: SIGKILL the real worker at each pipeline step, restart it, check the vendors.

Each test starts ``tests/e2e/crashing_worker.py`` (a Celery worker with beat whose one vendor call
or pipeline function is wrapped to ``SIGKILL`` the whole process group right after it returns),
drives a case until the worker dies at that point, then starts a plain worker on the same
database and Redis. The dead worker's lease expires (6 s here), the beat-driven sync resumes the
job, and the case must finish with every vendor call that cannot be repeated made once; where the
README documents an unavoidable window (killed between the vendor's answer and our checkpoint),
exactly what it describes happens and nothing more.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.utils.text import get_valid_filename

from cases import services
from cases.models import Archive, Case, CaseEvent, VendorJob

from .conftest import Worker, sandbox_accounts, wait_until
from .crashing_worker import CRASH_POINTS, MID_DOWNLOAD_BYTES

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]
S = Case.State
Step = VendorJob.Step
BOTH = ("qualifio", "salesforce")


@dataclass
class Crashed:
    """A case whose worker was SIGKILLed at ``point``; ``details`` is what the worker recorded."""

    point: str
    details: dict[str, Any]
    case: Case
    crashing: Worker
    env: dict[str, str]
    log: Path
    workers: list[Worker]
    restarted_at: float = 0.0

    def restart(self) -> Worker:
        """A plain worker (no crash patch) on the same database, broker and log."""
        worker = Worker(self.env, self.log)
        self.workers.append(worker)
        worker.start()
        self.restarted_at = time.monotonic()
        return worker

    def job(self, vendor: str) -> VendorJob:
        return VendorJob.objects.select_related("account").get(
            case=self.case, account__vendor=vendor
        )

    def wait_for_steps(self, *steps: str, timeout: float = 40) -> None:
        def reached() -> bool:
            """the jobs to reach their steps"""
            state = Case.objects.get(pk=self.case.pk).state
            assert state != S.FAILED, self.tail()
            found = sorted(VendorJob.objects.filter(case=self.case).values_list("step", flat=True))
            return found == sorted(steps)

        wait_until(reached, timeout=timeout)

    def wait_finished(self, timeout: float = 60) -> None:
        def finished() -> bool:
            """the case to finish"""
            case = Case.objects.get(pk=self.case.pk)
            assert case.state != S.FAILED, f"{case.failure_reason}\n{self.tail()}"
            return case.state == S.FINISHED

        wait_until(finished, timeout=timeout)
        took = time.monotonic() - self.restarted_at
        print(f"{self.point}: finished {took:.1f} s after restart")
        if took > 15:  # slower than a lease and a few polls: show why
            for event in CaseEvent.objects.filter(case=self.case).order_by("id"):
                print(f"  {event.at:%H:%M:%S.%f} {event.kind} {event.message}")

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-80:])


@pytest.fixture
def crash(
    sandbox: Any, worker_env: dict[str, str], tmp_path: Path, dpo: Any
) -> Iterator[Callable[..., Crashed]]:
    """``crash(point, vendors=…, approve_first=…)``: run a case until the worker dies at point."""
    workers: list[Worker] = []

    def run(point: str, *, vendors: tuple[str, ...] = BOTH, approve_first: bool) -> Crashed:
        assert point in CRASH_POINTS
        sandbox_accounts(sandbox)
        email = f"crash-{point.replace('_', '-')}@example.com"
        sandbox.add_subject(email, "Crash", point.replace("_", " ").title(), vendors=vendors)
        marker = tmp_path / "crash.json"
        log = tmp_path / "worker.log"
        crashing = Worker(
            {**worker_env, "DSAR_CRASH_AT": point, "DSAR_CRASH_MARKER": str(marker)},
            log,
            module="tests.e2e.crashing_worker",
        )
        workers.append(crashing)
        crashing.start()
        case = services.open_case(
            Case(email=email, first_name="Crash", last_name="Test", received_on=date.today()),
            actor=dpo,
        )
        crashed = Crashed(point, {}, case, crashing, worker_env, log, workers)
        if approve_first:
            waiting = [Step.AWAITING_APPROVAL if v in vendors else Step.NO_DATA for v in BOTH]
            crashed.wait_for_steps(*waiting)
            services.approve_case(case, actor=dpo)

        def died() -> bool:
            """the worker to SIGKILL itself at the crash point"""
            assert Case.objects.get(pk=case.pk).state != S.FINISHED, "finished without crashing"
            return marker.exists() and crashing.process is not None and crashing.process.poll()

        began = time.monotonic()
        wait_until(died, timeout=40)
        print(f"{point}: worker killed {time.monotonic() - began:.1f} s after waiting began")
        assert crashing.process is not None and crashing.process.returncode == -9
        crashed.details = json.loads(marker.read_text())
        assert crashed.details["point"] == point
        return crashed

    try:
        yield run
    finally:
        for worker in workers:
            worker.stop()


# --- Assertions -------------------------------------------------------------------------------


def count(sandbox: Any, method: str, suffix: str, *, contains: str = "") -> int:
    return sum(
        1
        for c in sandbox.calls()
        if c.method == method and c.path.endswith(suffix) and contains in c.path
    )


def assert_archives_intact(case: Case, *, vendors: tuple[str, ...]) -> None:
    """One complete, checksummed archive per vendor holding data; no partial or orphan file."""
    jobs = list(VendorJob.objects.filter(case=case).select_related("account"))
    prefixes = tuple(f"job-{job.pk}-" for job in jobs)
    incoming = Path(settings.ARCHIVE_ROOT) / "incoming"
    leftovers = [p.name for p in incoming.glob("*.part") if p.name.startswith(prefixes)]
    assert not leftovers, f"partial archive files kept: {leftovers}"

    archives = list(Archive.objects.filter(job__case=case).select_related("job__account"))
    assert sorted(a.job.account.vendor for a in archives) == sorted(vendors)
    for archive in archives:
        digest, size = hashlib.sha256(), 0
        with archive.file.open("rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
        assert (size, digest.hexdigest()) == (archive.size, archive.sha256), archive.filename

    # Every file this case's jobs put in storage is one an Archive row points at.
    folder = f"archives/{get_valid_filename(case.reference)}"
    names = default_storage.listdir(folder)[1] if default_storage.exists(folder) else []
    ours = {
        f"{folder}/{name}" for name in names if name.startswith(tuple(f"{job.pk}-" for job in jobs))
    }
    assert ours == {a.file.name for a in archives}, "a stored file has no Archive row"


def assert_once_each(sandbox: Any) -> None:
    """No duplicate export rule, no second validate, no second Salesforce execution."""
    assert count(sandbox, "POST", "/rules/exportData") == 1
    assert count(sandbox, "PUT", "/validate") == 1
    assert count(sandbox, "POST", "/rtp/execute") == 1


# --- Before approval --------------------------------------------------------------------------


def test_killed_after_discovery_repeats_only_the_read(crash, sandbox, dpo) -> None:
    """Killed once Qualifio's profile search answered, before the job's next step was saved."""
    run = crash("after_discover", approve_first=False)
    assert run.details["matches"], "the crash came after a successful search"
    assert run.job("qualifio").step == Step.DISCOVER  # the answer was lost with the worker
    assert count(sandbox, "POST", "/rules/exportData") == 0

    run.restart()
    run.wait_for_steps(Step.AWAITING_APPROVAL, Step.AWAITING_APPROVAL)
    services.approve_case(run.case, actor=dpo)
    run.wait_finished()

    assert count(sandbox, "GET", "/v1/gdpr/profiles") == 2  # the read-only search, repeated
    assert_once_each(sandbox)
    assert_archives_intact(run.case, vendors=BOTH)


def test_killed_between_rule_creation_and_checkpoint_leaves_one_new_rule(
    crash, sandbox, dpo
) -> None:
    """The README's documented window: Qualifio created the rule, we never recorded its id.

    On resume a second rule is created; the first stays NEW forever and is never validated
    (so Qualifio exports nothing for it). Exactly one extra rule, nothing else repeated.
    """
    run = crash("after_rule_created", approve_first=False)
    orphan = run.details["rule_id"]
    assert orphan
    assert not run.job("qualifio").state.get("rule_id")  # never checkpointed

    run.restart()
    run.wait_for_steps(Step.AWAITING_APPROVAL, Step.AWAITING_APPROVAL)
    services.approve_case(run.case, actor=dpo)
    run.wait_finished()

    rule_id = run.job("qualifio").state["rule_id"]
    assert rule_id != orphan
    assert run.job("qualifio").external_ref == rule_id
    assert count(sandbox, "POST", "/rules/exportData") == 2  # the one documented extra rule
    assert count(sandbox, "PUT", "/validate") == 1
    assert count(sandbox, "PUT", "/validate", contains=rule_id) == 1
    assert not [c for c in sandbox.calls() if orphan in c.path]  # never validated nor read
    assert sandbox.sandbox.qualifio.get(orphan)["ruleStatus"]["status"] == "NEW"
    assert count(sandbox, "POST", "/rtp/execute") == 1
    assert_archives_intact(run.case, vendors=BOTH)


def test_killed_after_the_rule_checkpoint_creates_no_second_rule(crash, sandbox, dpo) -> None:
    """Killed after the rule id was checkpointed, before the job left the prepare step."""
    run = crash("after_rule_checkpoint", approve_first=False)
    rule_id = run.details["state"]["rule_id"]
    qualifio = run.job("qualifio")
    assert (qualifio.step, qualifio.state.get("rule_id")) == (Step.PREPARE, rule_id)

    run.restart()
    run.wait_for_steps(Step.AWAITING_APPROVAL, Step.AWAITING_APPROVAL)
    services.approve_case(run.case, actor=dpo)
    run.wait_finished()

    assert run.job("qualifio").state["rule_id"] == rule_id
    assert count(sandbox, "PUT", "/validate", contains=rule_id) == 1
    assert_once_each(sandbox)
    assert_archives_intact(run.case, vendors=BOTH)


# --- After approval ---------------------------------------------------------------------------
# Only the vendor under test holds data here (the other job ends "no data held" before approval),
# so no other vendor call is in flight when the worker dies: the counts below are exact.


def test_killed_after_validate_answered_never_validates_twice(crash, sandbox) -> None:
    """Qualifio approved the rule; only the ``validate_sent`` marker had been checkpointed."""
    run = crash("after_validate_sent", vendors=("qualifio",), approve_first=True)
    state = run.job("qualifio").state
    assert state.get("validate_sent") is True
    assert not state.get("validated")

    run.restart()
    run.wait_finished()

    assert count(sandbox, "PUT", "/validate") == 1
    assert count(sandbox, "POST", "/rules/exportData") == 1
    assert CaseEvent.objects.filter(
        case=run.case, message__contains="validate not repeated"
    ).exists()
    assert_archives_intact(run.case, vendors=("qualifio",))


def test_killed_after_the_validate_checkpoint_never_validates_twice(crash, sandbox) -> None:
    """Killed after ``validated`` was checkpointed, before the job left the start step."""
    run = crash("after_validate", vendors=("qualifio",), approve_first=True)
    qualifio = run.job("qualifio")
    assert (qualifio.step, qualifio.state.get("validated")) == (Step.START, True)

    run.restart()
    run.wait_finished()

    assert count(sandbox, "PUT", "/validate") == 1
    assert count(sandbox, "POST", "/rules/exportData") == 1
    assert_archives_intact(run.case, vendors=("qualifio",))


def test_killed_between_execute_and_checkpoint_executes_once_more(crash, sandbox) -> None:
    """The README's documented window for Salesforce: execute answered, id not checkpointed.

    On resume Salesforce executes again (a second policy file, never downloaded); the job keeps
    and downloads only the execution it recorded, and the history shows one execution.
    """
    run = crash("after_execute_sent", vendors=("salesforce",), approve_first=True)
    orphan = run.details["policy_file_id"]
    assert orphan
    assert not run.job("salesforce").state.get("executions")

    run.restart()
    run.wait_finished()

    executions = run.job("salesforce").state["executions"]
    recorded = [e["policy_file_id"] for e in executions.values()]
    assert len(recorded) == 1 and orphan not in recorded
    assert count(sandbox, "POST", "/rtp/execute") == 2  # the one documented extra execution
    assert count(sandbox, "GET", "/servlet/policyFileDownload") == 1
    assert list(Archive.objects.filter(job__case=run.case).values_list("key", flat=True)) == [
        recorded[0]
    ]
    assert (
        CaseEvent.objects.filter(case=run.case, message__contains="portability request").count()
        == 1
    )
    assert_archives_intact(run.case, vendors=("salesforce",))


def test_killed_after_the_execute_checkpoint_never_executes_twice(crash, sandbox) -> None:
    """Killed after the execution was checkpointed, before the job left the start step."""
    run = crash("after_execute", vendors=("salesforce",), approve_first=True)
    salesforce = run.job("salesforce")
    assert salesforce.step == Step.START
    recorded = [e["policy_file_id"] for e in salesforce.state["executions"].values()]

    run.restart()
    run.wait_finished()

    assert [
        e["policy_file_id"] for e in run.job("salesforce").state["executions"].values()
    ] == recorded
    assert count(sandbox, "POST", "/rtp/execute") == 1
    assert_archives_intact(run.case, vendors=("salesforce",))


# --- Downloads --------------------------------------------------------------------------------


def test_killed_mid_download_keeps_no_partial_archive(crash, sandbox) -> None:
    """Killed with part of a 24 MiB archive in ``incoming/*.part``: re-downloaded whole."""
    sandbox.configure(archive_padding_bytes=24 * 1024 * 1024)
    run = crash("mid_download", approve_first=True)
    part = Path(run.details["file"])
    assert part.name.endswith(".part") and part.parent == Path(settings.ARCHIVE_ROOT) / "incoming"
    assert MID_DOWNLOAD_BYTES <= part.stat().st_size < 24 * 1024 * 1024  # a partial file
    assert not Archive.objects.filter(job=run.job("qualifio")).exists()

    run.restart()
    run.wait_finished()

    assert not part.exists()
    archive = Archive.objects.get(job=run.job("qualifio"))
    assert archive.size > 24 * 1024 * 1024
    assert count(sandbox, "GET", "/archive/" + archive.key) == 2  # location asked twice
    assert_once_each(sandbox)
    assert_archives_intact(run.case, vendors=BOTH)


def test_killed_after_the_archive_was_moved_keeps_one_file(crash, sandbox) -> None:
    """Killed after the file reached storage, before its Archive row: stored once, recorded."""
    run = crash("after_archive_moved", vendors=("qualifio",), approve_first=True)
    moved = Path(run.details["file"])
    assert moved.exists()
    assert not Archive.objects.filter(job__case=run.case).exists()

    run.restart()
    run.wait_finished()

    archive = Archive.objects.get(job__case=run.case)
    assert Path(archive.file.path) == moved  # the same name, written again, not a sibling
    assert count(sandbox, "PUT", "/validate") == 1
    assert count(sandbox, "POST", "/rules/exportData") == 1
    assert_archives_intact(run.case, vendors=("qualifio",))
