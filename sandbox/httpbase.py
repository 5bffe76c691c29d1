"""HTTP plumbing shared by both fake vendors: server, dispatch, failure modes, control plane.

Each vendor subclass only implements ``route`` (its API) and ``send_error_body`` (its error
format). Everything under ``/__sandbox__/`` is the sandbox's own control plane: identical on
both servers, never subject to failure modes and never recorded as an API call.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, urlsplit

if TYPE_CHECKING:
    from .core import Sandbox

logger = logging.getLogger("sandbox")

MAX_BODY = 1024 * 1024
CONTROL_PREFIX = "/__sandbox__"
HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Service notice</title></head>"
    b"<body><h1>We'll be back soon</h1><p>This page is served by the DSAR sandbox in "
    b"<code>html</code> mode, as a captive portal or maintenance page would be.</p>"
    b"</body></html>\n"
)


class ClientError(Exception):
    """A request the sandbox refuses; carries the status and a vendor error code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class VendorServer(ThreadingHTTPServer):
    """Threaded server whose connection threads ``stop()`` can wake up and join.

    Connection threads are daemons (a forgotten ``stop()`` never blocks interpreter exit), and
    ``socketserver`` does not join daemon threads, so the server keeps its own list.
    """

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        sandbox: Sandbox,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.ssl_context = ssl_context
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._workers: set[threading.Thread] = set()
        super().__init__(address, handler)

    def server_bind(self) -> None:
        """Bind without ``getfqdn`` (a reverse DNS lookup that can stall for seconds)."""
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """One daemon thread per connection, remembered so ``join_workers`` can wait for it."""
        worker = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"sandbox-connection-{client_address[1]}",
            daemon=True,
        )
        with self._connections_lock:
            self._workers = {thread for thread in self._workers if thread.is_alive()}
            self._workers.add(worker)
        worker.start()

    def join_workers(self, timeout: float) -> None:
        """Wait (bounded) for every connection thread to finish."""
        deadline = time.monotonic() + timeout
        with self._connections_lock:
            workers = list(self._workers)
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def track(self, connection: socket.socket) -> None:
        """Remember an open connection."""
        with self._connections_lock:
            self._connections.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        """Forget a closed connection."""
        with self._connections_lock:
            self._connections.discard(connection)

    def close_connections(self) -> None:
        """Wake every handler blocked on an idle keep-alive connection so its thread ends."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client disconnects are routine; anything else is logged, never printed raw."""
        logger.debug("sandbox connection from %s ended with an error", client_address)


