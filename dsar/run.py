"""``bin/run``: the whole application on one machine, in one command, stopped by Ctrl-C.

Migrates, creates the demo users, then runs the web server, a Celery worker and Celery beat
side by side (each in its own process group) until Ctrl-C or SIGTERM, when it stops them all
and waits for them. With nothing configured it uses SQLite and kombu's filesystem broker, so
it needs no service; set DATABASE_URL and CELERY_BROKER_URL to use PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/run", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("DSAR_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DSAR_PORT", "8000")))
    parser.add_argument("--no-demo", action="store_true", help="Skip the demo users.")
    args = parser.parse_args(argv)

    env = _environment(args)
    var_dir = Path(env["DSAR_VAR_DIR"])
    var_dir.mkdir(parents=True, exist_ok=True)
    _manage(env, "migrate", "--no-input", "-v", "0")
    logins = [] if args.no_demo else _demo_users(env, var_dir)

    processes = _start(env, args, var_dir)
    url = f"http://{args.host}:{args.port}/admin/"
    print(f"\nDSAR case manager running at {url}", flush=True)
    for line in logins:
        print(f"  {line}", flush=True)
    print("Press Ctrl-C to stop.\n", flush=True)
    return _supervise(processes)


def _environment(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DEBUG", "true")
    env.setdefault("DSAR_VAR_DIR", str(ROOT / "var"))
    env.setdefault("DSAR_PUBLIC_URL", f"http://{args.host}:{args.port}")
    env.setdefault("DSAR_ALLOW_DEMO_USERS", env["DEBUG"])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _manage(env: dict[str, str], *command: str) -> str:
    result = subprocess.run(
        [PYTHON, str(ROOT / "manage.py"), *command],
        env=env,
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    return result.stdout


def _demo_users(env: dict[str, str], var_dir: Path) -> list[str]:
    """The demo passwords are made once per installation and kept in var/ (mode 0600)."""
    store = var_dir / "demo-logins.json"
    if store.exists():
        password = json.loads(store.read_text())["password"]
    else:
        password = secrets.token_urlsafe(9)
        store.write_text(json.dumps({"password": password}))
        store.chmod(0o600)
    output = _manage(env, "create_demo_users", "--password", password, "--qualifio-dpo-id", "4242")
    return [line.strip() for line in output.splitlines() if line.strip()]


def _start(
    env: dict[str, str], args: argparse.Namespace, var_dir: Path
) -> dict[str, subprocess.Popen[bytes]]:
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


def _supervise(processes: dict[str, subprocess.Popen[bytes]]) -> int:
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


def _stop_all(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for process in processes.values():
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
    # Leftover children of a group (Celery's pool) go with it.
    for process in processes.values():
        _signal_group(process, signal.SIGKILL)
    print("Stopped.", flush=True)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


if __name__ == "__main__":
    sys.exit(main())
