"""Issue 7, part 4: the pipeline adds little to the vendor calls it has to make.

Real processes, as in production: the sandbox vendors (``python -m sandbox``), a Celery
worker with 2 processes and beat on Redis (the bench's own Redis database), and
``manage.py runserver`` receiving Qualifio's callbacks. Two measurements:

1. Burst: 500 cases (``…@auto.example``, known to both vendors) are opened, then approved,
   with the vendors finishing at once (``finish_after`` 0). Total time is compared with a
   plain sequential ``requests`` script making the same vendor calls for the same subjects;
   the sandbox's own call log shows both made the same calls.
2. Callback latency: cases one at a time, Qualifio only, the vendor finishing 2 s after
   validation and the default 15 s poll interval, so only the callback can make the case
   finish quickly: finished_at − (export started + 2 s).

    .venv/bin/python -m bench.pipeline --cases 500
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from bench.common import ROOT, git_revision, report, setup_django

TARGET_RATIO = 1.5
TARGET_LATENCY_S = 2.0
FINISH_AFTER_LATENCY = 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class Processes:
    """Child processes of one run, stopped (by their own process group) at the end."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], extra: dict[str, str] | None = None) -> Path:
        log = self.logs / f"{name}.log"
        self.children[name] = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, **self.env, **(extra or {}), "PYTHONUNBUFFERED": "1"},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return log

    def stop(self, name: str) -> None:
        process = self.children.pop(name, None)
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, 15)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()

    def stop_all(self) -> None:
        for name in list(self.children):
            self.stop(name)


def start_sandbox(procs: Processes, state_dir: Path) -> dict[str, Any]:
    log = procs.start(
        "sandbox",
        [
            sys.executable,
            "-m",
            "sandbox",
            "--qualifio-port",
            "0",
            "--salesforce-port",
            "0",
            "--finish-after",
            "0",
            "--quiet",
            "--state-dir",
            str(state_dir),
        ],
    )

    def info() -> dict[str, Any] | None:
        first = log.read_text().splitlines()[:1] if log.exists() else []
        return json.loads(first[0]) if first and first[0].startswith("{") else None

    return wait_until(info, timeout=30, what="the sandbox")


def start_worker(procs: Processes, poll_interval: float, sync_interval: int, *, log: str) -> Path:
    """A worker with beat; ``log`` names its log file (worker stops keep their own)."""
    from dsar.celery import app

    app.control.purge()
    path = procs.start(
        log,
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dsar",
            "worker",
            "--beat",
            "--concurrency",
            "2",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"bench-{os.getpid()}@%h",
            "--schedule",
            str(procs.logs / "beat-schedule"),
        ],
        {
            "DSAR_POLL_INTERVAL": str(poll_interval),
            "DSAR_SYNC_INTERVAL": str(sync_interval),
            "LOG_LEVEL": "INFO",
        },
    )
    wait_until(lambda: b"ready." in path.read_bytes(), timeout=60, what="the Celery worker")
    return path


def cpu_seconds(procs: Processes) -> Counter[str]:
    """CPU time (user + system) used so far, by component, from /proc.

    Each child runs in its own session, so its session id (its pid) gathers the Celery pool
    processes too; PostgreSQL and Redis are counted by process name; the bench process (which
    opens and approves the cases) by itself. Sampled before and after a measurement.
    """
    sessions = {proc.pid: name for name, proc in procs.children.items()}
    tick = os.sysconf("SC_CLK_TCK")
    totals: Counter[str] = Counter()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            raw = stat.read_text()
        except OSError:
            continue  # the process ended meanwhile
        comm = raw[raw.index("(") + 1 : raw.rindex(")")]
        fields = raw[raw.rindex(")") + 2 :].split()
        session, used = int(fields[3]), (int(fields[11]) + int(fields[12])) / tick
        if session in sessions:
            totals[sessions[session]] += used
        elif comm == "postgres":
            totals["PostgreSQL"] += used
        elif comm.startswith("redis-server"):
            totals["Redis"] += used
    totals["bench process"] = time.process_time()
    return totals


