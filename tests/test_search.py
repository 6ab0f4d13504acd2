"""Search over the stand-in: trace trees, filters, SQL; through /query and from the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from pideai_otel.local import StandInProcess, search
from pideai_otel.local.cli import main

MINUTE_NS = 60 * 1_000_000_000
NOW_NS = time.time_ns()  # reset when the data is written: relative filters ("3m") count from then
HEADERS = {"Authorization": "Bearer tok-default"}


@dataclass
class Dataset:
    trace_id: str
    root_id: str
    child_id: str
    grandchild_id: str


class _Service:
    """A service's own providers, exporting synchronously to the stand-in."""

    def __init__(self, url: str, name: str) -> None:
        resource = Resource.create({"service.name": name})
        self.tracer_provider = TracerProvider(resource=resource)
        self.tracer_provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{url}/v1/traces", headers=HEADERS))
        )
        self.logger_provider = LoggerProvider(resource=resource)
        self.logger_provider.add_log_record_processor(
            SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{url}/v1/logs", headers=HEADERS))
        )
        self.tracer = self.tracer_provider.get_tracer("tests.search")
        self.logger = self.logger_provider.get_logger("tests.search")

    def log(
        self, body: str, severity: SeverityNumber, at_ns: int, span: trace.Span | None = None, **attrs: str
    ) -> None:
        context = trace.set_span_in_context(span) if span is not None else None
        self.logger.emit(
            LogRecord(
                timestamp=at_ns,
                body=body,
                severity_number=severity,
                severity_text=severity.name.rstrip("0123456789"),
                attributes=attrs,
                context=context,
            )
        )

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.logger_provider.shutdown()


def populate(url: str) -> Dataset:
    """One order across two services, plus unrelated and older records."""
    global NOW_NS
    NOW_NS = time.time_ns()
    api, worker = _Service(url, "checkout-api"), _Service(url, "image-worker")
    t0 = NOW_NS - 5 * MINUTE_NS
    ms = 1_000_000
    tenant = {"store_id": "s-1", "user_id": "u-1", "order_id": "o-1"}
    root = api.tracer.start_span("POST /orders", kind=SpanKind.SERVER, attributes=tenant, start_time=t0)
    api.log("order placed", SeverityNumber.INFO, t0 + 1 * ms, root, **tenant)
    child = worker.tracer.start_span(
        "gemini.generate",
        context=trace.set_span_in_context(root),
        attributes={"store_id": "s-1"},
        start_time=t0 + 2 * ms,
    )
    worker.log("calling gemini", SeverityNumber.DEBUG, t0 + 3 * ms, child, store_id="s-1")
    grandchild = worker.tracer.start_span(
        "upload", context=trace.set_span_in_context(child), start_time=t0 + 4 * ms
    )
    grandchild.end(end_time=t0 + 6 * ms)
    worker.log(
        "quota exceeded for store", SeverityNumber.ERROR, t0 + 7 * ms, child, store_id="s-1", user_id="u-1"
    )
    child.set_status(Status(StatusCode.ERROR, "quota"))
    child.end(end_time=t0 + 8 * ms)
    root.end(end_time=t0 + 10 * ms)
    context = root.get_span_context()
    # An error reported by another system (e.g. the Sentry bridge) for a span this trace never exported.
    foreign = NonRecordingSpan(
        SpanContext(context.trace_id, 0xABCDEF, is_remote=True, trace_flags=TraceFlags(1))
    )
    api.log("browser error", SeverityNumber.ERROR, t0 + 9 * ms, foreign, store_id="s-1")
    api.log("cache miss", SeverityNumber.DEBUG, NOW_NS - 1 * MINUTE_NS, store_id="s-2")
    api.log("slow response", SeverityNumber.WARN, NOW_NS - 120 * MINUTE_NS, store_id="s-1")
    api.log("it's quoted", SeverityNumber.INFO, NOW_NS - 2 * MINUTE_NS, store_id="s-'1")
    api.shutdown()
    worker.shutdown()
    return Dataset(
        trace_id=f"{context.trace_id:032x}",
        root_id=f"{context.span_id:016x}",
        child_id=f"{child.get_span_context().span_id:016x}",
        grandchild_id=f"{grandchild.get_span_context().span_id:016x}",
    )


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[StandInProcess, Dataset]]:
    with StandInProcess(tmp_path_factory.mktemp("search"), sources={"default": "tok-default"}) as standin:
        yield standin, populate(standin.url)


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- trace -------------------------------------------------------------------------------------


