"""The one small interface every vendor connector implements.

The case pipeline (``cases.pipeline``) only ever talks to this interface. A connector is
stateless between calls: everything it needs to resume after a crash lives in a JSON-able
``state`` dict that the pipeline persists on the vendor job. A connector mutates ``state`` in
place and calls ``checkpoint(state)`` right after every vendor call that cannot safely be
repeated (creating a rule, executing a portability request), so a worker killed on the next
line resumes from the database instead of calling the vendor a second time.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO, ClassVar

State = dict[str, Any]
Checkpoint = Callable[[State], None]


class ConnectorError(Exception):
    """A vendor call failed. ``message`` is safe to show on the case: no secrets, no PII."""

    #: The same call may succeed later (the pipeline reschedules instead of failing the case).
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class AuthenticationError(ConnectorError):
    """Credentials rejected (401/403 or an OAuth error): an operator must fix the account."""


class NotFoundError(ConnectorError):
    """The vendor does not know the object (404)."""


class RateLimitedError(ConnectorError):
    """The vendor asked us to slow down (429, Salesforce REQUEST_LIMIT_EXCEEDED)."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class VendorUnavailableError(ConnectorError):
    """5xx, timeout or connection failure that outlived the in-process retries."""

    retryable = True


class VendorError(ConnectorError):
    """The vendor refused the request (other 4xx) or reported a failure of its own."""


class MalformedResponseError(ConnectorError):
    """The vendor answered something we cannot read (HTML instead of JSON, missing fields)."""


class DownloadRefusedError(ConnectorError):
    """An archive location we will not fetch: foreign host, private address, too large."""


@dataclass(frozen=True)
class Subject:
    """The data subject as the vendors need to know them."""

    reference: str
    email: str
    first_name: str = ""
    last_name: str = ""
    salesforce_id: str = ""
    justification: str = ""


@dataclass(frozen=True)
class Match:
    """One record a vendor holds about the subject, shown to the DPO before approval."""

    vendor_id: str
    name: str = ""
    email: str = ""
    #: Vendor-specific description: Qualifio's trigramme, Salesforce's object type.
    detail: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Match:
        return cls(**{k: str(data.get(k) or "") for k in ("vendor_id", "name", "email", "detail")})


class Phase(enum.StrEnum):
    RUNNING = "running"
    READY = "ready"
    FAILED = "failed"


@dataclass(frozen=True)
class ArchiveRef:
    """Where one finished archive can be fetched; ``key`` is unique within the job."""

    key: str
    filename: str


@dataclass(frozen=True)
class PollResult:
    phase: Phase
    #: Readable vendor status for operators, e.g. "rule APPROVED" or "policy file In Progress".
    detail: str
    archives: list[ArchiveRef] = field(default_factory=list)


@dataclass(frozen=True)
class DownloadInfo:
    content_type: str
    #: Size announced by the vendor (Content-Length), if any; the pipeline measures the real size.
    announced_size: int | None = None


class Connector(abc.ABC):
    """One vendor account. Every method is one step of the export; each may raise ConnectorError."""

    vendor: ClassVar[str]

    def external_reference(self, state: State) -> str:
        """The vendor's id for this export (rule id, policy file id), shown and searchable."""
        return ""

    @abc.abstractmethod
    def discover(self, subject: Subject) -> list[Match]:
        """Find the records the vendor holds about the subject. Read-only: safe to repeat."""

    @abc.abstractmethod
    def prepare(
        self,
        subject: Subject,
        matches: list[Match],
        state: State,
        *,
        callback_url: str,
        checkpoint: Checkpoint,
    ) -> str | None:
        """Create at the vendor what must exist before approval (Qualifio: the export rule).

        Must be resumable: if ``state`` shows the work was done, do nothing. Returns a short
        note for the audit trail, or None.
        """

    @abc.abstractmethod
    def start(
        self,
        subject: Subject,
        matches: list[Match],
        state: State,
        *,
        approver_id: str | None,
        checkpoint: Checkpoint,
    ) -> str | None:
        """Start the export after the DPO approved (Qualifio: validate; Salesforce: execute).

        Must never start the same export twice: consult and checkpoint ``state``. Returns a
        short note for the audit trail (e.g. "validate skipped: rule auto-approved").
        """

    @abc.abstractmethod
    def poll(self, state: State, *, checkpoint: Checkpoint) -> PollResult:
        """Ask the vendor how the export is going. Read-only at the vendor: safe to repeat."""

    @abc.abstractmethod
    def download(self, state: State, archive: ArchiveRef, sink: BinaryIO) -> DownloadInfo:
        """Stream one archive into ``sink`` chunk by chunk (never whole in memory).

        Must refuse a location that is not on the account's own host.
        """
