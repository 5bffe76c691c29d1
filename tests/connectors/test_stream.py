"""connectors.http.stream_to over a real loopback socket: whole bodies, limits, errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import responses

from connectors import base, http

BODY = os.urandom(5 * http.CHUNK_SIZE + 12345)  # several chunks and a partial one


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path == "/gzip":
            self._send(gzip.compress(BODY), {"Content-Encoding": "gzip"})
        elif self.path == "/chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for start in range(0, len(BODY), 700_000):
                piece = BODY[start : start + 700_000]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/cut":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[: http.CHUNK_SIZE])
            self.close_connection = True
        else:
            self._send(BODY, {})

    def _send(self, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


class HashingSink:
    """Like the pipeline's sink: hashes and counts."""

    def __init__(self) -> None:
        self.sha256, self.size = hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return len(data)


def get(url: str) -> requests.Response:
    return http.build_session().get(url, stream=True, timeout=http.DEFAULT_TIMEOUT)


@pytest.mark.parametrize("path", ["/plain", "/chunked", "/gzip"])
def test_body_arrives_whole_and_in_order(server, path) -> None:
    """gzip: Content-Length is the encoded size, which must not fail the decoded count."""
    sink = HashingSink()
    written = http.stream_to(get(server + path), sink, vendor="Test", max_bytes=None)
    assert written == sink.size == len(BODY)
    assert sink.sha256.hexdigest() == hashlib.sha256(BODY).hexdigest()


def test_connection_cut_short_is_an_interrupted_download(server) -> None:
    with pytest.raises(base.VendorUnavailableError, match="Test archive download was"):
        http.stream_to(get(server + "/cut"), HashingSink(), vendor="Test", max_bytes=None)


def test_over_the_limit_midway_is_refused(server) -> None:
    response = get(server + "/chunked")  # no Content-Length: only counting can catch it
    with pytest.raises(base.DownloadRefusedError, match="exceeds the 2097152-byte limit"):
        http.stream_to(response, HashingSink(), vendor="Test", max_bytes=2 * http.CHUNK_SIZE)


def test_announced_size_over_the_limit_is_refused_before_reading(server) -> None:
    sink = HashingSink()
    with pytest.raises(base.DownloadRefusedError, match="over the 1000-byte limit"):
        http.stream_to(get(server + "/plain"), sink, vendor="Test", max_bytes=1000)
    assert sink.size == 0


def test_a_failing_sink_is_not_blamed_on_the_vendor(server) -> None:
    class FullDisk(HashingSink):
        def write(self, data: bytes) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        http.stream_to(get(server + "/plain"), FullDisk(), vendor="Test", max_bytes=None)


def test_file_sink_gets_the_exact_bytes(server, tmp_path) -> None:
    target = tmp_path / "archive.zip"
    with target.open("wb") as fh:
        http.stream_to(get(server + "/plain"), fh, vendor="Test", max_bytes=None)
    assert target.read_bytes() == BODY


def test_in_memory_sink_under_responses() -> None:
    with responses.RequestsMock() as rsps:
        rsps.get("https://vendor.example/archive", body=BODY[:300_000])
        sink = io.BytesIO()
        response = get("https://vendor.example/archive")
        assert http.stream_to(response, sink, vendor="Test", max_bytes=None) == 300_000
    assert sink.getvalue() == BODY[:300_000]
