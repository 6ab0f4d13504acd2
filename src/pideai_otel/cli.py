"""The `pideai-otel` command: collector, local stand-in, search, Sentry bridge, demo.

Each area registers its own subcommands (a `register(subparsers)` function next to the code it
drives), so this module stays a dispatcher. Human text goes to stderr, machine output to stdout.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that contribute subcommands, imported lazily so `--help` stays fast.
_AREAS = (
    "pideai_otel.collector",
    "pideai_otel.local.cli",
    "pideai_otel.sentry",
    "pideai_otel.demo.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pideai-otel",
        description="Observability kit for PideAI: collector, local Better Stack stand-in, search, demo.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _AREAS:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CommandError as exc:
        print(f"pideai-otel: {exc}", file=sys.stderr)
        return 2


class CommandError(Exception):
    """A failure the user can fix; printed as one line, exit code 2."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
