"""Search what the stand-in stored: a trace as a tree with its logs, filtered spans and logs, SQL.

Data is reached through a running stand-in's `/query` (the way Better Stack's read-only SQL
endpoint is used) when one answers, else by opening the database file read-only. Both run the
same SQL text, so filters are inlined as quoted literals (the HTTP endpoint takes SQL only).

    from pideai_otel.local import search
    tree = search.trace("4bf92f3577b34da6a3ce929d0e0e4736")
    errors = search.find_logs(store_id="s-42", severity="error", since="15m")
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import httpx

from pideai_otel.local import store

DEFAULT_URL = "http://127.0.0.1:4390"

# OTLP SeverityNumber ranges: each name is the lowest number of its range.
SEVERITY_LEVELS = {
    "trace": 1,
    "debug": 5,
    "info": 9,
    "warn": 13,
    "warning": 13,
    "error": 17,
    "fatal": 21,
    "critical": 21,
}
SPAN_STATUSES = ("unset", "ok", "error")
_JSON_COLUMNS = ("attributes", "resource", "events", "links")
_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class SearchError(Exception):
    """The search cannot run (no data source, bad SQL, bad filter); the message says why."""


# --- inputs --------------------------------------------------------------------------------


def parse_time(value: str | int | datetime, *, now_ns: int | None = None) -> int:
    """A point in time as Unix ns: ISO 8601 (UTC when no offset), relative (`15m` = 15 minutes
    ago; s, m, h, d, w), `now`, a datetime, or an int taken as Unix ns."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(moment.timestamp() * 1_000_000_000)
    now = time.time_ns() if now_ns is None else now_ns
    text = value.strip()
    if text.lower() == "now":
        return now
    match = _RELATIVE.match(text)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        return now - int(amount * _UNIT_SECONDS[unit] * 1_000_000_000)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"time {value!r} is neither ISO 8601 (2024-05-01T12:00:00Z) nor relative (15m, 2h, 1d)"
        ) from None
    return parse_time(moment)


def severity_number(level: str | int) -> int:
    """The lowest OTLP severity number of a level name (debug, info, warn, error, fatal)."""
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    key = str(level).strip().lower()
    if key.isdigit():
        return int(key)
    if key not in SEVERITY_LEVELS:
        raise ValueError(f"severity {level!r} is not one of trace, debug, info, warn, error, fatal")
    return SEVERITY_LEVELS[key]


