"""`python -m benchmarks [name ...]`: run the named benchmarks (all by default)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = ["provisioning", "bulk", "slack_ack", "webhook_rate", "digest", "reconciler"]


def run(argv: list[str]) -> None:
    """Run each named benchmark module's main(); `name --help` shows its options."""
    names = [arg for arg in argv if not arg.startswith("-")][:1] or BENCHMARKS
    rest = [arg for arg in argv if arg not in names]
    for name in names:
        if name not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        importlib.import_module(f"benchmarks.{name}").main(rest)


run(sys.argv[1:])
