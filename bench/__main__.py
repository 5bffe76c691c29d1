"""``python -m bench NAME [options]``: one entry point for the benchmarks in bench/README.md."""

from __future__ import annotations

import runpy
import sys

SCRIPTS = {
    "generate": "bench.generate",
    "admin": "bench.admin_scale",
    "sync": "bench.sync_tick",
    "archive": "bench.archive_stream",
    "pipeline": "bench.pipeline",
    "steps": "bench.pipeline_steps",
}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in SCRIPTS:
        print(f"usage: python -m bench {{{','.join(SCRIPTS)}}} [options]  (see bench/README.md)")
        sys.exit(2)
    module = SCRIPTS[sys.argv.pop(1)]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