def quote(value: str | int | float) -> str:
    """An SQL literal; strings with quotes doubled, so a filter value cannot end the literal."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, (int, float)):
        return repr(value)
    if "\x00" in value:
        raise ValueError("filter values cannot contain NUL characters")
    return "'" + value.replace("'", "''") + "'"


def normalize_trace_id(trace_id: str) -> str:
    value = trace_id.strip().lower()
    if not _TRACE_ID.match(value):
        raise SearchError(f"trace id {trace_id!r} is not 32 hex digits")
    return value


def iso(ns: int | None) -> str | None:
    """Unix ns as ISO 8601 UTC with milliseconds, e.g. 2024-05-01T12:00:01.123Z."""
    if ns is None:
        return None
    moment = datetime.fromtimestamp(ns / 1e9, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# --- backends ------------------------------------------------------------------------------


class _Backend(Protocol):
    description: str

    def query(self, sql: str) -> store.QueryResult: ...

    def close(self) -> None: ...


class _HttpBackend:
    def __init__(self, url: str, client: httpx.Client) -> None:
        self.url = url.rstrip("/")
        self.description = f"stand-in at {self.url}"
        self._client = client

    def query(self, sql: str) -> store.QueryResult:
        try:
            response = self._client.post(f"{self.url}/query", content=sql.encode("utf-8"))
        except httpx.HTTPError as exc:
            raise SearchError(
                f"stand-in at {self.url} stopped answering ({exc}); retry, or pass --db"
            ) from None
        try:
            document = response.json()
        except ValueError:
            document = {}
        if response.status_code != 200:
            message = document.get("message") if isinstance(document, dict) else None
            raise SearchError(f"query refused: {message or response.text[:200]}")
        return store.QueryResult(document["columns"], document["rows"])

    def close(self) -> None:
        self._client.close()


class _FileBackend:
    def __init__(self, path: Path) -> None:
        self.description = f"database {path}"
        try:
            self._conn = store.open_reader(path)
        except FileNotFoundError:
            raise SearchError(f"no database at {path}") from None
        except sqlite3.Error as exc:
            raise SearchError(f"cannot open {path} read-only: {exc}") from None

    def query(self, sql: str) -> store.QueryResult:
        try:
            return store.run_query(self._conn, sql)
        except store.QueryError as exc:
            raise SearchError(f"query refused: {exc}") from None

    def close(self) -> None:
        self._conn.close()


def connect(url: str | None = DEFAULT_URL, db_path: Path | str | None = None) -> Searcher:
    """A searcher over the stand-in answering at `url`, else over the file `db_path` (read-only)."""
    if url:
        client = httpx.Client(timeout=httpx.Timeout(60.0, connect=1.0))
        try:
            if client.get(f"{url.rstrip('/')}/_standin/health").status_code == 200:
                return Searcher(_HttpBackend(url, client))
        except httpx.HTTPError:
            pass
        client.close()
    if db_path is None:
        from pideai_otel.local.standin import default_db_path

        db_path = default_db_path()
    path = Path(db_path)
    if not path.exists():
        where = f"no stand-in answers at {url} and " if url else ""
        raise SearchError(
            f"{where}there is no database at {path}; start one with `pideai-otel standin` or pass --db"
        )
    return Searcher(_FileBackend(path))


# --- the searcher ----------------------------------------------------------------------------


def _row_dict(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    record = dict(zip(columns, row))
    record.pop("_row", None)
    for key in _JSON_COLUMNS:
        text = record.get(key)
        if isinstance(text, str):
            try:
                record[key] = json.loads(text)
            except ValueError:
                pass
    return record


class Searcher:
    """Searches one data source; use as a context manager (or call `close`)."""

    def __init__(self, backend: _Backend) -> None:
        self._backend = backend

    @property
    def description(self) -> str:
        return self._backend.description

    def sql(self, query: str) -> store.QueryResult:
        """Run one read-only SQL statement over spans, logs, metrics, requests."""
        return self._backend.query(query)

    def _dicts(self, query: str) -> list[dict[str, Any]]:
        result = self._backend.query(query)
        return [_row_dict(result.columns, row) for row in result.rows]

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """The trace as a tree: root spans with `children` and `logs`, plus logs without a span
        of this trace at the root; everything sorted by time. None when nothing has this id."""
        tid = normalize_trace_id(trace_id)
        spans = self._dicts(f"SELECT * FROM spans WHERE trace_id = {quote(tid)} ORDER BY start_ns, rowid")
        logs = self._dicts(f"SELECT * FROM logs WHERE trace_id = {quote(tid)} ORDER BY time_ns, rowid")
        if not spans and not logs:
            return None
        return build_tree(tid, spans, logs)

    def find_spans(
        self,
        *,
        store_id: str | None = None,
        user_id: str | None = None,
        order_id: str | None = None,
        service: str | None = None,
        status: str | None = None,
        trace_id: str | None = None,
        source: str | None = None,
        since: str | int | datetime | None = None,
        until: str | int | datetime | None = None,
        text: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Spans matching every given filter: the most recent `limit`, oldest first."""
        where = _common_filters(
            store_id, user_id, order_id, service, trace_id, source, "start_ns", since, until
        )
        if status is not None:
            if status.strip().lower() not in SPAN_STATUSES:
                raise ValueError(f"status {status!r} is not one of unset, ok, error")
            where.append(f"status_code = {quote(status.strip().upper())}")
        if text:
            needle = quote(text.lower())
            where.append(
                f"(instr(lower(name), {needle}) > 0"
                f" OR instr(lower(coalesce(status_message, '')), {needle}) > 0"
                f" OR instr(lower(attributes), {needle}) > 0)"
            )
        spans = self._dicts(_select("spans", where, "start_ns", limit))
        for span in spans:
            span["start"] = iso(span.get("start_ns"))
        return spans

    def find_logs(
        self,
        *,
        store_id: str | None = None,
        user_id: str | None = None,
        order_id: str | None = None,
        service: str | None = None,
        severity: str | int | None = None,
        trace_id: str | None = None,
        source: str | None = None,
        since: str | int | datetime | None = None,
        until: str | int | datetime | None = None,
        text: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Log records matching every given filter (severity is a minimum level): the most recent
        `limit`, oldest first."""
        where = _common_filters(
            store_id, user_id, order_id, service, trace_id, source, "time_ns", since, until
        )
        if severity is not None:
            where.append(f"severity_number >= {severity_number(severity)}")
        if text:
            needle = quote(text.lower())
            where.append(
                f"(instr(lower(coalesce(body, '')), {needle}) > 0 OR instr(lower(attributes), {needle}) > 0)"
            )
        records = self._dicts(_select("logs", where, "time_ns", limit))
        for record in records:
            record["time"] = iso(record.get("time_ns"))
        return records

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _common_filters(
    store_id: str | None,
    user_id: str | None,
    order_id: str | None,
    service: str | None,
    trace_id: str | None,
    source: str | None,
    time_column: str,
    since: str | int | datetime | None,
    until: str | int | datetime | None,
) -> list[str]:
    where: list[str] = []
    for column, value in (
        ("store_id", store_id),
        ("user_id", user_id),
        ("order_id", order_id),
        ("service", service),
        ("source", source),
    ):
        if value is not None:
            where.append(f"{column} = {quote(value)}")
    if trace_id is not None:
        where.append(f"trace_id = {quote(normalize_trace_id(trace_id))}")
    now = time.time_ns()
    if since is not None:
        where.append(f"{time_column} >= {parse_time(since, now_ns=now)}")
    if until is not None:
        where.append(f"{time_column} <= {parse_time(until, now_ns=now)}")
    return where


def _select(table: str, where: list[str], time_column: str, limit: int) -> str:
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    latest = (
        f"SELECT rowid AS _row, * FROM {table}{clause}"
        f" ORDER BY {time_column} DESC, rowid DESC LIMIT {int(limit)}"
    )
    # Keep the most recent `limit`, shown oldest first, like a log tail.
    return f"SELECT * FROM ({latest}) ORDER BY {time_column}, _row"


# --- the trace tree --------------------------------------------------------------------------


def build_tree(trace_id: str, spans: list[dict[str, Any]], logs: list[dict[str, Any]]) -> dict[str, Any]:
    """Link spans to parents and logs to spans. A span whose parent is missing (not exported, or
    from another service's half that has not arrived) becomes a root. Rows stored twice (a
    retried export) appear once; `duplicates` counts the extra copies."""
    nodes: dict[str, dict[str, Any]] = {}
    duplicates = 0
    for span in spans:
        span_id = span.get("span_id") or ""
        if span_id in nodes:
            duplicates += 1
            continue
        nodes[span_id] = {**span, "children": [], "logs": []}
    roots: list[dict[str, Any]] = []
    for node in nodes.values():
        parent = nodes.get(node.get("parent_span_id") or "")
        (parent["children"] if parent is not None and parent is not node else roots).append(node)
    root_logs: list[dict[str, Any]] = []
    for record in logs:
        record["time"] = iso(record.get("time_ns"))
        owner = nodes.get(record.get("span_id") or "")
        (owner["logs"] if owner is not None else root_logs).append(record)
    starts = [s["start_ns"] for s in nodes.values() if s.get("start_ns")]
    ends = [s["end_ns"] for s in nodes.values() if s.get("end_ns")]
    times = [r["time_ns"] for r in logs if r.get("time_ns")]
    first = min(starts + times) if starts or times else None
    duration_ms = (max(ends) - min(starts)) / 1e6 if starts and ends else None
    services = sorted(
        {s["service"] for s in nodes.values() if s.get("service")}
        | {r["service"] for r in logs if r.get("service")}
    )
    return {
        "trace_id": trace_id,
        "start": iso(first),
        "start_ns": first,
        "duration_ms": duration_ms,
        "span_count": len(nodes),
        "log_count": len(logs),
        "duplicates": duplicates,
        "services": services,
        "spans": roots,
        "logs": root_logs,
    }


# --- human output ----------------------------------------------------------------------------


def _clip(value: Any, width: int) -> str:
    text = "" if value is None else str(value)
    text = text.replace("\r", "").replace("\n", "\\n").replace("\t", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def _clock(ns: int | None) -> str:
    stamp = iso(ns)
    return stamp[11:23] if stamp else "--:--:--.---"


def _severity(record: dict[str, Any]) -> str:
    text = record.get("severity_text")
    if text:
        return str(text).upper()
    number = record.get("severity_number") or 0
    for name in ("fatal", "error", "warn", "info", "debug", "trace"):
        if number >= SEVERITY_LEVELS[name]:
            return name.upper()
    return "-"


def _log_line(record: dict[str, Any], indent: str) -> str:
    parts = [f"{_clock(record.get('time_ns'))} {_severity(record):<5}", str(record.get("service") or "-")]
    parts.append(_clip(record.get("body"), 160))
    if record.get("store_id"):
        parts.append(f"store_id={record['store_id']}")
    return f"{indent}  {' | '.join(parts)}\n"


def _span_line(span: dict[str, Any], indent: str) -> str:
    status = str(span.get("status_code") or "UNSET")
    if span.get("status_message"):
        status += f": {_clip(span['status_message'], 80)}"
    parts = [
        str(span.get("service") or "-"),
        _clip(span.get("name"), 80),
        _ms(span.get("duration_ms")),
        status,
    ]
    if span.get("store_id"):
        parts.append(f"store_id={span['store_id']}")
    return f"{indent}{' | '.join(parts)}\n"


def _render(
    spans: Iterable[dict[str, Any]], logs: Iterable[dict[str, Any]], depth: int, out: list[str]
) -> None:
    # Children and logs in one timeline, so the tree reads in the order things happened.
    items = [(s.get("start_ns") or 0, 1, s) for s in spans] + [(r.get("time_ns") or 0, 0, r) for r in logs]
    items.sort(key=lambda item: (item[0], item[1]))
    indent = "  " * depth
    for _, is_span, item in items:
        if is_span:
            out.append(_span_line(item, indent))
            _render(item["children"], item["logs"], depth + 1, out)
        else:
            out.append(_log_line(item, indent))


def format_trace(tree: dict[str, Any]) -> str:
    """The tree as indented text: `service | span | duration | status`, logs under their span."""
    services = ", ".join(tree["services"]) or "-"
    header = (
        f"trace {tree['trace_id']}  {tree.get('start') or ''}  {tree['span_count']} spans, "
        f"{tree['log_count']} logs, {_ms(tree.get('duration_ms'))}, services: {services}"
    )
    if tree.get("duplicates"):
        header += f" ({tree['duplicates']} duplicate span rows hidden)"
    out = [header + "\n"]
    _render(tree["spans"], tree["logs"], 0, out)
    return "".join(out)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 60) -> str:
    """A plain text table, cells clipped to `max_width`."""
    cells = [[_clip(value, max_width) for value in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.append(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
    return "\n".join(lines) + "\n"


def format_logs(records: Sequence[dict[str, Any]]) -> str:
    columns = ["time", "severity", "service", "body", "store_id", "trace_id"]
    rows = [
        [r.get("time"), _severity(r), r.get("service"), r.get("body"), r.get("store_id"), r.get("trace_id")]
        for r in records
    ]
    return format_table(columns, rows, max_width=100)


def format_spans(spans: Sequence[dict[str, Any]]) -> str:
    columns = ["start", "service", "span", "duration_ms", "status", "store_id", "trace_id"]
    rows = [
        [
            s.get("start"),
            s.get("service"),
            s.get("name"),
            None if s.get("duration_ms") is None else f"{s['duration_ms']:.1f}",
            s.get("status_code"),
            s.get("store_id"),
            s.get("trace_id"),
        ]
        for s in spans
    ]
    return format_table(columns, rows)


# --- one-call helpers ------------------------------------------------------------------------


def trace(
    trace_id: str, *, url: str | None = DEFAULT_URL, db_path: Path | str | None = None
) -> dict[str, Any] | None:
    """The trace tree (see `Searcher.trace`), or None when no span or log has this id."""
    with connect(url, db_path) as searcher:
        return searcher.trace(trace_id)


def find_spans(
    *, url: str | None = DEFAULT_URL, db_path: Path | str | None = None, **filters: Any
) -> list[dict[str, Any]]:
    with connect(url, db_path) as searcher:
        return searcher.find_spans(**filters)


def find_logs(
    *, url: str | None = DEFAULT_URL, db_path: Path | str | None = None, **filters: Any
) -> list[dict[str, Any]]:
    with connect(url, db_path) as searcher:
        return searcher.find_logs(**filters)


def sql(query: str, *, url: str | None = DEFAULT_URL, db_path: Path | str | None = None) -> store.QueryResult:
    with connect(url, db_path) as searcher:
        return searcher.sql(query)
