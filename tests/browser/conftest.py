"""The whole application, started as a person starts it (``bin/run``), and a real browser.

``app`` runs ``bin/run`` (demo mode: sandbox vendors, demo users dpo/support, demo cases) from
this checkout on free ports, against a PostgreSQL database of its own (created here, dropped
afterwards) and Redis database 3 as the Celery broker, so the web server, Celery worker and
beat it starts are the real ones. At the end it presses Ctrl-C (SIGINT) and checks that every
process bin/run started is gone and its port closed.

``browser`` is Debian's Chromium (``/usr/bin/chromium``) driven by Playwright's sync API; no
browser is ever downloaded. ``open_page`` gives a logged-in page per user; when a test fails,
a screenshot of each of its pages is saved under ``test-artifacts/``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from playwright.sync_api import Browser, Page, expect, sync_playwright

from ..support import SUITE_ONLY, free_port, wait_until

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

BROKER_DB = 3
#: Seconds for the whole module, from bin/run's start to its last process gone (issue 8).
BUDGET = 180


# --- Processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    start: str  # start time in clock ticks since boot: tells a pid apart from its reuse
    sid: int
    cmdline: str


def _proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # Fields after the parenthesised command name: state ppid pgrp session … starttime (22nd).
    rest = stat[stat.rindex(")") + 2 :].split()
    if rest[0] == "Z":  # a zombie has exited; its parent just has not reaped it yet
        return None
    return Proc(pid, rest[19], int(rest[3]), cmdline.replace(b"\0", b" ").decode().strip())


def _all_processes() -> dict[int, tuple[int, Proc]]:
    """pid → (ppid, Proc) for every live process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        proc = _proc(int(entry.name))
        if proc is None:
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        found[proc.pid] = (int(stat[stat.rindex(")") + 2 :].split()[1]), proc)
    return found


def descendants(root: int) -> list[Proc]:
    """``root`` and every process below it (bin/run gives each child its own session)."""
    table = _all_processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    result, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            result.append(table[pid][1])
        todo.extend(children.get(pid, []))
    return result


def still_running(started: list[Proc]) -> list[str]:
    """Any process we saw that still lives, or any process in one of their sessions."""
    sessions = {proc.sid for proc in started}
    seen = {(proc.pid, proc.start) for proc in started}
    return [
        f"{proc.pid} {proc.cmdline}"
        for _, proc in _all_processes().values()
        if (proc.pid, proc.start) in seen or proc.sid in sessions
    ]


# --- Services -------------------------------------------------------------------------------


def _server_url(env_name: str, default: str, path: str) -> str:
    """The suite's PostgreSQL or Redis server (as bin/test exports it) with another path."""
    url = os.environ.get(env_name, "")
    if not url.startswith(("postgres", "redis")):
        url = default
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


@contextlib.contextmanager
def own_database() -> Iterator[str]:
    """A PostgreSQL database for this run only: the suite's ``test`` database stays untouched."""
    name = f"dsar_browser_{os.getpid()}"
    admin_url = _server_url(
        "DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test", "/postgres"
    ).replace("postgres://", "postgresql://", 1)
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _server_url("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test", f"/{name}")
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def own_broker() -> Iterator[str]:
    """Redis database 3, emptied before and after: no stale tasks in, none left behind."""
    url = _server_url("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0", f"/{BROKER_DB}")
    client = redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


# --- The application ------------------------------------------------------------------------


