"""End to end: a real Celery worker on Redis, sandbox vendors over HTTP, the live app."""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest
from django.conf import settings
from django.utils import timezone

from cases import callbacks, services
from cases.models import Archive, Case, CaseEvent, VendorJob

from .conftest import open_prepared_case, sandbox_accounts, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]
S = Case.State


def test_case_travels_the_whole_pipeline_with_a_real_worker(sandbox, worker, dpo) -> None:
    sandbox_accounts(sandbox)
    case = open_prepared_case(dpo, explain=worker.tail)
    jobs = {
        j.account.vendor: j for j in VendorJob.objects.filter(case=case).select_related("account")
    }
    assert jobs["qualifio"].matches[0]["email"] == "ada@example.com"
    assert jobs["qualifio"].external_ref  # the rule id
    assert jobs["salesforce"].matches[0]["detail"] == "Contact"
    assert not [c for c in sandbox.calls() if "validate" in c.path or "rtp/execute" in c.path]

    approved_at = timezone.now()
    services.approve_case(case, actor=dpo)

    def finished() -> bool:
        """the case to finish"""
        state = Case.objects.get(pk=case.pk).state
        assert state not in (S.FAILED,), worker.tail()
        return state == S.FINISHED

    wait_until(finished, timeout=60, explain=worker.tail)
    took = (timezone.now() - approved_at).total_seconds()

    calls = sandbox.calls()
    assert sum(1 for c in calls if c.method == "PUT" and c.path.endswith("/validate")) == 1
    assert sum(1 for c in calls if c.method == "POST" and c.path.endswith("/rtp/execute")) == 1
    assert any(c.vendor == "qualifio-callback" for c in calls), calls
    assert CaseEvent.objects.filter(case=case, message__contains="callback received").exists()

    archives = list(Archive.objects.filter(job__case=case).select_related("job__account"))
    assert {a.job.account.vendor for a in archives} == {"qualifio", "salesforce"}
    for archive in archives:
        with archive.file.open("rb") as fh:
            data = fh.read()
        assert len(data) == archive.size
        assert hashlib.sha256(data).hexdigest() == archive.sha256
        with zipfile.ZipFile(io.BytesIO(data)) as bundle:
            assert b"ada@example.com" in b"".join(bundle.read(n) for n in bundle.namelist())
    assert not list((settings.ARCHIVE_ROOT / "incoming").glob("*.part"))
    print(f"approve → finished with a real worker: {took:.2f} s")
    assert took < 30, f"approve → finished took {took:.1f}s"
    assert callbacks.url_for(VendorJob.objects.get(case=case, account__vendor="qualifio"))