def test_trace_is_a_tree_with_logs_under_their_spans(populated: tuple[StandInProcess, Dataset]) -> None:
    standin, data = populated
    tree = search.trace(data.trace_id.upper(), url=standin.url)
    assert tree is not None
    assert (tree["trace_id"], tree["span_count"], tree["log_count"]) == (data.trace_id, 3, 4)
    assert tree["services"] == ["checkout-api", "image-worker"]
    assert tree["duration_ms"] == pytest.approx(10.0)
    [root] = tree["spans"]
    assert (root["span_id"], root["service"], root["name"], root["status_code"]) == (
        data.root_id,
        "checkout-api",
        "POST /orders",
        "UNSET",
    )
    assert [log["body"] for log in root["logs"]] == ["order placed"]
    [child] = root["children"]
    assert (child["span_id"], child["service"], child["status_code"], child["duration_ms"]) == (
        data.child_id,
        "image-worker",
        "ERROR",
        pytest.approx(6.0),
    )
    assert [log["body"] for log in child["logs"]] == ["calling gemini", "quota exceeded for store"]
    assert [c["span_id"] for c in child["children"]] == [data.grandchild_id]
    # The log whose span is not in the trace sits at the root.
    assert [log["body"] for log in tree["logs"]] == ["browser error"]
    assert root["attributes"]["order_id"] == "o-1"


def test_trace_cli_prints_an_indented_timeline(
    populated: tuple[StandInProcess, Dataset], capsys: pytest.CaptureFixture[str]
) -> None:
    standin, data = populated
    code, out, err = run_cli(capsys, "search", "trace", data.trace_id, "--url", standin.url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"trace {data.trace_id}") and "3 spans, 4 logs" in lines[0]
    body = lines[1:]
    expected = [
        "checkout-api | POST /orders | 10.0 ms | UNSET | store_id=s-1",
        "INFO  | checkout-api | order placed | store_id=s-1",
        "image-worker | gemini.generate | 6.0 ms | ERROR: quota | store_id=s-1",
        "DEBUG | image-worker | calling gemini | store_id=s-1",
        "image-worker | upload | 2.0 ms | UNSET",
        "ERROR | image-worker | quota exceeded for store | store_id=s-1",
        "ERROR | checkout-api | browser error | store_id=s-1",
    ]
    assert len(body) == len(expected)
    for line, fragment in zip(body, expected):
        assert line.endswith(fragment), (line, fragment)
    indents = [len(line) - len(line.lstrip()) for line in body]
    # Spans nest by two spaces; a span's logs sit two further in.
    assert indents == [0, 4, 2, 6, 4, 6, 2]


def test_trace_cli_json(
    populated: tuple[StandInProcess, Dataset], capsys: pytest.CaptureFixture[str]
) -> None:
    standin, data = populated
    code, out, _ = run_cli(capsys, "search", "trace", data.trace_id, "--url", standin.url, "--json")
    assert code == 0
    tree = json.loads(out)
    assert tree["spans"][0]["children"][0]["logs"][1]["severity_number"] == 17


def test_missing_trace_is_one_line_and_exit_1(
    populated: tuple[StandInProcess, Dataset], capsys: pytest.CaptureFixture[str]
) -> None:
    standin, _ = populated
    code, out, err = run_cli(capsys, "search", "trace", "0" * 31 + "1", "--url", standin.url)
    assert (code, out) == (1, "")
    assert err == f"pideai-otel: trace {'0' * 31}1 not found\n"
    code, _, err = run_cli(capsys, "search", "trace", "xyz", "--url", standin.url)
    assert code == 2 and "32 hex digits" in err


# --- filters ----------------------------------------------------------------------------------


def _bodies(records: list[dict[str, object]]) -> list[object]:
    return [r["body"] for r in records]


