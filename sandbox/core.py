"""The ``Sandbox`` object: every piece of shared state both fake vendors read and change."""

from __future__ import annotations

import threading
from typing import Any

from . import qualifio, salesforce
from .qualifio import QualifioState
from .salesforce import SalesforceState
from .state import CallbackSender, CallLog, ModeBoard, RuntimeOptions, Scheduler
from .subjects import SubjectDirectory
from .tls import KeyMaterial


class Sandbox:
    """State shared by the two servers, the scheduler and the callback sender."""

    def __init__(self, options: RuntimeOptions, keys: KeyMaterial) -> None:
        self.initial_options = options
        # Replaced wholesale on change, so a reader always sees one consistent set.
        self.options = options
        self.keys = keys
        self.subjects = SubjectDirectory()
        self.modes = ModeBoard()
        self.calls = CallLog()
        self.stopping = threading.Event()
        self.scheduler = Scheduler()
        self.callbacks = CallbackSender(self.calls, lambda: self.options.callback_timeout)
        self.qualifio = QualifioState(self)
        self.salesforce = SalesforceState(self)
        self.qualifio_url = ""
        self.salesforce_url = ""
        self.salesforce_port = 0

    def configure(self, **values: Any) -> None:
        """Change runtime options (``finish_after``, ``expire_files``, ``token_ttl``…)."""
        self.options = self.options.updated(**values)

    def reset(self) -> None:
        """Forget rules, archives, policy files, calls and modes; restore startup options."""
        self.scheduler.clear()
        self.qualifio.reset()
        self.salesforce.reset()
        self.modes.reset()
        self.calls.clear()
        self.options = self.initial_options

    def salesforce_audiences(self) -> list[str]:
        """JWT ``aud`` values the token endpoint accepts (the base URL, by IP or by name)."""
        return [self.salesforce_url, f"https://localhost:{self.salesforce_port}"]

    def credentials(self) -> dict[str, Any]:
        """Everything a product account needs to talk to the sandbox."""
        return {
            "qualifio": {
                "base_url": self.qualifio_url,
                "client_id": qualifio.CLIENT_ID,
                "api_token": qualifio.API_TOKEN,
                "dpo_id": qualifio.DPO_ID,
            },
            "salesforce": {
                "instance_url": self.salesforce_url,
                "login_url": self.salesforce_url,
                "token_url": f"{self.salesforce_url}/services/oauth2/token",
                "consumer_key": salesforce.CONSUMER_KEY,
                "consumer_secret": salesforce.CONSUMER_SECRET,
                "username": salesforce.USERNAME,
                "policy_name": salesforce.POLICY_NAME,
                "jwt_private_key_file": str(self.keys.jwt_private_key_file),
                "jwt_audience": self.salesforce_url,
                "api_version": salesforce.DEFAULT_API_VERSION,
                "ca_file": str(self.keys.ca_file),
            },
        }

    def info(self) -> dict[str, Any]:
        """The startup line of ``python -m sandbox`` (also ``GET /__sandbox__/info``)."""
        return {
            "qualifio_url": self.qualifio_url,
            "salesforce_url": self.salesforce_url,
            "ca_file": str(self.keys.ca_file),
            "credentials": self.credentials(),
        }

    def close(self) -> None:
        """Stop background threads; wakes any request sleeping in ``slow`` mode."""
        self.stopping.set()
        self.scheduler.stop()
        self.callbacks.stop()
