"""``bin/run``: the whole application on one machine, in one command, stopped by Ctrl-C.

Migrates; in demo mode (the default, which needs DEBUG) starts the sandbox vendors, points
vendor accounts at them, creates the demo users and records a few demo cases through the same
management commands an operator would script; then runs the web server, a Celery worker and
Celery beat side by side (each in its own process group) until Ctrl-C or SIGTERM, when it
stops them all and waits for them. With nothing configured it uses SQLite and kombu's
filesystem broker, so it needs no service; set DATABASE_URL and CELERY_BROKER_URL to use
PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import date, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
Processes = dict[str, "subprocess.Popen[bytes]"]

#: Subjects the sandbox knows (see sandbox/README.md), in the states a DPO meets every day.
DEMO_CASES: tuple[dict[str, Any], ...] = (
    {"email": "ada@example.com", "first": "Ada", "last": "Lovelace"},  # new: approve it
    {"email": "grace@example.com", "first": "Grace", "last": "Hopper", "type": "portability",
     "then": "approve"},  # finishes by itself, with archives from both vendors
    {"email": "fail@example.com", "first": "Fay", "last": "Fail", "then": "approve"},  # fails
    {"email": "nobody@example.com"},  # no vendor holds data about them
    {"email": "joao@qualifio.com", "first": "joao", "last": "pinto", "days_ago": 40},  # overdue
    {"email": "mallory@example.com", "first": "Mallory", "then": "reject"},
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/run", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("DSAR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DSAR_PORT", "8000")))
    parser.add_argument(
        "--no-demo",
        action="store_true",
        help="No sandbox vendors, demo users or demo cases (use your own vendor accounts).",
    )
    parser.add_argument("--qualifio-port", type=int, default=8701, help="Sandbox Qualifio port.")
    parser.add_argument("--salesforce-port", type=int, default=8702, help="Sandbox Salesforce.")
    parser.add_argument(
        "--finish-after", type=float, default=3.0, help="Seconds the sandbox takes per export."
    )
    args = parser.parse_args(argv)

    env = _environment(args)
    demo = not args.no_demo
    if demo and env["DEBUG"].lower() not in ("1", "true", "yes", "on"):
        print("The demo (sandbox vendors, demo users) needs DEBUG=true; or use --no-demo.")
        return 2
    var_dir = Path(env["DSAR_VAR_DIR"])
    var_dir.mkdir(parents=True, exist_ok=True)
    processes: Processes = {}
    url = f"http://{args.host}:{args.port}/admin/"
    try:
        sandbox = None
        if demo:
            processes["sandbox"], sandbox = _start_sandbox(env, args, var_dir)
        logins = _prepare(env, var_dir, sandbox)
        processes.update(_start(env, args, var_dir))
        _wait_for_web(url, processes)
    except BaseException:
        _stop_all(processes)
        raise
    print(f"\nDSAR case manager running at {url}", flush=True)
    for line in logins:
        print(f"  {line}", flush=True)
    if sandbox:
        print(
            f"  sandbox vendors: Qualifio {sandbox['qualifio_url']}, "
            f"Salesforce {sandbox['salesforce_url']}",
            flush=True,
        )
    print("Press Ctrl-C to stop.\n", flush=True)
    return _supervise(processes)


def _environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DEBUG", "true")
    env.setdefault("DSAR_VAR_DIR", str(ROOT / "var"))
    env.setdefault("DSAR_PUBLIC_URL", f"http://{args.host}:{args.port}")
    env.setdefault("DSAR_ALLOW_DEMO_USERS", env["DEBUG"])
    env.setdefault("DJANGO_SETTINGS_MODULE", "dsar.settings")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not args.no_demo:
        # The sandbox vendors live on 127.0.0.1: archive downloads from loopback are allowed
        # in demo mode only, never by production settings. Quicker polls make a livelier demo.
        env.setdefault("DSAR_ALLOW_PRIVATE_VENDOR_HOSTS", "true")
        env.setdefault("DSAR_POLL_INTERVAL", "3")
        env.setdefault("DSAR_SYNC_INTERVAL", "5")
    return env


def _start_sandbox(
    env: dict[str, str], args: argparse.Namespace, var_dir: Path
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Start ``python -m sandbox`` and read the URLs and credentials it prints first."""
    process = subprocess.Popen(
        [
            PYTHON, "-m", "sandbox", "--quiet",
            "--qualifio-port", str(args.qualifio_port),
            "--salesforce-port", str(args.salesforce_port),
            "--state-dir", str(var_dir / "sandbox"),
            "--finish-after", str(args.finish_after),
        ],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line:
        process.wait()
        raise SystemExit(
            f"The sandbox vendors could not start (exit {process.returncode}): are ports "
            f"{args.qualifio_port} and {args.salesforce_port} free? "
            "Choose others with --qualifio-port and --salesforce-port."
        )
    return process, json.loads(line)


def _prepare(env: dict[str, str], var_dir: Path, sandbox: dict[str, Any] | None) -> list[str]:
    """Migrate and, in demo mode, set up the sandbox accounts, the demo users and cases.

    Runs the management commands in this process (one Django start-up instead of ten), then
    closes its database connections before the server, worker and beat start.
    """
    os.environ.update(env)
    import django
    from django.core.management import call_command
    from django.db import connections

    django.setup()
    try:
        call_command("migrate", interactive=False, verbosity=0)
        if sandbox is None:
            return []
        _sandbox_accounts(call_command, sandbox)
        logins = _demo_users(call_command, var_dir)
        _demo_cases(call_command)
        return logins
    finally:
        connections.close_all()


def _sandbox_accounts(call_command: Any, sandbox: dict[str, Any]) -> None:
    qualifio = sandbox["credentials"]["qualifio"]
    salesforce = sandbox["credentials"]["salesforce"]
    quiet = io.StringIO()
    call_command(
        "add_vendor_account", "qualifio", "--name", "Qualifio (sandbox)",
        "--base-url", sandbox["qualifio_url"], "--client-id", str(qualifio["client_id"]),
        "--api-token", qualifio["api_token"], "--dpo-id", str(qualifio["dpo_id"]),
        stdout=quiet,
    )  # fmt: skip
    call_command(
        "add_vendor_account", "salesforce", "--name", "Salesforce (sandbox)",
        "--login-url", sandbox["salesforce_url"], "--client-id", salesforce["consumer_key"],
        "--client-secret", salesforce["consumer_secret"],
        "--policy-name", salesforce["policy_name"], "--ca-file", sandbox["ca_file"],
        stdout=quiet,
    )  # fmt: skip


def _demo_users(call_command: Any, var_dir: Path) -> list[str]:
    """The demo password is made once per installation and kept in var/ (mode 0600)."""
    store = var_dir / "demo-logins.json"
    if store.exists():
        password = json.loads(store.read_text())["password"]
    else:
        password = secrets.token_urlsafe(9)
        store.write_text(json.dumps({"password": password}))
        store.chmod(0o600)
    out = io.StringIO()
    call_command(
        "create_demo_users", "--password", password, "--qualifio-dpo-id", "4242", stdout=out
    )
    return [line.strip() for line in out.getvalue().splitlines() if line.strip()]


def _demo_cases(call_command: Any) -> None:
    """A handful of cases in their everyday states, once: only into an empty database."""
    from cases.models import Case

    if Case.objects.exists():
        return
    for demo in DEMO_CASES:
        out = io.StringIO()
        received = date.today() - timedelta(days=demo.get("days_ago", 1))
        call_command(
            "open_case", "--email", demo["email"], "--first-name", demo.get("first", ""),
            "--last-name", demo.get("last", ""), "--type", demo.get("type", "access"),
            "--received", received.isoformat(), stdout=out,
        )  # fmt: skip
        reference = out.getvalue().strip()
        if demo.get("then") == "approve":
            call_command("approve_case", reference, "--user", "dpo", stdout=io.StringIO())
        elif demo.get("then") == "reject":
            call_command(
                "reject_case", reference, "--user", "dpo",
                "--reason", "The requester could not prove they are the data subject.",
                stdout=io.StringIO(),
            )  # fmt: skip


def _start(env: dict[str, str], args: argparse.Namespace, var_dir: Path) -> Processes:
    commands = {
        "web": [PYTHON, "manage.py", "runserver", "--noreload", f"{args.host}:{args.port}"],
        "worker": [
            PYTHON, "-m", "celery", "-A", "dsar", "worker", "--loglevel", "INFO",
            "--concurrency", env.get("DSAR_WORKER_CONCURRENCY", "2"), "--hostname", "worker@%h",
        ],
        "beat": [
            PYTHON, "-m", "celery", "-A", "dsar", "beat", "--loglevel", "INFO",
            "--schedule", str(var_dir / "celerybeat-schedule"),
        ],
    }  # fmt: skip
    return {
        name: subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)
        for name, command in commands.items()
    }


def _wait_for_web(url: str, processes: Processes) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if processes["web"].poll() is not None:
            raise SystemExit("The web server stopped while starting; see its output above.")
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - our own local URL
                return
        except urllib.error.HTTPError:
            return  # it answers (a redirect to the login page is fine)
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"The web server did not answer on {url} within 60 s.")


def _supervise(processes: Processes) -> int:
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    while not stopping:
        for name, process in processes.items():
            if process.poll() is not None:
                print(f"{name} exited with status {process.returncode}; stopping.", flush=True)
                status, stopping = 1, True
                break
        time.sleep(0.5)
    _stop_all(processes)
    return status


def _stop_all(processes: Processes) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.terminate()  # the main process: Celery then stops its pool in order
    deadline = time.monotonic() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
    for process in processes.values():  # leftover children of a group (Celery's pool)
        _signal_group(process, signal.SIGKILL)
    print("Stopped.", flush=True)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


if __name__ == "__main__":
    sys.exit(main())
