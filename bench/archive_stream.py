"""Issue 7, part 3: a 1 GiB archive streams to storage in constant memory, at wire speed.

A threaded HTTP server on loopback plays Qualifio: the archive-location call answers a URL
on the same host, and that URL serves 1 GiB generated on the fly (a 1 MiB block repeated,
nothing held in memory). Two child processes download it in turn, each writing to disk:

- product: ``cases.pipeline.store_archive`` for a Qualifio job (connector from the registry:
  ``connectors.http.send`` and ``stream_to``, SHA-256, fsync, move into storage, Archive row);
- baseline: ``requests.get(stream=True)`` and ``iter_content`` into a file, then fsync (the
  product fsyncs too: "on disk" for both when the clock stops); also once without fsync.

Each child resets its peak RSS (``/proc/self/clear_refs``), downloads, and reports how far
VmHWM rose above its RSS before the download, and the throughput. Runs alternate; medians.

    .venv/bin/python -m bench.archive_stream --size-mib 1024
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import ROOT, bench_env, git_revision, report, rss_kib, setup_django

MIB = 1024 * 1024
TARGET_GROWTH_MB = 50.0
TARGET_RATIO = 0.8
RULE_ID = "5f0c0ffee0c0ffee0c0ffee0"
ARCHIVE_KEY = "bench-archive"
BLOCK = os.urandom(MIB)


class FakeQualifio(BaseHTTPRequestHandler):
    """The two calls a Qualifio download makes; the body is produced as it is sent."""

    protocol_version = "HTTP/1.1"
    size = 1024 * MIB

    def do_GET(self) -> None:
        if self.path.startswith(f"/v1/gdpr/rules/{RULE_ID}/archive/"):
            host, port = self.server.server_address[:2]
            body = json.dumps({"url": f"http://{host}:{port}/v1/archive/blob"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/v1/archive/blob"):
            self.send_response(200)
            self.send_header("Content-Type", "application/zip")
            self.send_header("Content-Length", str(self.size))
            self.end_headers()
            view = memoryview(BLOCK)
            left = self.size
            while left:
                n = min(left, MIB)
                self.wfile.write(view[:n])
                left -= n
            return
        self.send_error(404)

    def log_message(self, format: str, *args: Any) -> None:
        return


def serve(size: int) -> ThreadingHTTPServer:
    FakeQualifio.size = size
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeQualifio)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def reset_peak() -> None:
    """Make VmHWM start again from the current RSS (Linux: write 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


class ThreadedSink:
    """Proposed ``cases.pipeline._HashingSink`` (``--variant threaded-sink``).

    Writing to the file and hashing (both release the GIL for large buffers) run on a
    second thread while the first keeps receiving. The queue holds at most 4 chunks (4 MiB
    at the connectors' 1 MiB chunk size), so memory stays bounded. ``store_archive`` would
    call ``sink.finish()`` right after ``connector.download`` (here: a wrapper does).
    """

    original: Any = None  # the pipeline's own _HashingSink, for its lease renewal

    def __init__(self, fh: Any, job: Any) -> None:
        import hashlib
        import queue

        self._lease = self.original(_NullFile(), job)  # keeps the lease renewal as it is
        self.fh, self.job = fh, job
        self.sha256 = hashlib.sha256()
        self.size = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (chunk := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self.fh.write(chunk)
                    self.sha256.update(chunk)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc

    def write(self, chunk: bytes) -> int:
        if self._error is not None:
            raise self._error
        self._queue.put(chunk)
        self.size += len(chunk)
        self._lease.write(b"")  # renew the lease on the same schedule
        return len(chunk)

    def finish(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if self._error is not None:
            raise self._error


class _NullFile:
    def write(self, chunk: bytes) -> int:
        return len(chunk)


def child_product(base_url: str, variant: str = "current") -> dict[str, Any]:
    """store_archive for a Qualifio job, exactly as the pipeline's download step runs it."""
    setup_django()
    if variant == "threaded-sink":
        import cases.pipeline

        ThreadedSink.original = cases.pipeline._HashingSink
        cases.pipeline._HashingSink = ThreadedSink  # type: ignore[misc,assignment]
    from django.utils import timezone

    from cases.models import Archive, Case, VendorJob
    from cases.pipeline import store_archive
    from connectors import registry
    from connectors.base import ArchiveRef
    from connectors.models import Vendor, VendorAccount

    Archive.objects.all().delete()
    VendorJob.objects.all().delete()
    Case.objects.all().delete()
    account, _ = VendorAccount.objects.update_or_create(
        name="Qualifio archive bench",
        defaults={
            "vendor": Vendor.QUALIFIO,
            "base_url": base_url,
            "client_id": "2449",
            "api_token": "bench-token",
            "default_dpo_id": "4242",
            "is_active": False,
        },
    )
    case = Case.objects.create(
        reference="DSAR-2026-900001",
        email="archive@example.org",
        due_on=timezone.localdate(),
    )
    job = VendorJob.objects.create(
        case=case, account=account, step=VendorJob.Step.DOWNLOAD, state={"rule_id": RULE_ID}
    )
    job = VendorJob.objects.select_related("case", "account").get(pk=job.pk)
    connector = registry.connector_for(job.account)
    if variant == "threaded-sink":
        download = connector.download

        def download_then_finish(state: Any, archive_ref: Any, sink: Any) -> Any:
            info = download(state, archive_ref, sink)
            sink.finish()
            return info

        connector.download = download_then_finish  # type: ignore[method-assign]
    ref = ArchiveRef(key=ARCHIVE_KEY, filename="qualifio-bench.zip")
    rss_before, _ = rss_kib()
    reset_peak()
    start = time.perf_counter()
    archive = store_archive(job, connector, ref)
    seconds = time.perf_counter() - start
    _, peak = rss_kib()
    path = Path(archive.file.path)
    result = {"bytes": archive.size, "on_disk": path.stat().st_size, "seconds": seconds}
    path.unlink()
    return {**result, "rss_before_kib": rss_before, "peak_kib": peak}


def child_requests(base_url: str, directory: str, *, durable: bool = True) -> dict[str, Any]:
    """The floor: requests streaming the same body straight into a file.

    ``durable`` ends with an fsync, as the product does, so both have the bytes on disk when
    the clock stops; without it the file may still be in the page cache (and, unlinked right
    after, never reach the disk at all): reported, but not the fair comparison.
    """
    import requests

    url = f"{base_url}/v1/archive/blob"
    target = Path(directory) / "baseline-download.bin"
    rss_before, _ = rss_kib()
    reset_peak()
    start = time.perf_counter()
    written = 0
    with requests.get(url, stream=True, timeout=(5, 30)) as response, target.open("wb") as fh:
        response.raise_for_status()
        for chunk in response.iter_content(chunk_size=MIB):
            fh.write(chunk)
            written += len(chunk)
        if durable:
            fh.flush()
            os.fsync(fh.fileno())
    seconds = time.perf_counter() - start
    _, peak = rss_kib()
    on_disk = target.stat().st_size
    target.unlink()
    return {
        "bytes": written,
        "on_disk": on_disk,
        "seconds": seconds,
        "rss_before_kib": rss_before,
        "peak_kib": peak,
    }


def run_child(kind: str, base_url: str, env: dict[str, str], variant: str) -> dict[str, Any]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.archive_stream",
            "--child",
            kind,
            "--url",
            base_url,
            "--variant",
            variant,
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict[str, Any]]) -> dict[str, float]:
    growth = [(r["peak_kib"] - r["rss_before_kib"]) / 1024 for r in runs]
    speed = [r["bytes"] / MIB / r["seconds"] for r in runs]
    return {
        "growth_mb": statistics.median(growth),
        "growth_max_mb": max(growth),
        "mib_s": statistics.median(speed),
        "range": f"{min(speed):.0f}–{max(speed):.0f}",
        "seconds": statistics.median(r["seconds"] for r in runs),
        "rss_before_mb": statistics.median(r["rss_before_kib"] / 1024 for r in runs),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--child", choices=("product", "requests", "requests-cache"), help=argparse.SUPPRESS
    )
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument(
        "--variant",
        choices=("current", "threaded-sink"),
        default="current",
        help="threaded-sink: the product with the proposed ThreadedSink patched in",
    )
    args = parser.parse_args()
    os.environ.setdefault("BENCH_DB", "dsar_bench_archive")
    if args.child == "product":
        print(json.dumps(child_product(args.url, args.variant)))
        return
    if args.child in ("requests", "requests-cache"):
        durable = args.child == "requests"
        print(json.dumps(child_requests(args.url, bench_env()["DSAR_VAR_DIR"], durable=durable)))
        return

    env = setup_django()
    env["DSAR_ALLOW_PRIVATE_VENDOR_HOSTS"] = "true"  # the fake vendor is on loopback
    size = args.size_mib * MIB
    server = serve(size)
    base_url = f"http://127.0.0.1:{server.server_address[1]}"
    kinds = ["product", "requests", "requests-cache"]
    results: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    try:
        for index in range(args.runs):
            for kind in kinds[index % 3 :] + kinds[: index % 3]:  # rotate who goes first
                os.sync()  # start each download with no dirty pages left by the previous one
                result = run_child(kind, base_url, env, args.variant)
                if result["bytes"] != size or result["on_disk"] != size:
                    raise RuntimeError(f"{kind} wrote {result['on_disk']} of {size} bytes")
                results[kind].append(result)
                print(
                    f"  {kind}: {result['bytes'] / MIB / result['seconds']:.0f} MiB/s", flush=True
                )
    finally:
        server.shutdown()
    title = f"Archive streaming, {args.size_mib:,} MiB ({args.variant})"
    report(title, write_report(args, results))


def write_report(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> list[str]:
    mine, floor = summarise(results["product"]), summarise(results["requests"])
    cache = summarise(results["requests-cache"])
    ratio = mine["mib_s"] / floor["mib_s"]
    memory_ok = mine["growth_max_mb"] <= TARGET_GROWTH_MB
    return [
        f"- Revision: {git_revision()}",
        f"- Variant: {args.variant}; files written under {bench_env()['DSAR_VAR_DIR']}",
        f"- {args.size_mib:,} MiB served on loopback by a threaded http.server generating the "
        f"body; {args.runs} alternating runs per side, each in a fresh child process; medians.",
        "- Peak RSS growth: VmHWM after the download minus VmRSS before it (peak reset with "
        "/proc/self/clear_refs).",
        f"- Targets: ≤ {TARGET_GROWTH_MB:.0f} MB growth, ≥ {TARGET_RATIO}× the bare requests "
        "throughput",
        "",
        "| download | MiB/s median (range) | seconds | RSS before MiB | peak growth MiB (max) |",
        "|---|---|---|---|---|",
        f"| product `store_archive` (Qualifio connector, SHA-256, fsync, move) | "
        f"{mine['mib_s']:.0f} ({mine['range']}) | {mine['seconds']:.2f} | "
        f"{mine['rss_before_mb']:.0f} | "
        f"{mine['growth_mb']:.1f} ({mine['growth_max_mb']:.1f}) |",
        f"| baseline `requests` stream to a file, fsync | {floor['mib_s']:.0f} "
        f"({floor['range']}) | "
        f"{floor['seconds']:.2f} | {floor['rss_before_mb']:.0f} | "
        f"{floor['growth_mb']:.1f} ({floor['growth_max_mb']:.1f}) |",
        f"| (for reference) same without fsync: page cache | {cache['mib_s']:.0f} "
        f"({cache['range']}) | "
        f"{cache['seconds']:.2f} | {cache['rss_before_mb']:.0f} | "
        f"{cache['growth_mb']:.1f} ({cache['growth_max_mb']:.1f}) |",
        "",
        f"- Throughput ratio (product / baseline with fsync): **{ratio:.2f}×** — "
        f"{'met' if ratio >= TARGET_RATIO else 'MISSED'}; against the page-cache-only "
        f"stream: {mine['mib_s'] / cache['mib_s']:.2f}×",
        f"- Peak RSS growth of the product download: **{mine['growth_max_mb']:.1f} MiB** "
        f"(worst of {args.runs}) — {'met' if memory_ok else 'MISSED'}",
    ]


if __name__ == "__main__":
    main()
