"""Shared set-up for the benchmarks: a dedicated PostgreSQL database, the machine, the report.

Every benchmark runs on its own database (``dsar_bench`` unless ``BENCH_DB`` says otherwise),
never on ``test``, which the test suite creates and drops. The environment mirrors bin/test
(DEBUG off, production static files) so that what is timed is what a deployment runs.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "docs" / "benchmarks.md"
PG_SERVER = os.environ.get("BENCH_PG", "postgres://postgres@127.0.0.1:5432")
BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/5")


def bench_env(db: str | None = None) -> dict[str, str]:
    """The environment every bench process (and its children) runs with."""
    db = db or os.environ.get("BENCH_DB", "dsar_bench")
    var_dir = Path(os.environ.get("BENCH_VAR_DIR") or Path(tempfile.gettempdir()) / f"dsar-{db}")
    var_dir.mkdir(parents=True, exist_ok=True)
    return {
        "DJANGO_SETTINGS_MODULE": "dsar.settings",
        "DATABASE_URL": f"{PG_SERVER}/{db}",
        "CELERY_BROKER_URL": BROKER,
        "SECRET_KEY": "bench-only-secret-key-not-for-production",
        "FIELD_ENCRYPTION_SALT": "bench-only-salt",
        "DEBUG": "false",
        "SECURE_SSL_REDIRECT": "false",
        "DSAR_VAR_DIR": str(var_dir),
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
    }


def ensure_database(db: str) -> None:
    """Create the bench database if it is missing (never touches any other database)."""
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db]).fetchone():
            conn.execute(f'CREATE DATABASE "{db}"')


def drop_database(db: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def setup_django(db: str | None = None, *, migrate: bool = True) -> dict[str, str]:
    """Point Django at the bench database, migrate it and collect static files once."""
    env = bench_env(db)
    for key, value in env.items():
        os.environ.setdefault(key, value)
    env = {key: os.environ[key] for key in env}
    ensure_database(env["DATABASE_URL"].rsplit("/", 1)[1])
    import django

    django.setup()
    from django.core.management import call_command

    if migrate:
        call_command("migrate", verbosity=0, interactive=False)
    if not (Path(env["DSAR_VAR_DIR"]) / "static" / "staticfiles.json").exists():
        call_command("collectstatic", verbosity=0, interactive=False)
    return env


def machine() -> str:
    """One line naming the machine: cores, RAM, CPU, PostgreSQL, Python, Django."""
    import django
    from django.db import connection

    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        pg = cursor.fetchone()[0]
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem_kb / 1024**2:.1f} GiB RAM, "
        f"PostgreSQL {pg.split()[0]}, Python {platform.python_version()}, "
        f"Django {django.get_version()}, {platform.system()} {platform.release()}"
    )


def command_line() -> str:
    """The command that produced the figures, as someone would type it again."""
    return " ".join([".venv/bin/python -m", _module_name(), *sys.argv[1:]])


def _module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return spec.name if spec else Path(sys.argv[0]).stem


def report(title: str, lines: Iterable[str], *, command: str | None = None) -> None:
    """Append a dated section to docs/benchmarks.md and echo it on stdout."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [
        f"## {title} ({stamp})",
        "",
        f"- Command: `{command or command_line()}`",
        f"- Machine: {machine()}",
        *lines,
        "",
    ]
    text = "\n".join(body) + "\n"
    print(text)
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    if not REPORT.exists():
        REPORT.write_text(
            "# Benchmarks\n\nFigures appended by the scripts in `bench/` "
            "(see bench/README.md). Newest last.\n\n"
        )
    with REPORT.open("a") as fh:
        fh.write(text)


def timed(
    fn: Callable[[], Any],
    runs: int,
    *,
    warmup: int = 2,
    before: Callable[[], Any] | None = None,
) -> list[float]:
    """Wall-clock milliseconds of ``runs`` calls after ``warmup`` untimed ones.

    ``before`` runs untimed ahead of every call (e.g. to restore the state a call changes).
    """
    for _ in range(warmup):
        if before:
            before()
        fn()
    samples = []
    for _ in range(runs):
        if before:
            before()
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return samples


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def rss_kib(pid: int | str = "self") -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, from /proc: no psutil needed."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields["VmRSS"], fields["VmHWM"]


def git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
