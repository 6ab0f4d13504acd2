"""The local Better Stack stand-in, end to end: a real subprocess, real OTLP exporters, raw HTTP."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from pideai_otel.local import StandInProcess

TOKENS = {"default": "tok-default", "errors": "tok-errors"}
PROTOBUF = "application/x-protobuf"


@pytest.fixture
def standin(tmp_path: Path) -> Iterator[StandInProcess]:
    with StandInProcess(tmp_path, sources=TOKENS) as process:
        yield process


def _headers(token: str | None = "tok-default", content_type: str = PROTOBUF, **extra: str) -> dict[str, str]:
    headers = {"Content-Type": content_type, **extra}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _span_request(count: int = 1, service: str = "raw-svc", **attrs: str) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(_kv("service.name", service))
    scope_spans = resource_spans.scope_spans.add()
    for _ in range(count):
        span = scope_spans.spans.add(
            trace_id=os.urandom(16),
            span_id=os.urandom(8),
            name="raw",
            start_time_unix_nano=time.time_ns(),
            end_time_unix_nano=time.time_ns() + 2_000_000,
        )
        span.attributes.extend(_kv(k, v) for k, v in attrs.items())
    return request


def _tracer_provider(standin: StandInProcess, service: str, token: str, **exporter: object) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": service, "user_id": "u-res"}))
    span_exporter = OTLPSpanExporter(
        endpoint=f"{standin.url}/v1/traces", headers={"Authorization": f"Bearer {token}"}, **exporter
    )
    provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    return provider


def _counts(standin: StandInProcess) -> dict[str, int]:
    rows = standin.query(
        "SELECT (SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM logs) AS logs,"
        " (SELECT count(*) FROM metrics) AS metrics"
    )
    return rows[0]


# --- accepted data ---------------------------------------------------------------------------


def test_sdk_exporters_deliver_spans_and_logs_with_tenant_fields(standin: StandInProcess) -> None:
    tracer_provider = _tracer_provider(standin, "checkout-api", "tok-default", compression=Compression.Gzip)
    logger_provider = LoggerProvider(resource=Resource.create({"service.name": "checkout-api"}))
    log_exporter = OTLPLogExporter(
        endpoint=f"{standin.url}/v1/logs", headers={"Authorization": "Bearer tok-default"}
    )
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    tracer = tracer_provider.get_tracer("tests.standin")
    with tracer.start_as_current_span(
        "POST /orders", kind=SpanKind.SERVER, attributes={"store_id": "s-1", "order_id": "o-9"}
    ) as span:
        span.add_event("validated", {"items": 3})
        span.set_status(Status(StatusCode.ERROR, "payment declined"))
        logger_provider.get_logger("tests.standin").emit(
            LogRecord(
                body="order placed",
                severity_number=SeverityNumber.WARN,
                severity_text="WARN",
                attributes={"store_id": "s-1", "amount": 12.5},
            )
        )
        context = span.get_span_context()
    tracer_provider.shutdown()
    logger_provider.shutdown()

    trace_id, span_id = f"{context.trace_id:032x}", f"{context.span_id:016x}"
    [row] = standin.query("SELECT * FROM spans")
    assert row["source"] == "default"
    assert (row["trace_id"], row["span_id"], row["parent_span_id"]) == (trace_id, span_id, None)
    assert (row["name"], row["kind"], row["service"]) == ("POST /orders", "SERVER", "checkout-api")
    assert (row["status_code"], row["status_message"]) == ("ERROR", "payment declined")
    # store_id / order_id come from the span; user_id falls back to the resource.
    assert (row["store_id"], row["order_id"], row["user_id"]) == ("s-1", "o-9", "u-res")
    assert row["duration_ms"] == pytest.approx((row["end_ns"] - row["start_ns"]) / 1e6)
    assert json.loads(row["events"])[0]["name"] == "validated"
    assert json.loads(row["events"])[0]["attributes"] == {"items": 3}
    assert json.loads(row["resource"])["service.name"] == "checkout-api"
    assert row["scope"] == "tests.standin"

    [log] = standin.query("SELECT * FROM logs")
    assert (log["trace_id"], log["span_id"]) == (trace_id, span_id)
    assert (log["body"], log["severity_number"], log["severity_text"]) == ("order placed", 13, "WARN")
    assert (log["service"], log["store_id"]) == ("checkout-api", "s-1")
    assert json.loads(log["attributes"]) == {"store_id": "s-1", "amount": 12.5}

    [gzip_request] = standin.query("SELECT * FROM requests WHERE path = '/v1/traces'")
    assert (gzip_request["status"], gzip_request["encoding"], gzip_request["records"]) == (200, "gzip", 1)


def test_sdk_metric_exporter_stores_one_row_per_point(standin: StandInProcess) -> None:
    exporter = OTLPMetricExporter(
        endpoint=f"{standin.url}/v1/metrics", headers={"Authorization": "Bearer tok-default"}
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": "worker"}))
    meter = provider.get_meter("tests.standin")
    meter.create_counter("orders", unit="1").add(3, {"store_id": "s-1"})
    meter.create_histogram("latency", unit="ms").record(40, {"route": "/x"})
    provider.shutdown()

    rows = {r["name"]: r for r in standin.query("SELECT * FROM metrics")}
    assert (rows["orders"]["kind"], rows["orders"]["value"], rows["orders"]["service"]) == (
        "sum",
        3.0,
        "worker",
    )
    assert json.loads(rows["orders"]["attributes"]) == {"store_id": "s-1"}
    histogram = json.loads(rows["latency"]["attributes"])
    assert rows["latency"]["kind"] == "histogram" and rows["latency"]["value"] == 40.0
    assert histogram["route"] == "/x" and histogram["_histogram"]["count"] == 1


def test_raw_protobuf_answers_200_empty_json_and_stores_every_copy(standin: StandInProcess) -> None:
    body = _span_request(3, store_id="s-7").SerializeToString()
    for _ in range(2):
        response = httpx.post(f"{standin.url}/v1/traces", content=body, headers=_headers())
        assert (response.status_code, response.json()) == (200, {})
        assert response.headers["content-type"] == "application/json"
    rows = standin.query("SELECT span_id, count(*) AS copies, store_id FROM spans GROUP BY span_id")
    assert len(rows) == 3
    assert all(r["copies"] == 2 and r["store_id"] == "s-7" for r in rows)


def test_gzip_body_is_inflated(standin: StandInProcess) -> None:
    body = gzip.compress(_span_request(2).SerializeToString())
    response = httpx.post(
        f"{standin.url}/v1/traces", content=body, headers=_headers(**{"Content-Encoding": "gzip"})
    )
    assert response.status_code == 200
    assert _counts(standin)["spans"] == 2


def test_otlp_json_with_hex_ids_enum_names_and_string_int64(standin: StandInProcess) -> None:
    spans = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "browser"},
                        "spans": [
                            {
                                "traceId": "5B8EFFF798038103D269B633813FC60C",
                                "spanId": "eee19b7ec3c1b174",
                                "parentSpanId": "eee19b7ec3c1b173",
                                "name": "click",
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712660250000000",
                                "status": {"code": 2},
                                "attributes": [
                                    {"key": "count", "value": {"intValue": "9007199254740993"}},
                                    {"key": "raw", "value": {"bytesValue": "AAH/"}},
                                    {
                                        "key": "cart",
                                        "value": {
                                            "kvlistValue": {
                                                "values": [
                                                    {
                                                        "key": "items",
                                                        "value": {
                                                            "arrayValue": {
                                                                "values": [
                                                                    {"stringValue": "a"},
                                                                    {"doubleValue": 1.5},
                                                                ]
                                                            }
                                                        },
                                                    }
                                                ]
                                            }
                                        },
                                    },
                                ],
                            }
                        ],
                    }
                ],
            }
        ]
    }
    response = httpx.post(
        f"{standin.url}/v1/traces",
        content=json.dumps(spans),
        headers=_headers(content_type="application/json"),
    )
    assert (response.status_code, response.json()) == (200, {})
    [row] = standin.query("SELECT * FROM spans")
    assert (row["trace_id"], row["span_id"], row["parent_span_id"]) == (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        "eee19b7ec3c1b173",
    )
    assert (row["kind"], row["status_code"], row["duration_ms"]) == ("CLIENT", "ERROR", 250.0)
    assert row["start_ns"] == 1544712660000000000
    assert json.loads(row["attributes"]) == {
        "count": 9007199254740993,
        "raw": "AAH/",
        "cart": {"items": ["a", 1.5]},
    }

    logs = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "store_id", "value": {"stringValue": "s-res"}}]},
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "timeUnixNano": "1544712660100000000",
                                "severityNumber": "SEVERITY_NUMBER_ERROR",
                                "traceId": "5b8efff798038103d269b633813fc60c",
                                "spanId": "eee19b7ec3c1b174",
                                "body": {
                                    "kvlistValue": {"values": [{"key": "msg", "value": {"stringValue": "x"}}]}
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    }
    gzipped = gzip.compress(json.dumps(logs).encode())
    response = httpx.post(
        f"{standin.url}/v1/logs",
        content=gzipped,
        headers=_headers(content_type="application/json; charset=utf-8", **{"Content-Encoding": "gzip"}),
    )
    assert response.status_code == 200, response.text
    [log] = standin.query("SELECT * FROM logs")
    assert (log["trace_id"], log["span_id"], log["severity_number"]) == (
        "5b8efff798038103d269b633813fc60c",
        "eee19b7ec3c1b174",
        17,
    )
    assert json.loads(log["body"]) == {"msg": "x"}
    assert log["store_id"] == "s-res"  # from the resource, the record has none


def test_each_token_picks_its_source(standin: StandInProcess) -> None:
    errors_provider = _tracer_provider(standin, "api", "tok-errors")
    default_provider = _tracer_provider(standin, "api", "tok-default")
    errors_provider.get_tracer("t").start_span("to-errors").end()
    default_provider.get_tracer("t").start_span("to-default").end()
    errors_provider.shutdown()
    default_provider.shutdown()
    rows = standin.query("SELECT name, source FROM spans ORDER BY name")
    assert rows == [{"name": "to-default", "source": "default"}, {"name": "to-errors", "source": "errors"}]
    stats = standin.stats()
    assert stats["records"]["errors"]["spans"] == 1
    assert stats["records"]["default"]["spans"] == 1
    assert stats["requests"]["errors"]["traces"] == {"200": 1}


# --- rejected requests -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic dG9rLWRlZmF1bHQ=", "tok-default", "Bearer"]
)
def test_missing_or_wrong_token_is_401_and_stores_nothing(
    standin: StandInProcess, authorization: str | None
) -> None:
    headers = _headers(token=None)
    if authorization is not None:
        headers["Authorization"] = authorization
    response = httpx.post(
        f"{standin.url}/v1/traces", content=_span_request().SerializeToString(), headers=headers
    )
    assert (response.status_code, response.json()) == (401, {"message": "Unauthorized"})
    assert _counts(standin)["spans"] == 0
    assert standin.query("SELECT status FROM requests") == [{"status": 401}]


def _finished_spans(name: str) -> tuple[ReadableSpan, ...]:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "api"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    provider.get_tracer("t").start_span(name).end()
    provider.shutdown()
    return memory.get_finished_spans()


def test_sdk_exporter_with_a_wrong_token_fails_without_retrying(standin: StandInProcess) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{standin.url}/v1/traces", headers={"Authorization": "Bearer nope"})
    assert exporter.export(_finished_spans("denied")) is SpanExportResult.FAILURE
    exporter.shutdown()
    assert standin.stats()["responses"] == {"401": 1}
    assert _counts(standin)["spans"] == 0


def test_body_over_the_limit_is_413(tmp_path: Path) -> None:
    with StandInProcess(tmp_path, sources=TOKENS, max_body_bytes=4096) as standin:
        big = _span_request(200).SerializeToString()
        assert len(big) > 4096
        response = httpx.post(f"{standin.url}/v1/traces", content=big, headers=_headers())
        assert response.status_code == 413
        assert "4096" in response.json()["message"]

        # Streamed without Content-Length: the limit still holds.
        def chunks() -> Iterator[bytes]:
            yield big[:3000]
            yield big[3000:]

        response = httpx.post(f"{standin.url}/v1/traces", content=chunks(), headers=_headers())
        assert response.status_code == 413

        # A zip bomb: small on the wire, far over the limit once inflated.
        bomb = gzip.compress(b"\x00" * (4096 * 64))
        assert len(bomb) < 4096
        response = httpx.post(
            f"{standin.url}/v1/traces", content=bomb, headers=_headers(**{"Content-Encoding": "gzip"})
        )
        assert response.status_code == 413
        assert "decompressed" in response.json()["message"]

        small = _span_request(1).SerializeToString()
        assert httpx.post(f"{standin.url}/v1/traces", content=small, headers=_headers()).status_code == 200
        assert _counts(standin)["spans"] == 1
        statuses = [r["status"] for r in standin.query("SELECT status FROM requests ORDER BY rowid")]
        assert statuses == [413, 413, 413, 200]


@pytest.mark.parametrize(
    ("content", "content_type", "encoding", "fragment"),
    [
        (b"\xff\xff\xff", PROTOBUF, None, "not an OTLP protobuf traces request"),
        (b"{not json", "application/json", None, "not valid JSON"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            "application/json",
            None,
            "not hex",
        ),
        (b'{"resourceSpans": "nope"}', "application/json", None, "not an OTLP/JSON traces request"),
        (b"plain bytes", PROTOBUF, "gzip", "not valid gzip"),
        (gzip.compress(b"x" * 1000)[:-30], PROTOBUF, "gzip", "truncated"),
        (b"", PROTOBUF, "br", "unsupported Content-Encoding"),
    ],
)
def test_undecodable_body_is_400_with_a_reason(
    standin: StandInProcess, content: bytes, content_type: str, encoding: str | None, fragment: str
) -> None:
    extra = {"Content-Encoding": encoding} if encoding else {}
    response = httpx.post(
        f"{standin.url}/v1/traces", content=content, headers=_headers(content_type=content_type, **extra)
    )
    assert response.status_code == 400
    assert fragment in response.json()["message"]
    assert _counts(standin)["spans"] == 0
    [request] = standin.query("SELECT status, error FROM requests")
    assert request["status"] == 400 and fragment in request["error"]


def test_wrong_path_is_404_and_recorded(standin: StandInProcess) -> None:
    for path in ("/v1/trace", "/v2/traces"):
        response = httpx.post(f"{standin.url}{path}", content=b"", headers=_headers())
        assert response.status_code == 404
    rows = standin.query("SELECT source, path, status FROM requests ORDER BY rowid")
    assert rows == [
        {"source": "default", "path": "/v1/trace", "status": 404},
        {"source": "default", "path": "/v2/traces", "status": 404},
    ]


def test_unknown_content_type_is_415(standin: StandInProcess) -> None:
    response = httpx.post(
        f"{standin.url}/v1/logs", content=b"hi", headers=_headers(content_type="text/plain")
    )
    assert response.status_code == 415
    assert "application/x-protobuf" in response.json()["message"]


# --- faults ------------------------------------------------------------------------------------


def test_fault_503_for_a_window_then_recovers(standin: StandInProcess) -> None:
    body = _span_request().SerializeToString()
    standin.fault(status=503, seconds=1.5)
    response = httpx.post(f"{standin.url}/v1/traces", content=body, headers=_headers())
    assert response.status_code == 503
    assert standin.stats()["fault"]["status"] == 503
    time.sleep(1.7)
    assert httpx.post(f"{standin.url}/v1/traces", content=body, headers=_headers()).status_code == 200
    assert standin.stats()["fault"] is None
    assert _counts(standin)["spans"] == 1
    assert standin.stats()["responses"] == {"503": 1, "200": 1}


def test_sdk_exporter_retries_through_a_503_window_and_delivers_once(standin: StandInProcess) -> None:
    standin.fault(status=503, seconds=1.0)
    exporter = OTLPSpanExporter(
        endpoint=f"{standin.url}/v1/traces", headers={"Authorization": "Bearer tok-default"}, timeout=20
    )
    assert exporter.export(_finished_spans("retried")) is SpanExportResult.SUCCESS
    exporter.shutdown()
    assert standin.query("SELECT name FROM spans") == [{"name": "retried"}]
    responses = standin.stats()["responses"]
    assert responses["200"] == 1 and responses["503"] >= 1


def test_fault_429_sends_retry_after(standin: StandInProcess) -> None:
    standin.fault(status=429, retry_after=2, seconds=10)
    response = httpx.post(f"{standin.url}/v1/logs", content=b"", headers=_headers())
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "2"
    standin.fault()  # clear
    assert httpx.post(f"{standin.url}/v1/logs", content=b"", headers=_headers()).status_code == 200


def test_fault_stall_holds_each_request_then_stores_it(standin: StandInProcess) -> None:
    standin.fault(stall=1.0, seconds=30)
    started = time.monotonic()
    response = httpx.post(
        f"{standin.url}/v1/traces",
        content=_span_request().SerializeToString(),
        headers=_headers(),
        timeout=10,
    )
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.9
    # A client that gives up sooner sees a timeout.
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{standin.url}/v1/traces", content=b"", headers=_headers(), timeout=0.3)
    standin.fault()
    started = time.monotonic()
    assert httpx.post(f"{standin.url}/v1/traces", content=b"", headers=_headers()).status_code == 200
    assert time.monotonic() - started < 0.9


@pytest.mark.parametrize(
    "body",
    [{"status": 200}, {"status": "503"}, {"stall": -1}, {"seconds": 5}, {"bogus": 1}, [503]],
)
def test_bad_fault_is_400(standin: StandInProcess, body: object) -> None:
    response = httpx.post(f"{standin.url}/_standin/fault", json=body)
    assert response.status_code == 400
    assert response.json()["message"]


# --- lifecycle and query -----------------------------------------------------------------------


def test_restart_and_kill_keep_data_and_port(standin: StandInProcess) -> None:
    url = standin.url
    body = _span_request(5).SerializeToString()
    assert httpx.post(f"{url}/v1/traces", content=body, headers=_headers()).status_code == 200
    standin.restart()
    assert standin.url == url
    assert _counts(standin)["spans"] == 5
    assert httpx.post(f"{url}/v1/traces", content=body, headers=_headers()).status_code == 200
    standin.kill()  # a crash: what got a 200 is already committed
    assert not standin.running
    standin.start()
    assert standin.url == url
    assert _counts(standin)["spans"] == 10
    assert httpx.get(f"{url}/_standin/health").json()["status"] == "ok"


def test_query_is_read_only(standin: StandInProcess) -> None:
    httpx.post(f"{standin.url}/v1/traces", content=_span_request(2).SerializeToString(), headers=_headers())
    for statement in (
        "DELETE FROM spans",
        "INSERT INTO spans (source, received_ns) VALUES ('x', 1)",
        "DROP TABLE spans",
        "UPDATE spans SET name = 'x'",
        "ATTACH DATABASE 'other.db' AS other",
        "PRAGMA query_only = 0",
        "CREATE TABLE t (x)",
    ):
        response = httpx.post(f"{standin.url}/query", content=statement)
        assert response.status_code == 400, statement
        assert "only read statements" in response.json()["message"]
    response = httpx.post(f"{standin.url}/query", content="SELECT 1; DELETE FROM spans")
    assert response.status_code == 400
    response = httpx.post(f"{standin.url}/query", content="SELECT nope FROM spans")
    assert response.status_code == 400 and "nope" in response.json()["message"]
    result = httpx.post(f"{standin.url}/query", content="SELECT count(*) AS n FROM spans").json()
    assert result == {"columns": ["n"], "rows": [[2]]}
    assert not (Path(standin.db_path).parent / "other.db").exists()


def test_cli_reports_a_busy_port_in_one_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pideai_otel.local.cli",
                "standin",
                "--port",
                str(port),
                "--db",
                str(tmp_path / "x.db"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stderr.startswith(f"pideai-otel: cannot listen on 127.0.0.1:{port}")
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_rejects_a_malformed_source(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pideai_otel.local.cli",
            "standin",
            "--source",
            "default",
            "--db",
            str(tmp_path / "x.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "NAME=TOKEN" in result.stderr