def test_log_filters(populated: tuple[StandInProcess, Dataset]) -> None:
    standin, data = populated
    with search.connect(standin.url) as s:
        assert _bodies(s.find_logs(store_id="s-1", since="1h")) == [
            "order placed",
            "calling gemini",
            "quota exceeded for store",
            "browser error",
        ]
        assert _bodies(s.find_logs(store_id="s-1"))[0] == "slow response"  # no time bound
        assert _bodies(s.find_logs(severity="error")) == ["quota exceeded for store", "browser error"]
        assert _bodies(s.find_logs(severity="warn", store_id="s-1")) == [
            "slow response",
            "quota exceeded for store",
            "browser error",
        ]
        assert _bodies(s.find_logs(service="image-worker")) == ["calling gemini", "quota exceeded for store"]
        assert _bodies(s.find_logs(user_id="u-1")) == ["order placed", "quota exceeded for store"]
        assert _bodies(s.find_logs(order_id="o-1")) == ["order placed"]
        assert _bodies(s.find_logs(text="QUOTA")) == ["quota exceeded for store"]
        assert _bodies(s.find_logs(trace_id=data.trace_id, severity="info")) == [
            "order placed",
            "quota exceeded for store",
            "browser error",
        ]
        assert _bodies(s.find_logs(since="3m")) == ["it's quoted", "cache miss"]
        assert _bodies(s.find_logs(until="1h")) == ["slow response"]
        until_iso = datetime.fromtimestamp((NOW_NS - 60 * MINUTE_NS) / 1e9, tz=UTC).isoformat()
        assert _bodies(s.find_logs(until=until_iso)) == ["slow response"]
        # The limit keeps the most recent, shown oldest first.
        assert _bodies(s.find_logs(limit=2)) == ["it's quoted", "cache miss"]
        # A quote in a value is data, not SQL.
        assert _bodies(s.find_logs(store_id="s-'1")) == ["it's quoted"]
        assert s.find_logs(store_id="x' OR '1'='1") == []
        record = s.find_logs(order_id="o-1")[0]
        assert record["attributes"]["user_id"] == "u-1" and record["time"].endswith("Z")


def test_span_filters(populated: tuple[StandInProcess, Dataset]) -> None:
    standin, data = populated
    spans = search.find_spans(url=standin.url, status="error")
    assert [(s["name"], s["status_message"]) for s in spans] == [("gemini.generate", "quota")]
    assert [s["name"] for s in search.find_spans(url=standin.url, store_id="s-1")] == [
        "POST /orders",
        "gemini.generate",
    ]
    assert [s["name"] for s in search.find_spans(url=standin.url, service="image-worker")] == [
        "gemini.generate",
        "upload",
    ]
    assert [s["name"] for s in search.find_spans(url=standin.url, text="upl")] == ["upload"]
    assert [s["span_id"] for s in search.find_spans(url=standin.url, trace_id=data.trace_id, limit=1)] == [
        data.grandchild_id
    ]
    assert search.find_spans(url=standin.url, since="1m") == []
    with pytest.raises(ValueError, match="unset, ok, error"):
        search.find_spans(url=standin.url, status="bad")


