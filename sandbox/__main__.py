"""``python -m sandbox``: run both fake vendors until Ctrl-C or SIGTERM.

Prints one JSON line (URLs, CA file, credentials) on stdout so a demo script or a human can
configure product accounts from it; access logs go to stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from .server import SandboxConfig, parse_mode, start_sandbox
from .state import MODE_VENDORS


def _mode(value: str) -> tuple[str, str]:
    vendor, sep, spec = value.partition("=")
    if not sep or vendor not in (*MODE_VENDORS, "all"):
        raise argparse.ArgumentTypeError(
            "expected VENDOR=MODE[:key=value,...] with VENDOR qualifio, salesforce or all"
        )
    try:
        parse_mode(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return vendor, spec


def build_parser() -> argparse.ArgumentParser:
    """The command line; every option maps to a ``SandboxConfig`` field."""
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Offline Qualifio and Salesforce APIs for DSAR demos and tests.",
    )
    parser.add_argument("--qualifio-port", type=int, default=8701)
    parser.add_argument("--salesforce-port", type=int, default=8702)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind")
    parser.add_argument("--state-dir", type=Path, default=Path("var/sandbox"))
    parser.add_argument(
        "--finish-after", type=float, default=3.0, help="seconds from approval to FINISHED"
    )
    parser.add_argument("--qualifio-auto-approve", action="store_true")
    parser.add_argument("--archive-padding-bytes", type=int, default=0)
    parser.add_argument("--policy-file-padding-bytes", type=int, default=0)
    parser.add_argument("--token-ttl", type=float, default=3600.0)
    parser.add_argument("--expire-files", action="store_true")
    parser.add_argument("--callback-on-error", action="store_true")
    parser.add_argument(
        "--mode",
        type=_mode,
        action="append",
        default=[],
        metavar="VENDOR=MODE",
        help="initial failure mode, e.g. qualifio=flaky or salesforce=slow:delay=5",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start, print the startup line, wait for a signal, stop cleanly."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    modes: dict[str, str] = {}
    for vendor, spec in args.mode:
        for target in MODE_VENDORS if vendor == "all" else (vendor,):
            modes[target] = spec
    config = SandboxConfig(
        qualifio_port=args.qualifio_port,
        salesforce_port=args.salesforce_port,
        host=args.host,
        state_dir=args.state_dir,
        finish_after=args.finish_after,
        qualifio_auto_approve=args.qualifio_auto_approve,
        archive_padding_bytes=args.archive_padding_bytes,
        policy_file_padding_bytes=args.policy_file_padding_bytes,
        token_ttl=args.token_ttl,
        expire_files=args.expire_files,
        callback_on_error=args.callback_on_error,
        modes=modes,
    )
    try:
        handle = start_sandbox(config)
    except (OSError, ValueError) as exc:
        print(f"sandbox: cannot start: {exc}", file=sys.stderr)
        return 2
    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(json.dumps(handle.info()), flush=True)
    try:
        while not done.wait(0.5):
            pass
    finally:
        handle.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
