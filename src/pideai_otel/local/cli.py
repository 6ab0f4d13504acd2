"""`pideai-otel standin` and `pideai-otel search`: run the local stand-in, search what it stored."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pideai_otel.cli import CommandError

DEFAULT_URL = "http://127.0.0.1:4390"


def _data_db() -> Path:
    from pideai_otel.local.standin import default_db_path

    return default_db_path()


def register(subparsers: Any) -> None:
    _register_standin(subparsers)
    _register_search(subparsers)


# --- standin -------------------------------------------------------------------------------


def _register_standin(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "standin",
        help="run the local Better Stack stand-in (OTLP/HTTP ingest into SQLite)",
        description=(
            "Run the local Better Stack stand-in: OTLP/HTTP on /v1/traces, /v1/logs, /v1/metrics, "
            "one bearer token per source, stored in SQLite, searchable with `pideai-otel search`."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument(
        "--port", type=int, default=4390, help="port, 0 for a free one (default: %(default)s)"
    )
    parser.add_argument(
        "--db", type=Path, default=None, help="SQLite file (default: $PIDEAI_OTEL_DATA_DIR/standin.sqlite3)"
    )
    parser.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=TOKEN",
        help="a source and its bearer token; repeat for more (default: default=$PIDEAI_STANDIN_TOKEN)",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=10 * 1024 * 1024,
        help="largest request body accepted, compressed (default: %(default)s, Better Stack's limit)",
    )
    parser.set_defaults(func=run_standin)


def parse_sources(values: Sequence[str]) -> dict[str, str]:
    sources: dict[str, str] = {}
    for value in values:
        name, sep, token = value.partition("=")
        if not sep or not name or not token:
            raise CommandError(f"--source {value!r} is not NAME=TOKEN; e.g. --source default=local-dev-token")
        if name in sources:
            raise CommandError(f"--source {name} is given twice; give each source once")
        if token in sources.values():
            raise CommandError(f"--source {name} reuses another source's token; the token picks the source")
        sources[name] = token
    return sources


def run_standin(args: argparse.Namespace) -> int:
    from pideai_otel.local import standin

    sources = parse_sources(args.source) or standin.default_sources()
    if args.max_body_bytes <= 0:
        raise CommandError(f"--max-body-bytes {args.max_body_bytes} must be positive")
    db_path = args.db or standin.default_db_path()
    try:
        standin.serve(
            host=args.host,
            port=args.port,
            db_path=db_path,
            sources=sources,
            max_body_bytes=args.max_body_bytes,
        )
    except OSError as exc:
        raise CommandError(
            f"cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
            "stop what holds the port or pass --port"
        ) from None
    return 0


# --- search --------------------------------------------------------------------------------


def _register_search(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "search",
        help="search traces, logs and spans stored by the local stand-in",
        description=(
            "Search what the local stand-in stored: through a running stand-in's /query at --url, "
            "else by opening its database file read-only."
        ),
    )
    kinds = parser.add_subparsers(dest="search_kind", required=True, metavar="KIND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=os.environ.get("PIDEAI_STANDIN_URL") or DEFAULT_URL,
        help="a running stand-in (default: $PIDEAI_STANDIN_URL or %(default)s)",
    )
    common.add_argument(
        "--db",
        type=Path,
        default=None,
        help="database file if no stand-in answers (default: $PIDEAI_OTEL_DATA_DIR/standin.sqlite3)",
    )
    common.add_argument("--json", action="store_true", help="machine output (JSON) on stdout")

    trace = kinds.add_parser("trace", parents=[common], help="one trace as a tree of spans with their logs")
    trace.add_argument("trace_id", help="32 hex digits")
    trace.set_defaults(func=run_search_trace)

    filters = argparse.ArgumentParser(add_help=False)
    filters.add_argument("--store-id", help="only this store")
    filters.add_argument("--user-id", help="only this user")
    filters.add_argument("--order-id", help="only this order")
    filters.add_argument("--service", help="only this service (service.name)")
    filters.add_argument("--trace-id", help="only this trace")
    filters.add_argument("--source", help="only this stand-in source (e.g. default, errors)")
    filters.add_argument(
        "--since", help="from this time: ISO 8601 (UTC if no offset) or relative (15m, 2h, 1d)"
    )
    filters.add_argument("--until", help="up to this time: ISO 8601 or relative")
    filters.add_argument("--text", help="text contained in the body / name / attributes")
    filters.add_argument(
        "--limit", type=int, default=100, help="at most this many, the most recent (default: %(default)s)"
    )

    logs = kinds.add_parser("logs", parents=[common, filters], help="log records matching filters")
    logs.add_argument("--severity", help="minimum level: trace, debug, info, warn, error, fatal")
    logs.set_defaults(func=run_search_logs)

    spans = kinds.add_parser("spans", parents=[common, filters], help="spans matching filters")
    spans.add_argument("--status", help="span status: unset, ok, error")
    spans.set_defaults(func=run_search_spans)

    sql = kinds.add_parser("sql", parents=[common], help="one read-only SQL statement over the tables")
    sql.add_argument("query", help='e.g. "SELECT service, count(*) FROM spans GROUP BY 1"')
    sql.set_defaults(func=run_search_sql)


def _searcher(args: argparse.Namespace) -> Any:
    from pideai_otel.local import search

    try:
        return search.connect(url=args.url, db_path=args.db or _data_db())
    except search.SearchError as exc:
        raise CommandError(str(exc)) from None


def _print_json(value: Any) -> None:
    _emit(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _emit(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # Output piped into `head` and the reader left: not an error. Point stdout at devnull
        # so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def run_search_trace(args: argparse.Namespace) -> int:
    from pideai_otel.local import search

    with _searcher(args) as searcher:
        try:
            tree = searcher.trace(args.trace_id)
        except search.SearchError as exc:
            raise CommandError(str(exc)) from None
    if tree is None:
        print(f"pideai-otel: trace {args.trace_id} not found", file=sys.stderr)
        return 1
    if args.json:
        _print_json(tree)
    else:
        _emit(search.format_trace(tree))
    return 0


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    if args.limit <= 0:
        raise CommandError(f"--limit {args.limit} must be positive")
    keys = (
        "store_id",
        "user_id",
        "order_id",
        "service",
        "trace_id",
        "source",
        "since",
        "until",
        "text",
        "limit",
    )
    return {key: getattr(args, key) for key in keys}


def run_search_logs(args: argparse.Namespace) -> int:
    from pideai_otel.local import search

    with _searcher(args) as searcher:
        try:
            records = searcher.find_logs(severity=args.severity, **_filters(args))
        except (search.SearchError, ValueError) as exc:
            raise CommandError(str(exc)) from None
    if args.json:
        _print_json(records)
    else:
        _emit(search.format_logs(records))
    return 0


def run_search_spans(args: argparse.Namespace) -> int:
    from pideai_otel.local import search

    with _searcher(args) as searcher:
        try:
            spans = searcher.find_spans(status=args.status, **_filters(args))
        except (search.SearchError, ValueError) as exc:
            raise CommandError(str(exc)) from None
    if args.json:
        _print_json(spans)
    else:
        _emit(search.format_spans(spans))
    return 0


def run_search_sql(args: argparse.Namespace) -> int:
    from pideai_otel.local import search

    with _searcher(args) as searcher:
        try:
            result = searcher.sql(args.query)
        except search.SearchError as exc:
            raise CommandError(str(exc)) from None
    if args.json:
        _print_json(result.to_json())
    else:
        _emit(search.format_table(result.columns, result.rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Just this area's commands (`python -m pideai_otel.local.cli standin ...`), as tests run them."""
    parser = argparse.ArgumentParser(prog="pideai-otel")
    register(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CommandError as exc:
        print(f"pideai-otel: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
