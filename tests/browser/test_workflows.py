"""The DPO's and support staff's workflows, in a real browser, against the real application.

``bin/run`` serves the admin with a Celery worker and beat on Redis and PostgreSQL and the
sandbox vendors (see conftest.py). Support records a request and cannot approve or download;
the DPO finds it, approves it, watches it finish and downloads an archive whose SHA-256 is the
one shown; the DPO rejects a request with a reason and retries an export the sandbox failed.
Screenshots of the case list and of the finished case are kept in ``test-artifacts/``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from .conftest import ARTIFACTS, CHROMIUM

pytestmark = [
    pytest.mark.browser,
    pytest.mark.e2e,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"Debian's Chromium is not installed at {CHROMIUM} (apt-get install chromium)",
    ),
]

OpenPage = Callable[[str], Page]
CASE_URL = re.compile(r"/admin/cases/case/(\d+)/change/(?:\?.*)?$")
ACTIONS = (".dsar-action-approve", ".dsar-action-reject", ".dsar-action-retry")


# --- How a person gets around -----------------------------------------------------------------


def search_and_open(page: Page, email: str) -> str:
    """Search the case list for ``email``, expect one case, open it; returns its reference.

    Every step that navigates waits for the next page to load (``wait_for_url``) before the
    next interaction, as a person does; nothing is clicked on a half-loaded page.
    """
    page.goto("/admin/cases/case/")
    page.fill("#searchbar", email)
    page.press("#searchbar", "Enter")
    page.wait_for_url(re.compile(r"[?&]q="))  # the results page, loaded
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(email)
    link = rows.locator("th a")
    reference = link.inner_text().strip()
    assert re.fullmatch(r"DSAR-\d{4}-\d{6}", reference), reference
    link.click()
    page.wait_for_url(CASE_URL)
    expect(page.locator(".dsar-summary")).to_contain_text(reference)
    return reference


def state_of(page: Page) -> str:
    classes = page.locator(".dsar-summary .dsar-badge").get_attribute("class") or ""
    match = re.search(r"dsar-state-(\w+)", classes)
    return match.group(1) if match else f"(no state badge: {classes!r})"


def reload_until(page: Page, condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Reload the page until ``condition()`` holds, as a person waiting on a case would."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; the case is {state_of(page)}:\n"
                + page.locator("#vendor-jobs").inner_text()
            )
        page.wait_for_timeout(500)
        page.reload()


def history(page: Page) -> list[dict[str, str]]:
    """The History panel's rows, oldest first."""
    rows = page.locator("#case-history tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells, c => c.innerText.trim()))"
    )
    return [
        dict(zip(("when", "who", "what", "state", "details"), row, strict=True)) for row in rows
    ]


def expect_no_actions(page: Page) -> None:
    for action in ACTIONS:
        expect(page.locator(action)).to_have_count(0)


# --- The workflows ----------------------------------------------------------------------------


