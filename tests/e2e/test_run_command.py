"""The README's run command, from a clean clone, as a first-time user would use it.

Starts ``bin/run`` in a fresh ``git clone`` with none of the test suite's environment (so it
uses its embedded defaults: SQLite and the filesystem broker), logs in as the demo DPO over
HTTP, approves a demo case, waits for it to finish with its archives, downloads one and checks
its SHA-256, then presses Ctrl-C and checks that no process is left behind.

bin/run builds the clone's own virtual environment from requirements.txt, as on a new
machine (about 20 s with a warm pip cache). DSAR_TEST_REUSE_VENV=1 links this checkout's
instead, for quick local runs.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import requests

from ..support import SUITE_ONLY, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def processes_under(directory: Path) -> list[str]:
    """Processes whose working directory is inside ``directory``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cwd = (proc / "cwd").resolve()
            if cwd == directory or directory in cwd.parents:
                found.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def csrf_token(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


def test_run_command_from_a_clean_clone(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    if os.environ.get("DSAR_TEST_REUSE_VENV"):
        (clone / ".venv").symlink_to(ROOT / ".venv")
    env = {k: v for k, v in os.environ.items() if k not in SUITE_ONLY}
    port, qualifio_port, salesforce_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [
            "bin/run", "--port", str(port), "--qualifio-port", str(qualifio_port),
            "--salesforce-port", str(salesforce_port), "--finish-after", "1",
        ],
        cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    output: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            output.append(raw.decode(errors="replace").rstrip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: any("running at" in line for line in output), timeout=600)
        password = next(
            re.search(r"user: dpo\s+password: (\S+)", line).group(1)  # type: ignore[union-attr]
            for line in output
            if re.search(r"user: dpo\s+password:", line)
        )

        http = requests.Session()
        login_page = http.get(f"{base}/admin/login/", timeout=10)
        assert login_page.status_code == 200 and "Log in" in login_page.text
        response = http.post(
            f"{base}/admin/login/?next=/admin/",
            data={
                "username": "dpo",
                "password": password,
                "csrfmiddlewaretoken": csrf_token(login_page.text),
                "next": "/admin/",
            },
            timeout=10,
        )
        assert response.url.endswith("/admin/"), "the demo DPO could not log in"

        listing = http.get(f"{base}/admin/cases/case/", params={"q": "ada@example.com"}).text
        case_id = re.search(r'href="/admin/cases/case/(\d+)/change/', listing).group(1)  # type: ignore[union-attr]
        case_url = f"{base}/admin/cases/case/{case_id}/change/"

        def prepared() -> bool:
            """discovery of the demo subject at both sandbox vendors"""
            page = http.get(case_url).text
            return page.count("Waiting for approval") == 2

        wait_until(prepared, timeout=60)
        confirm_url = f"{base}/admin/cases/case/{case_id}/transition/approve/"
        confirm = http.get(confirm_url).text
        assert "Approve the export" in confirm
        http.post(
            confirm_url,
            data={"csrfmiddlewaretoken": csrf_token(confirm), "confirm": "1"},
            headers={"Referer": confirm_url},
        )

        def finished() -> str:
            """the demo case to finish with two archives"""
            page = http.get(case_url).text
            if "dsar-state-finished" in page and page.count("/archives/") >= 2:
                return page
            return ""

        page = wait_until(finished, timeout=90)
        link, digest = re.search(
            r'href="(/admin/cases/case/\d+/archives/\d+/)">[^<]+</a>.*?SHA-256 ([0-9a-f]{64})',
            page,
            re.S,
        ).groups()  # type: ignore[union-attr]
        archive = http.get(base + link)
        assert archive.status_code == 200 and archive.content[:2] == b"PK"
        assert hashlib.sha256(archive.content).hexdigest() == digest
    finally:
        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
        reader.join(timeout=5)
    assert process.returncode == 0, "\n".join(output[-40:])
    assert "Stopped." in output

    def all_gone() -> bool:
        """every process started by bin/run to exit"""
        return not processes_under(clone)

    try:
        wait_until(all_gone, timeout=15)
    except AssertionError:
        pytest.fail(f"left behind: {processes_under(clone)}")
    with pytest.raises(requests.ConnectionError):
        requests.get(base, timeout=2)
