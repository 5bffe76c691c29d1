"""Public entry point: ``start_sandbox(SandboxConfig(...))`` → a running ``SandboxHandle``.

Tests, the demo script and ``python -m sandbox`` all start the fake vendors through this
module, so they get the same servers, credentials and failure modes.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import TracebackType
from typing import Any

from .core import Sandbox
from .httpbase import VendorServer
from .qualifio import QualifioHandler
from .salesforce import SalesforceHandler
from .state import Call, RuntimeOptions
from .subjects import VENDORS, Subject
from .tls import ensure_key_material

__all__ = ["SandboxConfig", "SandboxHandle", "parse_mode", "start_sandbox"]


@dataclass
class SandboxConfig(RuntimeOptions):
    """How to start the sandbox. Ports 0 pick free ephemeral ports.

    The options that may also change while it runs (finish_after, token_ttl, …) and their
    defaults come from ``RuntimeOptions``.
    """

    qualifio_port: int = 8701
    salesforce_port: int = 8702
    state_dir: Path = Path("var/sandbox")
    #: Initial failure modes, e.g. ``{"qualifio": "flaky", "salesforce": "slow:delay=5"}``.
    modes: Mapping[str, str] = field(default_factory=dict)
    #: Interface to bind; URLs always say 127.0.0.1, the name the certificate covers.
    host: str = "127.0.0.1"

    def runtime_options(self) -> RuntimeOptions:
        """The runtime part of the config, validated as a runtime change would be."""
        return RuntimeOptions().updated(
            **{item.name: getattr(self, item.name) for item in fields(RuntimeOptions)}
        )


def parse_mode(spec: str) -> tuple[str, dict[str, Any]]:
    """``"slow:delay=5"`` → (``"slow"``, ``{"delay": 5.0}``); used by the config and the CLI."""
    mode, _, raw_options = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in raw_options.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"mode option {item!r} must look like key=value")
        try:
            options[key] = int(value) if key == "retry_after" else float(value)
        except ValueError:
            raise ValueError(f"mode option {key} needs a number, got {value!r}") from None
    return mode.strip(), options


class SandboxHandle:
    """A running sandbox: URLs, credentials, controls and ``stop()``."""

    def __init__(
        self,
        sandbox: Sandbox,
        servers: list[VendorServer],
        threads: list[threading.Thread],
    ) -> None:
        self._sandbox = sandbox
        self._servers = servers
        self._threads = threads
        self._stopped = False
        self.qualifio_url: str = sandbox.qualifio_url
        self.salesforce_url: str = sandbox.salesforce_url
        self.ca_file: Path = sandbox.keys.ca_file

    @property
    def credentials(self) -> dict[str, Any]:
        """Per-vendor settings a product account needs (URLs, ids, secrets, key file)."""
        return self._sandbox.credentials()

    @property
    def sandbox(self) -> Sandbox:
        """The shared state, for tests that need to look deeper than the public API."""
        return self._sandbox

    def info(self) -> dict[str, Any]:
        """What ``python -m sandbox`` prints on startup."""
        return self._sandbox.info()

    def calls(self) -> list[Call]:
        """Recorded (vendor, method, path) API calls, plus ``qualifio-callback`` GETs sent."""
        return self._sandbox.calls.snapshot()

    def set_mode(self, vendor: str, mode: str, **opts: Any) -> None:
        """Switch ``vendor`` (``qualifio``, ``salesforce`` or ``all``) to a failure mode."""
        self._sandbox.modes.set(vendor, mode, **opts)

    def add_subject(
        self,
        email: str,
        first_name: str,
        last_name: str,
        *,
        vendors: Iterable[str] = VENDORS,
        qualifio_profiles: int = 1,
        salesforce_objects: Iterable[str] = ("Contact",),
    ) -> Subject:
        """Add (or replace) a data subject; returns it with its Qualifio and Salesforce ids."""
        return self._sandbox.subjects.add(
            email,
            first_name,
            last_name,
            vendors=vendors,
            qualifio_profiles=qualifio_profiles,
            salesforce_objects=salesforce_objects,
        )

    def configure(self, **options: Any) -> None:
        """Change runtime options such as ``finish_after``, ``expire_files`` or ``token_ttl``."""
        self._sandbox.configure(**options)

    def expire_tokens(self) -> None:
        """Invalidate every Salesforce access token issued so far."""
        self._sandbox.salesforce.expire_tokens()

    def reset(self) -> None:
        """Same as ``POST /__sandbox__/reset``."""
        self._sandbox.reset()

    def stop(self) -> None:
        """Stop both servers and background threads; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._sandbox.stopping.set()  # wake requests sleeping in slow mode first
        for server in self._servers:
            server.shutdown()
        for server in self._servers:
            server.close_connections()
            server.server_close()
            server.join_workers(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self._sandbox.close()

    def __enter__(self) -> SandboxHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def start_sandbox(config: SandboxConfig | None = None) -> SandboxHandle:
    """Generate key material, start both vendors on their threads and return a handle."""
    config = config or SandboxConfig()
    keys = ensure_key_material(Path(config.state_dir))
    sandbox = Sandbox(config.runtime_options(), keys)
    servers: list[VendorServer] = []
    try:
        for vendor, spec in config.modes.items():
            mode, options = parse_mode(spec)
            sandbox.modes.set(vendor, mode, **options)
        qualifio_server = VendorServer(
            (config.host, config.qualifio_port), QualifioHandler, sandbox
        )
        servers.append(qualifio_server)
        salesforce_server = VendorServer(
            (config.host, config.salesforce_port),
            SalesforceHandler,
            sandbox,
            ssl_context=_tls_context(keys.server_cert_file, keys.server_key_file),
        )
        servers.append(salesforce_server)
    except BaseException:
        for server in servers:
            server.server_close()
        sandbox.close()
        raise
    sandbox.qualifio_url = f"http://127.0.0.1:{qualifio_server.server_port}"
    sandbox.salesforce_port = salesforce_server.server_port
    sandbox.salesforce_url = f"https://127.0.0.1:{salesforce_server.server_port}"
    threads = [
        threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"sandbox-{name}",
            daemon=True,
        )
        for name, server in (("qualifio", qualifio_server), ("salesforce", salesforce_server))
    ]
    for thread in threads:
        thread.start()
    return SandboxHandle(sandbox, servers, threads)