def test_support_records_a_case_and_the_dpo_approves_and_downloads_it(open_page: OpenPage) -> None:
    email = f"browser-{secrets.token_hex(4)}@auto.example"

    # Support records the request through the Add form.
    support = open_page("support")
    support.goto("/admin/cases/case/")
    support.get_by_role("link", name="Add case").click()
    support.wait_for_url(re.compile(r"/admin/cases/case/add/$"))
    support.fill("#id_email", email)
    support.fill("#id_first_name", "Browser")
    support.fill("#id_last_name", "Subject")
    support.click("input[name=_save]")
    support.wait_for_url(CASE_URL)  # straight to the case just recorded
    added = support.locator("ul.messagelist li.success")
    expect(added).to_contain_text("recorded")
    reference = re.search(r"DSAR-\d{4}-\d{6}", added.inner_text()).group(0)  # type: ignore[union-attr]

    # It can be found by the subject's e-mail; it is New, and discovery finds the subject at
    # both sandbox vendors before any approval.
    assert search_and_open(support, email) == reference
    expect(support.locator(".dsar-summary .dsar-state-new")).to_have_text("New")
    reload_until(
        support,
        lambda: support.locator("#vendor-jobs .dsar-job-awaiting_approval").count() == 2,
        timeout=60,
        what="both vendors to find the subject and wait for approval",
    )
    jobs = support.locator("#vendor-jobs tbody tr")
    expect(jobs).to_have_count(2)
    for n in range(2):
        expect(jobs.nth(n)).to_contain_text("Waiting for approval")
        expect(jobs.nth(n).locator(".dsar-match")).to_contain_text(email)
    expect(support.locator("#vendor-jobs")).to_contain_text("Qualifio")
    expect(support.locator("#vendor-jobs")).to_contain_text("Salesforce")
    expect(support.locator(".dsar-summary .dsar-state-new")).to_have_text("New")
    # Support may not approve, reject or retry, and gets no archive link.
    expect_no_actions(support)
    expect(support.locator("a[href*='/archives/']")).to_have_count(0)
    case_id = CASE_URL.search(support.url).group(1)  # type: ignore[union-attr]
    refused = support.goto(f"/admin/cases/case/{case_id}/transition/approve/")
    assert refused is not None and refused.status == 403, "support reached the approval page"

    # Not even on a finished case: Grace Hopper's demo case lists archives, with no links.
    search_and_open(support, "grace@example.com")
    reload_until(
        support,
        lambda: state_of(support) == "finished",
        timeout=60,
        what="the demo case approved at start-up to finish",
    )
    archives = support.locator("#vendor-jobs .dsar-archive")  # Qualifio's, and Salesforce's
    expect(archives.first).to_contain_text("SHA-256")  # for her Contact and her Lead
    assert archives.count() >= 2, archives.all_inner_texts()
    expect(support.locator("a[href*='/archives/']")).to_have_count(0)
    expect_no_actions(support)

    # The DPO finds the case by the subject's e-mail, approves it and confirms.
    dpo = open_page("dpo")
    assert search_and_open(dpo, email) == reference
    expect(dpo.locator(".dsar-summary .dsar-state-new")).to_have_text("New")
    dpo.locator(".dsar-action-approve").click()
    dpo.wait_for_url(re.compile(r"/transition/approve/$"))
    expect(dpo.locator("#content-main")).to_contain_text("What will be exported")
    expect(dpo.locator("#content-main")).to_contain_text(email)
    dpo.click("input[type=submit][value='Approve the export']")
    dpo.wait_for_url(CASE_URL)
    expect(dpo.locator("ul.messagelist li.success")).to_have_text(f"Case {reference} approved.")
    assert state_of(dpo) in ("approved", "exporting", "finished")

    # It finishes by itself (a reload shows it) with one archive per vendor.
    reload_until(
        dpo,
        lambda: (
            state_of(dpo) == "finished"
            and dpo.locator("#vendor-jobs a[href*='/archives/']").count() == 2
        ),
        timeout=90,
        what="the approved case to finish with two archives",
    )
    expect(dpo.locator(".dsar-summary .dsar-state-finished")).to_have_text("Finished")
    expect(dpo.locator("#vendor-jobs .dsar-job-done")).to_have_count(2)
    expect_no_actions(dpo)
    transitions = [row["state"] for row in history(dpo) if row["what"] == "State change"]
    assert transitions == ["new → approved", "approved → exporting", "exporting → finished"]

    # One download: the file's SHA-256 is the one shown beside its link.
    archive = dpo.locator("#vendor-jobs .dsar-archive").first
    link = archive.locator("a[href*='/archives/']")
    shown = archive.locator("code.dsar-sha").inner_text().strip()
    assert re.fullmatch(r"SHA-256 [0-9a-f]{64}", shown), shown
    with dpo.expect_download() as info:
        link.click()
    download = info.value
    assert download.failure() is None
    assert download.suggested_filename == link.inner_text().strip()
    content = Path(download.path()).read_bytes()
    assert content[:2] == b"PK", "the archive is not a zip file"
    assert f"SHA-256 {hashlib.sha256(content).hexdigest()}" == shown
    dpo.reload()
    downloads = [row for row in history(dpo) if row["what"] == "Archive downloaded"]
    assert len(downloads) == 1 and downloads[0]["who"] == "dpo", downloads
    assert shown.split()[1] in downloads[0]["details"]

    dpo.screenshot(path=ARTIFACTS / "browser-finished-case.png", full_page=True)
    dpo.goto("/admin/cases/case/")
    expect(dpo.locator("#result_list")).to_contain_text(reference)
    dpo.screenshot(path=ARTIFACTS / "browser-case-list.png", full_page=True)