def test_logs_and_spans_cli(
    populated: tuple[StandInProcess, Dataset], capsys: pytest.CaptureFixture[str]
) -> None:
    standin, data = populated
    code, out, err = run_cli(
        capsys, "search", "logs", "--store-id", "s-1", "--severity", "error", "--url", standin.url
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["time", "severity", "service", "body", "store_id", "trace_id"]
    assert "quota exceeded for store" in lines[1] and data.trace_id in lines[1]
    assert lines[-1] == "(2 rows)"
    code, out, _ = run_cli(capsys, "search", "spans", "--status", "error", "--json", "--url", standin.url)
    assert code == 0
    assert [s["name"] for s in json.loads(out)] == ["gemini.generate"]
    code, _, err = run_cli(capsys, "search", "logs", "--since", "yesterday", "--url", standin.url)
    assert code == 2 and "relative (15m, 2h, 1d)" in err
    code, _, err = run_cli(capsys, "search", "logs", "--severity", "loud", "--url", standin.url)
    assert code == 2 and "severity 'loud'" in err


# --- SQL ----------------------------------------------------------------------------------------


def test_sql_cli_reads_and_refuses_writes(
    populated: tuple[StandInProcess, Dataset], capsys: pytest.CaptureFixture[str]
) -> None:
    standin, _ = populated
    query = "SELECT service, count(*) AS spans FROM spans GROUP BY service ORDER BY service"
    code, out, _ = run_cli(capsys, "search", "sql", query, "--json", "--url", standin.url)
    assert code == 0
    assert json.loads(out) == {
        "columns": ["service", "spans"],
        "rows": [["checkout-api", 1], ["image-worker", 2]],
    }
    code, out, _ = run_cli(capsys, "search", "sql", query, "--url", standin.url)
    assert out.splitlines()[1].split() == ["checkout-api", "1"]
    code, out, err = run_cli(capsys, "search", "sql", "DELETE FROM logs", "--url", standin.url)
    assert (code, out) == (2, "")
    assert err.startswith("pideai-otel: query refused: only read statements are allowed")
    assert len(err.splitlines()) == 1
    assert standin.query("SELECT count(*) AS n FROM logs") == [{"n": 7}]


# --- without a running stand-in ----------------------------------------------------------------


def test_search_reads_the_file_when_no_standin_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin = StandInProcess(tmp_path, sources={"default": "tok-default"})
    with standin:
        data = populate(standin.url)
        dead_url = standin.url
        standin.kill()  # WAL and shared-memory files left behind, as after a crash
        code, out, err = run_cli(
            capsys, "search", "trace", data.trace_id, "--url", dead_url, "--db", str(standin.db_path)
        )
        assert code == 0, err
        assert "image-worker | gemini.generate" in out
        standin.start()
        standin.stop()  # a clean stop
        tree = search.trace(data.trace_id, url=dead_url, db_path=standin.db_path)
        assert tree is not None and tree["span_count"] == 3
        result = search.sql("SELECT count(*) FROM spans", url=None, db_path=standin.db_path)
        assert result.rows == [[3]]
        with pytest.raises(search.SearchError, match="only read statements"):
            search.sql("DELETE FROM spans", url=None, db_path=standin.db_path)
        assert search.sql("SELECT count(*) FROM spans", url=None, db_path=standin.db_path).rows == [[3]]


def test_no_standin_and_no_database_names_the_remedy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.sqlite3"
    code, out, err = run_cli(capsys, "search", "logs", "--url", "http://127.0.0.1:9", "--db", str(missing))
    assert (code, out) == (2, "")
    assert str(missing) in err and "pideai-otel standin" in err
    assert len(err.splitlines()) == 1


def test_default_database_comes_from_the_data_dir(tmp_path: Path) -> None:
    env = {**os.environ, "PIDEAI_OTEL_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run(
        [sys.executable, "-m", "pideai_otel.local.cli", "search", "logs", "--url", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 2
    assert str(tmp_path / "data" / "standin.sqlite3") in result.stderr


# --- parsing ----------------------------------------------------------------------------------


def test_parse_time() -> None:
    now = 1_700_000_000 * 1_000_000_000
    assert search.parse_time("15m", now_ns=now) == now - 15 * MINUTE_NS
    assert search.parse_time("2h", now_ns=now) == now - 120 * MINUTE_NS
    assert search.parse_time("1.5s", now_ns=now) == now - 1_500_000_000
    assert search.parse_time("now", now_ns=now) == now
    assert search.parse_time("2023-11-14T22:13:20Z") == now
    assert search.parse_time("2023-11-14T23:13:20+01:00") == now
    assert search.parse_time("2023-11-14 22:13:20") == now  # no offset: UTC
    with pytest.raises(ValueError, match="neither ISO 8601"):
        search.parse_time("soon")


def test_severity_names() -> None:
    assert [search.severity_number(n) for n in ("debug", "INFO", "warn", "warning", "error", "fatal")] == [
        5,
        9,
        13,
        13,
        17,
        21,
    ]
    assert search.severity_number("17") == 17
    with pytest.raises(ValueError):
        search.severity_number("loud")