@dataclass
class App:
    url: str
    password: dict[str, str]
    process: subprocess.Popen[bytes]
    output: list[str] = field(default_factory=list)
    started: list[Proc] = field(default_factory=list)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output[-lines:])


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """``bin/run`` in demo mode with PostgreSQL and Redis; Ctrl-C and a clean exit at the end."""
    began = time.monotonic()
    ARTIFACTS.mkdir(exist_ok=True)
    var_dir = tmp_path_factory.mktemp("dsar-browser-var")
    log_path = ARTIFACTS / "browser-bin-run.log"
    port, qualifio_port, salesforce_port = free_port(), free_port(), free_port()
    with own_database() as database_url, own_broker() as broker_url:
        env = {k: v for k, v in os.environ.items() if k not in SUITE_ONLY}
        env.update(
            DATABASE_URL=database_url,
            CELERY_BROKER_URL=broker_url,
            DEBUG="true",  # demo mode requires it; bin/run sets its own development defaults
            DSAR_VAR_DIR=str(var_dir),
            # Quicker status polls than bin/run's demo defaults (3 s, 5 s): a shorter test.
            DSAR_POLL_INTERVAL="1",
            DSAR_SYNC_INTERVAL="2",
        )
        process = subprocess.Popen(
            [
                "bin/run", "--port", str(port), "--qualifio-port", str(qualifio_port),
                "--salesforce-port", str(salesforce_port), "--finish-after", "1",
            ],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        app = App(url=f"http://127.0.0.1:{port}", password={}, process=process)

        def read() -> None:
            assert process.stdout is not None
            with log_path.open("w") as log:
                for raw in process.stdout:
                    line = raw.decode(errors="replace").rstrip()
                    app.output.append(line)
                    log.write(line + "\n")
                    log.flush()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            try:
                wait_until(
                    lambda: (
                        process.poll() is not None
                        or any("running at" in line for line in app.output)
                    ),
                    timeout=120,  # bin/test has run bin/bootstrap already: no reinstall here
                    what="bin/run to start",
                )
            except AssertionError:
                pytest.fail(f"bin/run did not start:\n{app.tail()}")
            assert process.poll() is None, f"bin/run exited at start-up:\n{app.tail()}"
            for user in ("dpo", "support"):
                match = next(
                    (
                        m
                        for line in app.output
                        if (m := re.search(rf"user: {user}\s+password: (\S+)", line))
                    ),
                    None,
                )
                assert match, f"bin/run printed no {user} login:\n{app.tail()}"
                app.password[user] = match.group(1)
            app.started = descendants(process.pid)
            names = " | ".join(proc.cmdline for proc in app.started)
            for part in ("sandbox", "runserver", "celery -A dsar worker", "celery -A dsar beat"):
                assert part in names, f"bin/run did not start {part!r}: {names}"
            yield app
        finally:
            app.started += [p for p in descendants(process.pid) if p not in app.started]
            process.send_signal(signal.SIGINT)  # what Ctrl-C sends
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=60)
            clean_exit = process.returncode == 0
            try:
                wait_until(
                    lambda: not still_running(app.started), timeout=20, what="every process to exit"
                )
                left_behind: list[str] = []
            except AssertionError:
                left_behind = still_running(app.started)
            # Never leave them to the next test: kill what is left, by the sessions we started.
            for sid in {proc.sid for proc in app.started} if left_behind else ():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(sid, signal.SIGKILL)
            process.wait()
            reader.join(timeout=5)
            shutil.rmtree(var_dir, ignore_errors=True)
    assert clean_exit, f"bin/run exited with {process.returncode} after Ctrl-C:\n{app.tail()}"
    assert "Stopped." in app.output, app.tail()
    assert not left_behind, f"left behind after Ctrl-C: {left_behind}"
    for busy in (port, qualifio_port, salesforce_port):
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", busy)) != 0, f"port {busy} still answers"
    elapsed = time.monotonic() - began
    assert elapsed < BUDGET, f"the browser tests took {elapsed:.0f} s; the budget is {BUDGET} s"


# --- The browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def open_page(
    app: App, browser: Browser, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Page]]:
    """``open_page("dpo")``: a page of a fresh browser context, logged in as that user."""
    contexts = []
    pages: list[tuple[str, Page]] = []

    def open_as(username: str) -> Page:
        context = browser.new_context(
            base_url=app.url, accept_downloads=True, viewport={"width": 1440, "height": 900}
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        pages.append((username, page))
        page.goto("/admin/login/?next=/admin/")
        page.fill("#id_username", username)
        page.fill("#id_password", app.password[username])
        page.click("input[type=submit]")
        page.wait_for_url(f"{app.url}/admin/")
        expect(page.locator("#user-tools")).to_contain_text(username, ignore_case=True)
        return page

    yield open_as
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for n, (username, page) in enumerate(pages):
            with contextlib.suppress(Exception):
                page.screenshot(
                    path=ARTIFACTS / f"browser-failure-{request.node.name}-{n}-{username}.png",
                    full_page=True,
                )
    for context in contexts:
        context.close()
