"""`pideai-otel demo`: the whole pipeline on the embedded default, with orders for several stores."""

from __future__ import annotations

import argparse
import itertools
import shutil
import sys
import time
from pathlib import Path
from typing import Any

STORES = ("store-caracas", "store-bogota", "store-lima")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo", help="run stand-in, collector and three services; place orders; show how to search them",
        description=__doc__,
    )
    parser.add_argument("--orders", type=_positive, default=9, help="orders to place, spread over the stores (default 9)")
    parser.add_argument("--stores", nargs="+", default=list(STORES), type=_store_id, help="store ids to place orders for")
    parser.add_argument("--keep-running", action="store_true", help="leave everything running until Ctrl-C")
    parser.set_defaults(func=run)


def _store_id(raw: str) -> str:
    if not raw.strip():
        raise argparse.ArgumentTypeError("a store id cannot be empty")
    return raw.strip()


def _positive(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {value}")
    return value


def _command() -> str:
    """How to call pideai-otel again from this shell (the venv may not be on PATH)."""
    here = Path(sys.argv[0])
    on_path = shutil.which("pideai-otel")
    return "pideai-otel" if on_path and Path(on_path).resolve() == here.resolve() else str(here)


def run(args: argparse.Namespace) -> int:
    from pideai_otel.local.standin import DEFAULT_PORT, data_dir, default_db_path

    from pideai_otel.cli import CommandError

    from .stack import DemoStack

    workdir = data_dir() / "demo"
    say = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    say(f"starting stand-in (embedded Better Stack) on 127.0.0.1:{DEFAULT_PORT}, collector, 3 services ...")
    stack = DemoStack(workdir, standin_port=DEFAULT_PORT, standin_db=default_db_path())
    try:
        stack.start()
    except RuntimeError as exc:
        stack.stop()
        raise CommandError(f"the demo could not start: {str(exc).splitlines()[0]} (is another demo or "
                           f"`pideai-otel standin` using port {DEFAULT_PORT}?)") from None
    with stack:
        say(f"collector: gRPC {stack.collector.grpc_endpoint if stack.collector else '-'}; logs in {workdir / 'logs'}")
        placed: list[tuple[str, str, int]] = []
        with __import__("httpx").Client() as client:
            for n, store in zip(range(args.orders), itertools.cycle(args.stores)):
                trace_id, response = stack.place_order(store, f"user-{n % 4 + 1}", client=client, phone="+58 414 555 12 34")
                placed.append((store, trace_id, response.status_code))
                say(f"  order {n + 1:>2} {store:<15} HTTP {response.status_code}  trace {trace_id}")
        for _, trace_id, _ in placed:
            stack.wait_for_trace(trace_id)
        callbacks = stack.report_whatsapp_deliveries(("delivered", "read", "delivered", "failed"))
        say(f"WhatsApp called back {callbacks} delivery statuses; each is logged inside its order's trace")
        store, trace_id, _ = placed[0]
        me = _command()
        say("\nall traces arrived at the stand-in. Search them:")
        say(f"  {me} search trace {trace_id}")
        say(f"  {me} search spans --store-id {store}")
        say(f"  {me} search logs --severity warn")
        say(f"  {me} search sql \"SELECT service, count(*) FROM spans GROUP BY service\"")
        print("\n".join(t for _, t, _ in placed))
        if args.keep_running:
            say("\nrunning; Ctrl-C to stop")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    say(f"stopped. The data stays in {Path(default_db_path())}; search works without the stand-in running.")
    return 0