class VendorHandler(BaseHTTPRequestHandler):
    """Base request handler; subclasses set ``vendor`` and implement ``route``."""

    protocol_version = "HTTP/1.1"
    server_version = "DSARSandbox/1.0"
    sys_version = ""
    timeout = 30  # idle keep-alive connections are closed after this many seconds
    # Headers and body go out in separate writes; without TCP_NODELAY every response would
    # wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True
    vendor: ClassVar[str] = ""
    json_content_type: ClassVar[str] = "application/json"
    server: VendorServer

    # -- connection lifecycle -------------------------------------------------------------

    def setup(self) -> None:
        """Do the TLS handshake here, in the connection's thread, not in the accept loop."""
        self.tls_failed = False
        self.responded = False
        context = self.server.ssl_context
        if context is not None:
            try:
                self.request.settimeout(self.timeout)
                self.request = context.wrap_socket(self.request, server_side=True)
            except (ssl.SSLError, OSError):
                self.tls_failed = True  # e.g. a client that does not trust the sandbox CA
                return
        self.server.track(self.request)
        super().setup()

    def handle(self) -> None:
        """Serve keep-alive requests unless the TLS handshake failed."""
        if not self.tls_failed:
            with contextlib.suppress(ConnectionError, TimeoutError, ssl.SSLError):
                super().handle()

    def finish(self) -> None:
        """Close streams and, for TLS, the wrapped socket the server does not know about."""
        if self.tls_failed:
            return
        with contextlib.suppress(OSError):
            super().finish()
        self.server.untrack(self.request)
        if self.server.ssl_context is not None:
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_WR)
            self.request.close()

    def version_string(self) -> str:
        """``Server`` header without the Python version."""
        return self.server_version

    @property
    def sandbox(self) -> Sandbox:
        """The shared state of the running sandbox."""
        return self.server.sandbox

    # -- logging --------------------------------------------------------------------------

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Log method, path and status only: query strings carry emails and ids."""
        command = getattr(self, "command", "-")
        path = urlsplit(getattr(self, "path", "")).path
        logger.info("%s %s %s %s", self.vendor, command, path, code)

    def log_message(self, format: str, *args: Any) -> None:
        """Route http.server's own messages to logging instead of stderr."""
        logger.debug("%s: %s", self.vendor, format % args)

    # -- dispatch -------------------------------------------------------------------------

    def do_GET(self) -> None:
        """Dispatch a GET."""
        self._dispatch("GET")

    def do_POST(self) -> None:
        """Dispatch a POST."""
        self._dispatch("POST")

    def do_PUT(self) -> None:
        """Dispatch a PUT."""
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        """Dispatch a PATCH."""
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        """Dispatch a DELETE."""
        self._dispatch("DELETE")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            raise ClientError(411, "LENGTH_REQUIRED", "chunked request bodies are not supported")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            raise ClientError(400, "BAD_REQUEST", "invalid Content-Length") from None
        if length < 0 or length > MAX_BODY:
            raise ClientError(413, "BAD_REQUEST", f"request body larger than {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        path = split.path
        query = {
            key: values[0] for key, values in parse_qs(split.query, keep_blank_values=True).items()
        }
        try:
            body = self._read_body()
        except ClientError as exc:
            self.close_connection = True
            self.send_json(exc.status, {"error": exc.message})
            return
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            self._control(method, path, body)
            return
        self.sandbox.calls.record(self.vendor, method, path)
        self.count_api_call()
        action = self.sandbox.modes.action(self.vendor)
        try:
            if action.kind == "slow":
                self.sandbox.stopping.wait(action.delay)
            elif action.kind == "failing":
                raise ClientError(503, "SERVER_UNAVAILABLE", "Service Unavailable")
            elif action.kind == "flaky":
                raise ClientError(500, "UNKNOWN_EXCEPTION", "Internal Server Error (flaky mode)")
            elif action.kind == "rate_limited":
                self.send_rate_limited(action.retry_after)
                return
            elif action.kind == "html":
                self.send_payload(200, HTML_PAGE, "text/html; charset=utf-8")
                return
            self.route(method, path, query, body)
        except ClientError as exc:
            self.send_error_body(exc.status, exc.code, exc.message)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            self.close_connection = True
        except Exception:
            logger.exception("sandbox %s failed on %s %s", self.vendor, method, path)
            if self.responded:
                self.close_connection = True  # mid-stream: the only honest signal left
            else:
                self.send_error_body(500, "UNKNOWN_EXCEPTION", "sandbox internal error")

    # -- vendor hooks ---------------------------------------------------------------------

    def route(self, method: str, path: str, query: Mapping[str, str], body: bytes) -> None:
        """Answer one API call (subclasses)."""
        raise ClientError(404, "NOT_FOUND", "Not Found")

    def send_error_body(self, status: int, code: str, message: str) -> None:
        """Answer an error in the vendor's format (subclasses)."""
        self.send_json(status, {"message": message})

    def send_rate_limited(self, retry_after: int) -> None:
        """Answer the vendor's rate-limit response (subclasses)."""
        self.send_json(429, {"message": "Too Many Requests"}, {"Retry-After": str(retry_after)})

    def count_api_call(self) -> None:
        """Hook for per-call accounting (Salesforce's API usage counter)."""

    def extra_headers(self) -> Mapping[str, str]:
        """Headers every response of this vendor carries."""
        return {}

    # -- responses ------------------------------------------------------------------------

    def _start(
        self, status: int, content_type: str, length: int, headers: Mapping[str, str] | None
    ) -> None:
        self.responded = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in {**self.extra_headers(), **(headers or {})}.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def send_payload(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a complete in-memory body."""
        self._start(status, content_type, len(body), headers)
        self.wfile.write(body)

    def send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send JSON."""
        body = json.dumps(payload, ensure_ascii=False).encode()
        self.send_payload(status, body, self.json_content_type, headers)

    def send_stream(
        self,
        status: int,
        content_type: str,
        length: int,
        chunks: Iterable[bytes],
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Stream a body of known length chunk by chunk (archives of any size)."""
        self._start(status, content_type, length, headers)
        for chunk in chunks:
            self.wfile.write(chunk)

    def json_body(self, body: bytes) -> Any:
        """Parse a JSON request body or refuse it with the vendor's 400."""
        try:
            return json.loads(body or b"null")
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ClientError(400, "JSON_PARSER_ERROR", "request body is not valid JSON") from None

    # -- control plane --------------------------------------------------------------------

    def _control(self, method: str, path: str, body: bytes) -> None:
        sandbox = self.sandbox
        endpoint = path[len(CONTROL_PREFIX) :].strip("/")
        try:
            payload = self.json_body(body) if method == "POST" else None
            if method == "GET" and endpoint == "info":
                self.send_json(200, sandbox.info())
            elif method == "GET" and endpoint == "calls":
                self.send_json(200, [call._asdict() for call in sandbox.calls.snapshot()])
            elif method == "POST" and endpoint == "reset":
                sandbox.reset()
                self.send_json(200, {"status": "reset"})
            elif endpoint == "mode" and method in ("GET", "POST"):
                if method == "POST":
                    options = _object(payload)
                    vendor = options.pop("vendor", None)
                    mode = options.pop("mode", None)
                    if not isinstance(vendor, str) or not isinstance(mode, str):
                        raise ValueError('body must be {"vendor": ..., "mode": ..., options}')
                    sandbox.modes.set(vendor, mode, **options)
                self.send_json(200, sandbox.modes.to_json())
            elif endpoint == "subjects" and method == "GET":
                self.send_json(200, [subject.to_json() for subject in sandbox.subjects.all()])
            elif endpoint == "subjects" and method == "POST":
                data = _object(payload)
                subject = sandbox.subjects.add(
                    _string(data, "email"),
                    _string(data, "firstName"),
                    _string(data, "lastName"),
                    vendors=data.get("vendors", ("qualifio", "salesforce")),
                    qualifio_profiles=data.get("qualifioProfiles", 1),
                    salesforce_objects=data.get("salesforceObjects", ("Contact",)),
                )
                self.send_json(201, subject.to_json())
            elif endpoint == "config" and method in ("GET", "POST"):
                if method == "POST":
                    sandbox.configure(**_object(payload))
                self.send_json(200, sandbox.options.to_json())
            elif method == "POST" and endpoint == "expire-tokens":
                sandbox.salesforce.expire_tokens()
                self.send_json(200, {"status": "expired"})
            else:
                self.send_json(404, {"error": f"no control endpoint {method} {path}"})
        except ClientError as exc:
            self.send_json(exc.status, {"error": exc.message})
        except (TypeError, ValueError) as exc:
            self.send_json(400, {"error": str(exc)})


def _object(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise ValueError("body must be a JSON object")
    return dict(payload)


def _string(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string")
    return value.strip()