def task_counts(log: Path) -> Counter[str]:
    """Tasks the worker ran, by name, from its INFO log."""
    counts: Counter[str] = Counter()
    for line in log.read_text(errors="replace").splitlines():
        if " succeeded in " in line and "Task " in line:
            counts[line.split("Task ", 1)[1].split("[", 1)[0]] += 1
    return counts


def sandbox_call(info: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    response = requests.request(method, info["qualifio_url"] + path, json=body, timeout=10)
    response.raise_for_status()
    return response.json() if response.content else None


def call_counts(info: dict[str, Any]) -> Counter[str]:
    """The sandbox's call log, by vendor and method (paths carry ids)."""
    calls = sandbox_call(info, "GET", "/__sandbox__/calls")
    return Counter(
        f"{c['vendor']} {c['method']} {_shape(c['path'])}"
        for c in calls
        if c["vendor"] != "qualifio-callback"  # the vendor calling us, not a call we make
    )


def _shape(path: str) -> str:
    parts = path.strip("/").split("/")
    known = {"v1", "gdpr", "profiles", "rules", "exportData", "validate", "archive", "services"}
    known |= {"data", "query", "consent", "dsr", "rtp", "execute", "oauth2", "token", "servlet"}
    known |= {"policyFileDownload"}
    return "/" + "/".join(p if p in known else "…" for p in parts)


def configure_accounts(info: dict[str, Any], *, salesforce: bool) -> None:
    """Sandbox accounts, as ``manage.py add_vendor_account`` would create them."""
    from connectors.models import Vendor, VendorAccount

    VendorAccount.objects.all().update(is_active=False)
    qualifio, sf = info["credentials"]["qualifio"], info["credentials"]["salesforce"]
    VendorAccount.objects.update_or_create(
        name="Qualifio sandbox",
        defaults={
            "vendor": Vendor.QUALIFIO,
            "base_url": info["qualifio_url"],
            "client_id": str(qualifio["client_id"]),
            "api_token": qualifio["api_token"],
            "default_dpo_id": str(qualifio["dpo_id"]),
            "is_active": True,
        },
    )
    VendorAccount.objects.update_or_create(
        name="Salesforce sandbox",
        defaults={
            "vendor": Vendor.SALESFORCE,
            "base_url": "",
            "login_url": info["salesforce_url"],
            "client_id": sf["consumer_key"],
            "client_secret": sf["consumer_secret"],
            "policy_name": sf["policy_name"],
            "ca_file": str(info["ca_file"]),
            "is_active": salesforce,
        },
    )


def fresh_tables() -> Any:
    from django.contrib.auth.models import Group, User

    from bench.generate import wipe

    wipe()
    user, _ = User.objects.get_or_create(username="bench-dpo", defaults={"is_staff": True})
    user.groups.add(Group.objects.get(name="DPO"))
    return user


def open_cases(emails: list[str], dpo: Any) -> list[int]:
    from django.utils import timezone

    from cases import services
    from cases.models import Case

    ids = []
    for email in emails:
        local = email.split("@")[0]
        case = Case(
            email=email, first_name="Load", last_name=local, received_on=timezone.localdate()
        )
        ids.append(services.open_case(case, actor=dpo).pk)
    return ids


def job_steps() -> Counter[str]:
    from cases.models import VendorJob

    return Counter(VendorJob.objects.values_list("step", flat=True))


def case_states() -> Counter[str]:
    from cases.models import Case

    return Counter(Case.objects.values_list("state", flat=True))


def burst(info: dict[str, Any], n: int, dpo: Any, worker_log: Path) -> dict[str, Any]:
    """Open n cases, wait for discovery, approve them all, wait until all are finished."""
    from cases import services
    from cases.models import Case

    jobs_per_case = 2
    emails = [f"bench.{i}@auto.example" for i in range(n)]
    sandbox_call(info, "POST", "/__sandbox__/reset")
    start = time.perf_counter()
    ids = open_cases(emails, dpo)
    opened = time.perf_counter()

    def discovered() -> bool:
        steps = job_steps()
        if steps.get("failed"):
            raise RuntimeError(f"a job failed during discovery: {steps}\n{tail(worker_log)}")
        return steps.get("awaiting_approval", 0) == n * jobs_per_case

    wait_until(discovered, timeout=600, what="discovery of every case")
    prepared = time.perf_counter()
    for case_id in ids:
        services.approve_case(case_id, actor=dpo)
    approved = time.perf_counter()

    def finished() -> bool:
        states = case_states()
        if states.get("failed"):
            raise RuntimeError(f"a case failed: {states}\n{tail(worker_log)}")
        return states.get("finished", 0) == n

    wait_until(finished, timeout=1200, what="every case to finish")
    done = time.perf_counter()
    latencies = [
        (closed - approved_at).total_seconds()
        for approved_at, closed in Case.objects.values_list("approved_at", "closed_at")
    ]
    return {
        "open_s": opened - start,
        "discovery_s": prepared - start,
        "approve_s": approved - prepared,
        "export_s": done - prepared,
        "total_s": (prepared - start) + (done - prepared),
        "calls": call_counts(info),
        "approve_to_finished": latencies,
    }


def raw_sequence(info: dict[str, Any], n: int) -> dict[str, Any]:
    """The same vendor calls, one after the other, by a plain script with requests."""
    sandbox_call(info, "POST", "/__sandbox__/reset")
    q, sf = info["credentials"]["qualifio"], info["credentials"]["salesforce"]
    qurl, surl = info["qualifio_url"], info["salesforce_url"]
    qs = requests.Session()
    qs.headers.update({"x-api-token": q["api_token"], "Accept": "application/json"})
    client = {"clientId": q["client_id"]}
    ss = requests.Session()
    ss.verify = str(info["ca_file"])
    for session in (qs, ss):  # as the product does: no proxy or CA bundle from the env
        session.trust_env = False
    start = time.perf_counter()
    token = ss.post(
        f"{surl}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": sf["consumer_key"],
            "client_secret": sf["consumer_secret"],
        },
        timeout=30,
    ).json()["access_token"]
    ss.headers["Authorization"] = f"Bearer {token}"
    api = f"{surl}/services/data/v62.0"
    for i in range(n):
        email = f"bench.{i}@auto.example"
        # Qualifio: search, create the rule, validate, poll, archive location, archive.
        profiles = qs.get(f"{qurl}/v1/gdpr/profiles", params={**client, "email": email}).json()
        rule = qs.post(
            f"{qurl}/v1/gdpr/rules/exportData",
            params=client,
            json={
                "ruleType": "GDPR_ExportData",
                "clientId": q["client_id"],
                "ruleTypePayload": {"profiles": [p["id"] for p in profiles]},
                "justification": "Data subject access request under GDPR Art. 15.",
                "userId": q["dpo_id"],
            },
        ).json()
        rule_id = rule["_id"]
        qs.put(f"{qurl}/v1/gdpr/rules/{rule_id}/validate", params=client, json={"dpo": q["dpo_id"]})
        while (body := qs.get(f"{qurl}/v1/gdpr/rules/{rule_id}", params=client).json())[
            "ruleStatus"
        ]["status"] != "FINISHED":
            time.sleep(0.05)
        where = qs.get(
            f"{qurl}/v1/gdpr/rules/{rule_id}/archive/{body['archive']}", params=client
        ).json()
        with qs.get(where["url"], stream=True) as response:
            archive = b"".join(response.iter_content(1 << 20))
        # Salesforce: find the records, execute the policy, poll, download.
        found = []
        for sobject in ("Contact", "Lead", "User"):
            soql = f"SELECT Id, FirstName, LastName, Email FROM {sobject} WHERE Email = '{email}'"
            found += ss.get(f"{api}/query", params={"q": soql}).json()["records"]
        for record in found:
            result = ss.post(
                f"{api}/consent/dsr/rtp/execute",
                json={"dataSubjectId": record["Id"], "policyName": sf["policy_name"]},
            ).json()["result"]
            while (
                status := ss.get(
                    f"{api}/consent/dsr/rtp/execute",
                    params={"policyFileId": result["policyFileId"]},
                ).json()["result"]
            )["policyFileStatus"] != "Complete":
                time.sleep(0.05)
            with ss.get(status["policyFileUrl"], stream=True) as response:
                archive += b"".join(response.iter_content(1 << 20))
    return {"total_s": time.perf_counter() - start, "calls": call_counts(info)}


