"""Shared, thread-safe state of a running sandbox: options, failure modes, call log, timers.

Both fake vendors run in one process and share this object, so one control request
(``/__sandbox__/...``) or one ``handle.set_mode(...)`` call acts on everything consistently.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, NamedTuple

logger = logging.getLogger("sandbox")

MODES = ("normal", "slow", "failing", "rate_limited", "flaky", "html")
MODE_VENDORS = ("qualifio", "salesforce")


class Call(NamedTuple):
    """One recorded API call: vendor, HTTP method, path without the query string."""

    vendor: str
    method: str
    path: str


@dataclass
class RuntimeOptions:
    """Behaviour that tests and demos may change while the sandbox runs."""

    finish_after: float = 3.0
    qualifio_auto_approve: bool = False
    archive_padding_bytes: int = 0
    policy_file_padding_bytes: int = 0
    token_ttl: float = 3600.0
    expire_files: bool = False
    callback_on_error: bool = False
    callback_timeout: float = 2.0

    def updated(self, **values: Any) -> RuntimeOptions:
        """A copy with ``values`` applied; unknown names or wrong types raise ValueError."""
        known = {item.name: item.type for item in fields(self)}
        clean: dict[str, Any] = {}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown option {name!r}; known: {sorted(known)}")
            current = getattr(self, name)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be a boolean")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number")
            elif value < 0:
                raise ValueError(f"{name} must not be negative")
            elif isinstance(current, int) and not isinstance(value, int):
                raise ValueError(f"{name} must be an integer")
            clean[name] = value
        return replace(self, **clean)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for ``/__sandbox__/config``."""
        return asdict(self)


@dataclass
class VendorMode:
    """The failure mode of one vendor and its options."""

    mode: str = "normal"
    delay: float = 2.0
    retry_after: int = 1
    calls: int = 0  # API calls seen since the mode was set (drives ``flaky``)


class Action(NamedTuple):
    """What the failure mode says to do with the current API call."""

    kind: str  # normal | slow | failing | rate_limited | flaky | html
    delay: float = 0.0
    retry_after: int = 1


class ModeBoard:
    """Per-vendor failure modes, switchable at runtime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._modes = {vendor: VendorMode() for vendor in MODE_VENDORS}

    def set(self, vendor: str, mode: str, **options: Any) -> None:
        """Switch ``vendor`` (or ``all``) to ``mode``; options: ``delay``, ``retry_after``."""
        if vendor not in (*MODE_VENDORS, "all"):
            raise ValueError(f"vendor must be one of {[*MODE_VENDORS, 'all']}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)}")
        unknown = set(options) - {"delay", "retry_after"}
        if unknown:
            raise ValueError(f"unknown mode options {sorted(unknown)}; known: delay, retry_after")
        delay = options.get("delay", 2.0)
        retry_after = options.get("retry_after", 1)
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            raise ValueError("delay must be a non-negative number of seconds")
        if isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0:
            raise ValueError("retry_after must be a non-negative integer")
        targets = MODE_VENDORS if vendor == "all" else (vendor,)
        with self._lock:
            for target in targets:
                self._modes[target] = VendorMode(mode, float(delay), retry_after)

    def action(self, vendor: str) -> Action:
        """Count one API call and say how the failure mode wants it answered."""
        with self._lock:
            state = self._modes[vendor]
            state.calls += 1
            if state.mode == "flaky":
                # The 1st, 3rd, 5th… call after switching fails; the next one recovers.
                return Action("flaky" if state.calls % 2 == 1 else "normal")
            return Action(state.mode, state.delay, state.retry_after)

    def reset(self) -> None:
        """Everything back to ``normal``."""
        with self._lock:
            self._modes = {vendor: VendorMode() for vendor in MODE_VENDORS}

    def to_json(self) -> dict[str, Any]:
        """Current modes for ``GET /__sandbox__/mode``."""
        with self._lock:
            return {
                vendor: {"mode": m.mode, "delay": m.delay, "retry_after": m.retry_after}
                for vendor, m in self._modes.items()
            }


class CallLog:
    """Every API call the sandbox answered (and every callback it sent), in order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []

    def record(self, vendor: str, method: str, path: str) -> None:
        """Append one call."""
        with self._lock:
            self._calls.append(Call(vendor, method, path))

    def snapshot(self) -> list[Call]:
        """A copy, safe to iterate while requests keep arriving."""
        with self._lock:
            return list(self._calls)

    def clear(self) -> None:
        """Forget everything (``/__sandbox__/reset``)."""
        with self._lock:
            self._calls.clear()


class Scheduler:
    """One background thread that runs jobs at a due time.

    Rules and policy files change state on a timer, not lazily when polled, because the real
    vendors finish work on their own and call back; a lazy model would never send callbacks.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._counter = itertools.count()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="sandbox-scheduler", daemon=True)
        self._thread.start()

    def call_later(self, delay: float, job: Callable[[], None]) -> None:
        """Run ``job`` on the scheduler thread ``delay`` seconds from now."""
        with self._cond:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._counter), job))
            self._cond.notify()

    def clear(self) -> None:
        """Drop pending jobs."""
        with self._cond:
            self._heap.clear()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    if self._heap and self._heap[0][0] <= now:
                        break
                    timeout = self._heap[0][0] - now if self._heap else None
                    self._cond.wait(timeout)
                if self._stopped:
                    return
                _, _, job = heapq.heappop(self._heap)
            try:
                job()
            except Exception:
                logger.exception("sandbox scheduled job failed")

    def stop(self) -> None:
        """Stop the thread; pending jobs are dropped."""
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(timeout=5)


class CallbackSender:
    """Sends Qualifio callback GETs from its own thread so a slow receiver delays nothing else."""

    def __init__(self, calls: CallLog, timeout: Callable[[], float]) -> None:
        self._calls = calls
        self._timeout = timeout
        self._queue: queue.Queue[str | None] = queue.Queue()
        # Never route callbacks through a proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self._thread = threading.Thread(target=self._run, name="sandbox-callbacks", daemon=True)
        self._thread.start()

    def send(self, url: str) -> None:
        """Queue one GET of ``url``; failures are ignored, as a vendor would."""
        self._queue.put(url)

    def _run(self) -> None:
        while (url := self._queue.get()) is not None:
            self._calls.record("qualifio-callback", "GET", url)
            try:
                # The URL was validated as http(s) when the rule was created.
                with self._opener.open(url, timeout=self._timeout()) as response:
                    response.read(65536)
            except Exception as exc:  # any failure of the receiver is its own problem
                logger.info("sandbox callback to %s failed: %s", url, exc)

    def stop(self) -> None:
        """Finish the callback in flight (bounded by its timeout) and stop."""
        self._queue.put(None)
        self._thread.join(timeout=10)
