"""The stand-in's embedded store: SQLite schema, OTLP decoding into rows, read-only queries.

One process writes (the stand-in, from a single writer thread); any number read, either through
the stand-in's `/query` endpoint or by opening the file read-only. The file is in WAL mode so
readers never block the writer.

Row conventions (other tests rely on them):
- ids are lowercase hex; an absent id (empty or all zeros) is NULL.
- `kind` is the SpanKind name (`SERVER`, `CLIENT`, `INTERNAL`, `PRODUCER`, `CONSUMER`,
  `UNSPECIFIED`), `status_code` the status name (`UNSET`, `OK`, `ERROR`), as in the Python SDK.
- `attributes`, `resource`, `events`, `links` are JSON text; AnyValue maps to JSON (kvlist ->
  object, array -> list, bytes -> base64). A log `body` that is a string is stored as is, any other
  body as JSON text. `scope` is the instrumentation scope name.
- metrics: one row per data point. `kind` is `gauge`, `sum`, `histogram`, `exponential_histogram` or
  `summary`; for the last three `value` is the sum and the distribution sits in `attributes` under
  `_histogram` (or `_summary`).
"""

from __future__ import annotations

import base64
import json
import math
import sqlite3
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as _ProtoDecodeError
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

SCHEMA_VERSION = 1
SIGNALS = ("traces", "logs", "metrics")
TABLE_FOR_SIGNAL = {"traces": "spans", "logs": "logs", "metrics": "metrics"}
TENANT_KEYS = ("store_id", "user_id", "order_id")
Row = tuple[Any, ...]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    source TEXT NOT NULL, trace_id TEXT, span_id TEXT, parent_span_id TEXT, name TEXT, kind TEXT,
    service TEXT, start_ns INTEGER, end_ns INTEGER, duration_ms REAL, status_code TEXT,
    status_message TEXT, store_id TEXT, user_id TEXT, order_id TEXT, attributes TEXT,
    resource TEXT, events TEXT, scope TEXT, received_ns INTEGER NOT NULL, links TEXT
);
CREATE INDEX IF NOT EXISTS spans_trace ON spans(trace_id);
CREATE INDEX IF NOT EXISTS spans_start ON spans(start_ns);
CREATE TABLE IF NOT EXISTS logs (
    source TEXT NOT NULL, trace_id TEXT, span_id TEXT, time_ns INTEGER, observed_ns INTEGER,
    severity_number INTEGER, severity_text TEXT, body TEXT, service TEXT, store_id TEXT,
    user_id TEXT, order_id TEXT, attributes TEXT, resource TEXT, scope TEXT,
    received_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_trace ON logs(trace_id);
CREATE INDEX IF NOT EXISTS logs_time ON logs(time_ns);
CREATE TABLE IF NOT EXISTS metrics (
    source TEXT NOT NULL, name TEXT, kind TEXT, unit TEXT, service TEXT, time_ns INTEGER,
    value REAL, attributes TEXT, resource TEXT, received_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS metrics_name ON metrics(name, time_ns);
CREATE TABLE IF NOT EXISTS requests (
    source TEXT, path TEXT, status INTEGER, content_type TEXT, encoding TEXT, bytes INTEGER,
    received_ns INTEGER NOT NULL, records INTEGER, error TEXT
);
"""

_SPAN_COLUMNS = (
    "source, trace_id, span_id, parent_span_id, name, kind, service, start_ns, end_ns, duration_ms,"
    " status_code, status_message, store_id, user_id, order_id, attributes, resource, events, scope,"
    " received_ns, links"
)
_LOG_COLUMNS = (
    "source, trace_id, span_id, time_ns, observed_ns, severity_number, severity_text, body, service,"
    " store_id, user_id, order_id, attributes, resource, scope, received_ns"
)
_METRIC_COLUMNS = "source, name, kind, unit, service, time_ns, value, attributes, resource, received_ns"
_REQUEST_COLUMNS = "source, path, status, content_type, encoding, bytes, received_ns, records, error"


def _insert_sql(table: str, columns: str) -> str:
    marks = ", ".join("?" for _ in columns.split(","))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks})"


_INSERT = {
    "traces": _insert_sql("spans", _SPAN_COLUMNS),
    "logs": _insert_sql("logs", _LOG_COLUMNS),
    "metrics": _insert_sql("metrics", _METRIC_COLUMNS),
}
_INSERT_REQUEST = _insert_sql("requests", _REQUEST_COLUMNS)

_SPAN_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS_CODES = {0: "UNSET", 1: "OK", 2: "ERROR"}


class DecodeError(ValueError):
    """The body is not a valid OTLP export request; the message says why (sent back as 400)."""


class TooLarge(ValueError):
    """The body (or what it inflates to) exceeds the limit (sent back as 413)."""


# --- body handling -------------------------------------------------------------------------


def inflate(body: bytes, encoding: str, max_bytes: int) -> bytes:
    """Undo Content-Encoding, refusing output above `max_bytes` (a zip bomb is a 413, not an OOM)."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise DecodeError(f"unsupported Content-Encoding {encoding!r}; send gzip or no encoding")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, max_bytes + 1)
    except zlib.error as exc:
        raise DecodeError(f"body is not valid {encoding}: {exc}") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise TooLarge(f"decompressed body exceeds {max_bytes} bytes")
    if not inflater.eof:
        raise DecodeError(f"body is truncated {encoding}")
    return out


_REQUEST_TYPES: dict[str, type[Message]] = {
    "traces": ExportTraceServiceRequest,
    "logs": ExportLogsServiceRequest,
    "metrics": ExportMetricsServiceRequest,
}

# OTLP/JSON differs from protobuf's JSON mapping in one way: these ids are hex, not base64.
_HEX_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def _hex_ids_to_base64(node: Any) -> Any:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_ID_KEYS and isinstance(value, str):
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode("ascii")
                except ValueError:
                    raise DecodeError(f"{key} {value[:64]!r} is not hex") from None
            elif isinstance(value, (dict, list)):
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, (dict, list)):
                _hex_ids_to_base64(item)
    return node


def parse_request(signal: str, body: bytes, content_type: str) -> Any:
    """Parse an OTLP export request (protobuf or OTLP/JSON) into its protobuf message."""
    message = _REQUEST_TYPES[signal]()
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DecodeError(f"body is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise DecodeError("OTLP/JSON body must be a JSON object")
        try:
            json_format.ParseDict(_hex_ids_to_base64(document), message, ignore_unknown_fields=True)
        except json_format.ParseError as exc:
            raise DecodeError(f"body is not an OTLP/JSON {signal} request: {exc}") from None
        return message
    if media in ("application/x-protobuf", "application/protobuf"):
        try:
            message.ParseFromString(body)
        except _ProtoDecodeError as exc:
            raise DecodeError(f"body is not an OTLP protobuf {signal} request: {exc}") from None
        return message
    raise DecodeError(
        f"unsupported Content-Type {content_type!r}; send application/x-protobuf or application/json"
    )


# --- values --------------------------------------------------------------------------------


def any_value(value: AnyValue) -> Any:
    """An OTLP AnyValue as plain JSON-able Python (bytes become base64 text)."""
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        number = value.double_value
        # JSON has no Infinity or NaN: stored as text, or one such value breaks json_extract on the table.
        return number if math.isfinite(number) else str(number)
    if which == "bool_value":
        return value.bool_value
    if which == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def attributes_dict(attributes: Iterable[KeyValue]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for kv in attributes:
        v = kv.value
        # Fast path for the common scalar case; any_value handles the rest.
        which = v.WhichOneof("value")
        if which == "string_value":
            result[kv.key] = v.string_value
        elif which == "int_value":
            result[kv.key] = v.int_value
        else:
            result[kv.key] = any_value(v)
    return result


# Built once: json.dumps with non-default options constructs a new encoder on every call.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=str).encode


def _hex_id(raw: bytes) -> str | None:
    if not raw or not raw.strip(b"\x00"):
        return None
    return raw.hex()


def _tenant(record: Mapping[str, Any], resource: Mapping[str, Any], key: str) -> str | None:
    value = record.get(key)
    if value is None:
        value = resource.get(key)
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else _dumps(value)


@dataclass(slots=True)
class _Resource:
    attributes: dict[str, Any]
    json: str
    service: str | None

    @classmethod
    def of(cls, resource: Any) -> _Resource:
        attrs = attributes_dict(resource.attributes)
        service = attrs.get("service.name")
        return cls(attrs, _dumps(attrs), service if isinstance(service, str) else None)


# --- rows ----------------------------------------------------------------------------------


def span_rows(request: ExportTraceServiceRequest, source: str, received_ns: int) -> list[Row]:
    rows: list[Row] = []
    append = rows.append
    for resource_spans in request.resource_spans:
        res = _Resource.of(resource_spans.resource)
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name or None
            for span in scope_spans.spans:
                attrs = attributes_dict(span.attributes)
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                events = [
                    {"name": e.name, "time_ns": e.time_unix_nano, "attributes": attributes_dict(e.attributes)}
                    for e in span.events
                ]
                links = [
                    {
                        "trace_id": _hex_id(link.trace_id),
                        "span_id": _hex_id(link.span_id),
                        "attributes": attributes_dict(link.attributes),
                    }
                    for link in span.links
                ]
                append(
                    (
                        source,
                        _hex_id(span.trace_id),
                        _hex_id(span.span_id),
                        _hex_id(span.parent_span_id),
                        span.name,
                        _SPAN_KINDS.get(span.kind, str(span.kind)),
                        res.service,
                        start,
                        end,
                        (end - start) / 1e6 if end >= start and start else None,
                        _STATUS_CODES.get(span.status.code, str(span.status.code)),
                        span.status.message or None,
                        _tenant(attrs, res.attributes, "store_id"),
                        _tenant(attrs, res.attributes, "user_id"),
                        _tenant(attrs, res.attributes, "order_id"),
                        _dumps(attrs),
                        res.json,
                        _dumps(events) if events else None,
                        scope,
                        received_ns,
                        _dumps(links) if links else None,
                    )
                )
    return rows


def log_rows(request: ExportLogsServiceRequest, source: str, received_ns: int) -> list[Row]:
    rows: list[Row] = []
    append = rows.append
    for resource_logs in request.resource_logs:
        res = _Resource.of(resource_logs.resource)
        for scope_logs in resource_logs.scope_logs:
            scope = scope_logs.scope.name or None
            for record in scope_logs.log_records:
                attrs = attributes_dict(record.attributes)
                if record.HasField("body"):
                    body_value = any_value(record.body)
                    body = body_value if isinstance(body_value, str) else _dumps(body_value)
                else:
                    body = None
                append(
                    (
                        source,
                        _hex_id(record.trace_id),
                        _hex_id(record.span_id),
                        record.time_unix_nano or record.observed_time_unix_nano or None,
                        record.observed_time_unix_nano or None,
                        record.severity_number,
                        record.severity_text or None,
                        body,
                        res.service,
                        _tenant(attrs, res.attributes, "store_id"),
                        _tenant(attrs, res.attributes, "user_id"),
                        _tenant(attrs, res.attributes, "order_id"),
                        _dumps(attrs),
                        res.json,
                        scope,
                        received_ns,
                    )
                )
    return rows


def _histogram_info(point: Any, kind: str) -> dict[str, Any]:
    info: dict[str, Any] = {"count": point.count}
    if kind == "histogram":
        info["bucket_counts"] = list(point.bucket_counts)
        info["explicit_bounds"] = list(point.explicit_bounds)
    elif kind == "exponential_histogram":
        info["scale"] = point.scale
        info["zero_count"] = point.zero_count
        info["positive"] = {
            "offset": point.positive.offset,
            "bucket_counts": list(point.positive.bucket_counts),
        }
        info["negative"] = {
            "offset": point.negative.offset,
            "bucket_counts": list(point.negative.bucket_counts),
        }
    if kind != "summary":
        if point.HasField("min"):
            info["min"] = point.min
        if point.HasField("max"):
            info["max"] = point.max
    else:
        info["quantiles"] = [{"quantile": q.quantile, "value": q.value} for q in point.quantile_values]
    return info


def metric_rows(request: ExportMetricsServiceRequest, source: str, received_ns: int) -> list[Row]:
    rows: list[Row] = []
    for resource_metrics in request.resource_metrics:
        res = _Resource.of(resource_metrics.resource)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is None:
                    continue
                for point in getattr(metric, kind).data_points:
                    attrs = attributes_dict(point.attributes)
                    if kind in ("gauge", "sum"):
                        number = point.WhichOneof("value")
                        value = float(getattr(point, number)) if number else None
                    else:
                        value = point.sum if kind == "summary" or point.HasField("sum") else None
                        attrs["_summary" if kind == "summary" else "_histogram"] = _histogram_info(
                            point, kind
                        )
                    rows.append(
                        (
                            source,
                            metric.name,
                            kind,
                            metric.unit or None,
                            res.service,
                            point.time_unix_nano or None,
                            value,
                            _dumps(attrs),
                            res.json,
                            received_ns,
                        )
                    )
    return rows


_ROW_BUILDERS = {"traces": span_rows, "logs": log_rows, "metrics": metric_rows}


def decode_rows(signal: str, body: bytes, content_type: str, source: str, received_ns: int) -> list[Row]:
    """Decode one (already inflated) request body into rows for the signal's table."""
    return _ROW_BUILDERS[signal](parse_request(signal, body, content_type), source, received_ns)


# --- connections ---------------------------------------------------------------------------


def open_writer(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the database for the single writer."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a commit survives the process being killed; only an OS crash could lose the
    # last commits. FULL would fsync every request for no benefit to what tests simulate.
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA busy_timeout=10000")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version not in (0, SCHEMA_VERSION):
        conn.close()
        raise RuntimeError(
            f"{path} has schema version {version}, expected {SCHEMA_VERSION}; use a new --db file"
        )
    conn.executescript(_SCHEMA)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    return conn


class Writer:
    """Inserts accepted requests, one transaction each. Used from one thread at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = open_writer(path)

    def store(self, signal: str, rows: Sequence[Row], request: Row) -> None:
        """Insert the rows and the request record, committed before returning."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            if rows:
                conn.executemany(_INSERT[signal], rows)
            conn.execute(_INSERT_REQUEST, request)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def record_request(self, request: Row) -> None:
        self._conn.execute(_INSERT_REQUEST, request)

    def close(self) -> None:
        self._conn.close()


def request_row(
    source: str | None,
    path: str,
    status: int,
    content_type: str | None,
    encoding: str | None,
    size: int,
    received_ns: int,
    records: int | None = None,
    error: str | None = None,
) -> Row:
    return (source, path, status, content_type, encoding, size, received_ns, records, error)


# --- read-only queries ---------------------------------------------------------------------


class QueryError(ValueError):
    """The SQL was refused or failed; the message says why (sent back as 400)."""


_ALLOWED_ACTIONS = {
    sqlite3.SQLITE_SELECT,
    sqlite3.SQLITE_READ,
    sqlite3.SQLITE_FUNCTION,
    sqlite3.SQLITE_RECURSIVE,
}


def _authorize(action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None) -> int:
    if action in _ALLOWED_ACTIONS:
        return sqlite3.SQLITE_OK
    # Reading a pragma (no value given) is harmless; setting one is not.
    if action == sqlite3.SQLITE_PRAGMA and arg2 is None and (arg1 or "").lower() != "query_only":
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def open_reader(path: Path) -> sqlite3.Connection:
    """Open the database read-only; statements other than reads are refused."""
    if not path.exists():
        raise FileNotFoundError(path)
    uri = f"{path.resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA query_only=1")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.set_authorizer(_authorize)
    return conn


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return value


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)

    def dicts(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]

    def to_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows}


def run_query(conn: sqlite3.Connection, sql: str, timeout_s: float = 30.0) -> QueryResult:
    """Run one read-only statement; refusals and SQL errors become QueryError."""
    if not sql.strip():
        raise QueryError("empty query; send one SELECT statement as the body")
    deadline = time.monotonic() + timeout_s
    conn.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        with closing(conn.execute(sql)) as cursor:
            columns = [d[0] for d in cursor.description or ()]
            rows = [[_jsonable(v) for v in row] for row in cursor.fetchall()]
    except sqlite3.DatabaseError as exc:
        message = str(exc)
        if "not authorized" in message or "readonly" in message or "read-only" in message:
            message = f"only read statements are allowed ({message})"
        elif "interrupted" in message:
            message = f"query took longer than {timeout_s:g} s"
        raise QueryError(message) from None
    except (ValueError, OverflowError) as exc:
        raise QueryError(str(exc)) from None
    finally:
        conn.set_progress_handler(None, 0)
    return QueryResult(columns, rows)