def test_dpo_rejects_a_request_with_a_reason(open_page: OpenPage) -> None:
    reason = f"The requester could not prove their identity ({secrets.token_hex(3)})."
    dpo = open_page("dpo")
    reference = search_and_open(dpo, "nobody@example.com")  # a demo case, still New
    expect(dpo.locator(".dsar-summary .dsar-state-new")).to_have_text("New")
    dpo.locator(".dsar-action-reject").click()
    dpo.wait_for_url(re.compile(r"/transition/reject/$"))
    dpo.fill("#id_reason", reason)
    dpo.click("input[type=submit][value='Reject the request']")
    dpo.wait_for_url(CASE_URL)
    expect(dpo.locator("ul.messagelist li.success")).to_have_text(f"Case {reference} rejected.")
    expect(dpo.locator(".dsar-summary .dsar-state-rejected")).to_have_text("Rejected")
    expect(dpo.locator(".field-rejection_reason")).to_contain_text(reason)
    expect_no_actions(dpo)
    last = [row for row in history(dpo) if row["what"] == "State change"][-1]
    assert (last["who"], last["state"]) == ("dpo", "new → rejected"), last
    assert reason in last["details"]


def test_dpo_retries_an_export_the_vendor_failed(open_page: OpenPage) -> None:
    dpo = open_page("dpo")
    # Fay Fail's demo case was approved at start-up; the sandbox fails every fail…@ export.
    reference = search_and_open(dpo, "fail@example.com")
    reload_until(
        dpo,
        lambda: state_of(dpo) == "failed",
        timeout=60,
        what="the demo export of fail@example.com to fail",
    )
    expect(dpo.locator(".dsar-summary .errornote")).to_contain_text("failed")
    expect(dpo.locator("#vendor-jobs .dsar-job-failed")).to_have_count(2)
    before = len(history(dpo))

    dpo.locator(".dsar-action-retry").click()
    dpo.wait_for_url(re.compile(r"/transition/retry/$"))
    expect(dpo.locator("#content-main")).to_contain_text("fail@example.com")
    dpo.click("input[type=submit][value='Retry the export']")
    dpo.wait_for_url(CASE_URL)
    expect(dpo.locator("ul.messagelist li.success")).to_have_text(f"Case {reference} retried.")
    # The sandbox answers after --finish-after 1 s at the earliest: the case has left `failed`.
    assert state_of(dpo) in ("approved", "exporting"), state_of(dpo)
    retry = next(row for row in history(dpo)[before:] if row["what"] == "State change")
    assert (retry["who"], retry["state"]) == ("dpo", "failed → approved"), retry
    assert "Retry" in retry["details"]

    # The exports start again at both vendors; the sandbox fails this subject every time, so
    # the honest check is that the case went through exporting again and failed again.
    def after_retry() -> list[str]:
        return [row["state"] for row in history(dpo)[before:] if row["what"] == "State change"]

    reload_until(
        dpo,
        lambda: after_retry()[-1:] == ["exporting → failed"],
        timeout=60,
        what="the retried export to run and fail again",
    )
    assert after_retry() == ["failed → approved", "approved → exporting", "exporting → failed"]
    expect(dpo.locator(".dsar-summary .dsar-state-failed")).to_have_text("Failed")
    expect(dpo.locator(".dsar-action-retry")).to_have_count(1)