def callback_latency(info: dict[str, Any], runs: int, dpo: Any, worker_log: Path) -> list[float]:
    """Qualifio only; the vendor finishes 2 s after validation and calls back."""
    from cases import services
    from cases.models import Case, VendorJob

    sandbox_call(info, "POST", "/__sandbox__/config", {"finish_after": FINISH_AFTER_LATENCY})
    latencies = []
    for i in range(runs):
        (case_id,) = open_cases([f"latency.{i}@auto.example"], dpo)
        wait_until(
            lambda case_id=case_id: VendorJob.objects.filter(
                case_id=case_id, step="awaiting_approval"
            ).exists(),
            timeout=60,
            what="discovery",
        )
        services.approve_case(case_id, actor=dpo)

        def finished(case_id: int = case_id) -> bool:
            state = Case.objects.values_list("state", flat=True).get(pk=case_id)
            if state == "failed":
                raise RuntimeError(f"latency case failed\n{tail(worker_log)}")
            return state == "finished"

        wait_until(finished, timeout=120, what="the latency case to finish")
        closed = Case.objects.values_list("closed_at", flat=True).get(pk=case_id)
        started = VendorJob.objects.values_list("started_at", flat=True).get(case_id=case_id)
        latencies.append((closed - started).total_seconds() - FINISH_AFTER_LATENCY)
    sandbox_call(info, "POST", "/__sandbox__/config", {"finish_after": 0})
    return latencies


def tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=500)
    parser.add_argument("--latency-runs", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=1.0, help="burst run only")
    parser.add_argument("--sync-interval", type=int, default=1, help="burst run only")

    args = parser.parse_args()
    os.environ.setdefault("BENCH_DB", "dsar_bench_pipeline")
    port = free_port()
    os.environ["DSAR_PUBLIC_URL"] = f"http://127.0.0.1:{port}"
    os.environ["DSAR_ALLOW_PRIVATE_VENDOR_HOSTS"] = "true"
    env = setup_django()
    env.update(
        DSAR_PUBLIC_URL=os.environ["DSAR_PUBLIC_URL"],
        DSAR_ALLOW_PRIVATE_VENDOR_HOSTS="true",
    )
    procs = Processes(env, Path(env["DSAR_VAR_DIR"]) / "pipeline-logs")
    try:
        info = start_sandbox(procs, Path(env["DSAR_VAR_DIR"]) / "sandbox")
        procs.start(
            "web",
            [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        )
        dpo = fresh_tables()
        configure_accounts(info, salesforce=True)
        worker_log = start_worker(procs, args.poll_interval, args.sync_interval, log="worker")
        print(f"burst: {args.cases} cases…", flush=True)
        before = cpu_seconds(procs)
        pipeline = burst(info, args.cases, dpo, worker_log)
        pipeline["cpu"] = cpu_seconds(procs) - before
        pipeline["tasks"] = task_counts(worker_log)
        print(f"  pipeline {pipeline['total_s']:.1f} s; raw sequence…", flush=True)
        before = cpu_seconds(procs)
        raw = raw_sequence(info, args.cases)
        raw["cpu"] = cpu_seconds(procs) - before
        print(f"  raw {raw['total_s']:.1f} s; callback latency…", flush=True)
        procs.stop("worker")
        fresh_tables()
        configure_accounts(info, salesforce=False)
        # Product defaults: only the callback can make a case finish quickly.
        worker_log = start_worker(procs, 15.0, 60, log="worker-latency")
        latency = callback_latency(info, args.latency_runs, dpo, worker_log)
    finally:
        procs.stop_all()
    title = f"Pipeline, {args.cases} cases"
    report(title, write_report(args, pipeline, raw, latency))


def write_report(
    args: argparse.Namespace,
    pipeline: dict[str, Any],
    raw: dict[str, Any],
    latency: list[float],
) -> list[str]:
    ratio = pipeline["total_s"] / raw["total_s"]
    burst_lat = sorted(pipeline["approve_to_finished"])
    lat = sorted(latency)
    same = pipeline["calls"] == raw["calls"]
    lines = [
        f"- Revision: {git_revision()}",
        "- Processes: sandbox vendors (`python -m sandbox`), Celery worker `--concurrency 2` "
        "with beat on Redis, `manage.py runserver` for callbacks, PostgreSQL.",
        f"- Burst run: DSAR_POLL_INTERVAL={args.poll_interval}, DSAR_SYNC_INTERVAL="
        f"{args.sync_interval}; vendors finish at once (finish_after 0).",
        f"- Targets: ≤ {TARGET_RATIO}× the raw sequence; median ≤ {TARGET_LATENCY_S:.0f} s "
        "from the vendor finishing to the case finished",
        "",
        "| measure | seconds |",
        "|---|---|",
        f"| open {args.cases} cases (services.open_case, bench process) | "
        f"{pipeline['open_s']:.1f} |",
        f"| open → every job awaiting approval (discovery, Qualifio rules) | "
        f"{pipeline['discovery_s']:.1f} |",
        f"| approve all (services.approve_case, bench process) | {pipeline['approve_s']:.1f} |",
        f"| first approval → every case finished | {pipeline['export_s']:.1f} |",
        f"| **pipeline total** (discovery + export) | **{pipeline['total_s']:.1f}** |",
        f"| **raw sequential requests script, same calls** | **{raw['total_s']:.1f}** |",
        "",
        f"- Ratio pipeline / raw: **{ratio:.2f}×** — "
        f"{'met' if ratio <= TARGET_RATIO else 'MISSED'}",
        f"- Burst approve → finished per case (includes queueing behind {args.cases} "
        f"approvals): median {statistics.median(burst_lat):.1f} s, p90 "
        f"{burst_lat[int(len(burst_lat) * 0.9) - 1]:.1f} s, max {burst_lat[-1]:.1f} s",
        f"- Callback latency ({len(lat)} cases one at a time, Qualifio only, vendor finishing "
        f"{FINISH_AFTER_LATENCY:.0f} s after validation, default 15 s poll / 60 s sync): "
        f"median **{statistics.median(lat):.2f} s**, max {lat[-1]:.2f} s after the vendor "
        f"finished — {'met' if statistics.median(lat) <= TARGET_LATENCY_S else 'MISSED'}",
        f"- Worker tasks during the burst: {dict(pipeline['tasks'])} for "
        f"{args.cases * 2} vendor jobs",
        f"- Vendor calls (sandbox log), pipeline vs raw: "
        f"{sum(pipeline['calls'].values())} vs {sum(raw['calls'].values())}"
        + (" — identical by vendor, method and path" if same else ", differing as below"),
    ]
    components = sorted(set(pipeline["cpu"]) | set(raw["cpu"]))
    lines += [
        "",
        "CPU seconds used during each run, by component (2 cores: at most twice the run's "
        "wall time, shown beside the total). Where the total is well under it, the rest is "
        "waiting: round trips to PostgreSQL and Redis, each a wake-up of another process.",
        "",
        "| component | pipeline burst | raw script |",
        "|---|---|---|",
        *(
            f"| {name} | {pipeline['cpu'][name]:.1f} | {raw['cpu'][name]:.1f} |"
            for name in components
        ),
        f"| **total** (wall time × 2 cores) | **{sum(pipeline['cpu'].values()):.1f}** "
        f"({pipeline['total_s'] * 2:.1f}) | **{sum(raw['cpu'].values()):.1f}** "
        f"({raw['total_s'] * 2:.1f}) |",
        f"| per case, all components | {sum(pipeline['cpu'].values()) / args.cases * 1000:.0f} "
        f"ms | {sum(raw['cpu'].values()) / args.cases * 1000:.0f} ms |",
    ]
    if not same:
        lines += ["", "| call | pipeline | raw |", "|---|---|---|"]
        for key in sorted(set(pipeline["calls"]) | set(raw["calls"])):
            lines.append(f"| `{key}` | {pipeline['calls'][key]} | {raw['calls'][key]} |")
    return lines


if __name__ == "__main__":
    main()
