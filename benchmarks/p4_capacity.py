"""P4: the built collector's capacity, full production config, to the stand-in and to a null sink.

Several sender processes push pre-serialised OTLP/gRPC requests (512 spans or 512 log records
each, built once, so a sender spends almost no CPU) with a few requests in flight, for a fixed
time. Then the runner waits until the collector's exporters have delivered everything they
accepted (queue empty), up to a cap. From the collector's own metrics:
  accepted/s   otelcol_receiver_accepted_* over the load window (what the receiver took in)
  delivered/s  otelcol_exporter_sent_* over load + drain (what the backend acknowledged)
  sustained    delivered records / (load + drain time), with zero otelcol_receiver_refused_*;
               if the queue did not drain within the cap, this is the backend-limited rate
The collector's CPU (all cores, % of one core) and peak RSS are read from /proc. The same run is
made against the stand-in (Python + SQLite: its ingest rate is the delivered rate) and against
benchmarks._sink, which answers 200 `{}` without decoding, to measure the collector alone.

    python -m benchmarks.p4_capacity sender --target 127.0.0.1:4317 --signal spans --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from benchmarks._common import Result, Row, child_env, load, proc_cpu_seconds, proc_rss_mib

BATCH = 512
METHODS = {
    "spans": "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
# Collector self-metric names per signal (Prometheus suffix).
METRIC = {"spans": "spans", "logs": "log_records"}
TARGET = 20_000


# -- request building ---------------------------------------------------------------------------
def _kv(key: str, value: Any) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def _resource(service: str) -> Any:
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource

    return Resource(attributes=[
        _kv("service.name", service), _kv("service.version", "2026.12.1"), _kv("service.namespace", "pideai"),
        _kv("deployment.environment", "production"), _kv("telemetry.sdk.language", "python"),
    ])  # fmt: skip


def build_request(signal: str, rng: random.Random) -> bytes:
    """One Export request of BATCH records shaped like the kit's output (tenant keys, code location)."""
    now = time.time_ns()
    store, user = f"store-{rng.randrange(50)}", f"user-{rng.randrange(5000)}"
    if signal == "spans":
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
        from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

        spans = []
        for i in range(BATCH):
            order = f"ord-{rng.getrandbits(40):010x}"
            spans.append(Span(
                trace_id=rng.randbytes(16), span_id=rng.randbytes(8), parent_span_id=rng.randbytes(8) if i % 4 else b"",
                name=("POST /orders", "payments.charge", "gemini.generate_image", "SELECT orders")[i % 4],
                kind=Span.SPAN_KIND_SERVER if i % 4 == 0 else Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=now - 40_000_000, end_time_unix_nano=now - rng.randrange(1_000_000, 30_000_000),
                attributes=[
                    _kv("http.request.method", "POST"), _kv("http.route", "/orders"), _kv("http.response.status_code", 201),
                    _kv("url.path", f"/orders/{order}"), _kv("server.address", "orders.internal"),
                    _kv("store_id", store), _kv("user_id", user), _kv("order_id", order),
                    _kv("order.items", rng.randrange(1, 6)), _kv("order.total", round(rng.uniform(3, 80), 2)),
                ],
            ))  # fmt: skip
        request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
            resource=_resource("orders"), scope_spans=[ScopeSpans(spans=spans)])])  # fmt: skip
    else:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
        from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs, SeverityNumber

        records = []
        for i in range(BATCH):
            order = f"ord-{rng.getrandbits(40):010x}"
            # 90% INFO (default source), 5% WARN, 5% ERROR (errors source); none low-value, so every
            # accepted record is delivered exactly once and the counts can be checked.
            severity, text = (
                (SeverityNumber.SEVERITY_NUMBER_ERROR, "ERROR") if i % 20 == 0 else
                (SeverityNumber.SEVERITY_NUMBER_WARN, "WARNING") if i % 20 == 1 else
                (SeverityNumber.SEVERITY_NUMBER_INFO, "INFO")
            )  # fmt: skip
            records.append(LogRecord(
                time_unix_nano=now, observed_time_unix_nano=now, severity_number=severity, severity_text=text,
                body=_any(f"order {order} placed with {rng.randrange(1, 6)} item(s)"),
                trace_id=rng.randbytes(16), span_id=rng.randbytes(8), flags=1,
                attributes=[
                    _kv("code.file.path", "/app/pideai/orders/service.py"), _kv("code.function.name", "create_order"),
                    _kv("code.line.number", 148), _kv("logger.name", "pideai.orders"),
                    _kv("store_id", store), _kv("user_id", user), _kv("order_id", order),
                    _kv("order.total", round(rng.uniform(3, 80), 2)),
                ],
            ))  # fmt: skip
        request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(
            resource=_resource("orders"), scope_logs=[ScopeLogs(log_records=records)])])  # fmt: skip
    return request.SerializeToString()


def _any(text: str) -> Any:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    return AnyValue(string_value=text)


# -- the sender process ------------------------------------------------------------------------
def sender(target: str, signal: str, seconds: float, inflight: int, seed: int) -> dict[str, Any]:
    import grpc

    rng = random.Random(seed)
    requests = [build_request(signal, rng) for _ in range(16)]
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 16 << 20)])
    grpc.channel_ready_future(channel).result(timeout=10)
    # No serializers: the pre-built bytes go on the wire as they are.
    call = channel.unary_unary(METHODS[signal], request_serializer=None, response_deserializer=None)
    # Building the requests takes seconds; the runner starts every sender's clock at once.
    print("ready", flush=True)
    sys.stdin.readline()
    ok, errors = 0, {}
    pending: list[Any] = []
    cpu0, started = time.process_time(), time.monotonic()
    i = 0
    while time.monotonic() - started < seconds:
        while len(pending) >= inflight:
            future = pending.pop(0)
            try:
                future.result(timeout=30)
                ok += 1
            except grpc.RpcError as exc:
                code = exc.code().name if exc.code() else "UNKNOWN"
                errors[code] = errors.get(code, 0) + 1
        pending.append(call.future(requests[i % len(requests)], timeout=30))
        i += 1
    for future in pending:
        try:
            future.result(timeout=30)
            ok += 1
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() else "UNKNOWN"
            errors[code] = errors.get(code, 0) + 1
    elapsed = time.monotonic() - started
    channel.close()
    return {"ok_requests": ok, "records": ok * BATCH, "errors": errors, "seconds": elapsed,
            "cpu_seconds": time.process_time() - cpu0}  # fmt: skip


# -- collector metrics -----------------------------------------------------------------------------
def scrape(metrics_url: str) -> dict[str, float]:
    """Sums of the collector's receiver/exporter counters and queue sizes, keyed by a short name."""
    import httpx

    from pideai_otel.collector import parse_prometheus

    out: dict[str, float] = {}
    text = httpx.get(metrics_url, timeout=10).text
    for name, labels, value in parse_prometheus(text):
        base = name.removesuffix("_total")
        for prefix in ("otelcol_receiver_accepted_", "otelcol_receiver_refused_", "otelcol_receiver_failed_",
                       "otelcol_exporter_sent_", "otelcol_exporter_send_failed_", "otelcol_exporter_enqueue_failed_",
                       "otelcol_processor_memory_limiter_refused_"):  # fmt: skip
            if base.startswith(prefix):
                out[base] = out.get(base, 0.0) + value
        if name == "otelcol_exporter_queue_size":
            out["queue_size"] = out.get("queue_size", 0.0) + value
    return out


@contextmanager
def _sink(log: Any) -> Iterator[str]:
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks._sink"], stderr=subprocess.PIPE, stdout=log,
                            env=child_env(), text=True)  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"(http://\S+)", line)
        if not match:
            raise RuntimeError(f"sink did not start: {line!r}")
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def _phase(collector: Any, signal_names: tuple[str, ...], seconds: float, drain_cap: float, senders: int, inflight: int, log: Any) -> dict[str, Any]:
    pid = collector._proc.pid  # CollectorProcess keeps its Popen private; the pid is all we read
    target = collector.grpc_endpoint.removeprefix("http://")
    procs = []
    for i in range(senders):
        signal = signal_names[i % len(signal_names)]
        argv = [sys.executable, "-m", "benchmarks.p4_capacity", "sender", "--target", target, "--signal", signal,
                "--seconds", str(seconds), "--seed", str(i), "--inflight", str(inflight)]  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=child_env(), text=True)
        procs.append((signal, proc))
    for _, proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("a sender did not start; see benchmarks/results/workers.log")
    before = scrape(collector.metrics_url)
    cpu0 = proc_cpu_seconds(pid)
    peak = [proc_rss_mib(pid)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            peak.append(proc_rss_mib(pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    for _, proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    reports = []
    for signal, proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": f"exit {proc.returncode}"}
        reports.append({"signal": signal, **report})
    load_end = time.monotonic()
    after_load = scrape(collector.metrics_url)
    cpu_load = proc_cpu_seconds(pid) - cpu0
    # Drain: everything accepted has been delivered (queue empty), or the cap is reached.
    drained = False
    while time.monotonic() - load_end < drain_cap:
        now = scrape(collector.metrics_url)
        if all(_delta(now, before, f"otelcol_exporter_sent_{METRIC[s]}") >= _delta(after_load, before, f"otelcol_receiver_accepted_{METRIC[s]}")
               for s in signal_names) and now.get("queue_size", 0) == 0:  # fmt: skip
            drained = True
            break
        time.sleep(0.2)
    end = time.monotonic()
    final = scrape(collector.metrics_url)
    cpu_total = proc_cpu_seconds(pid) - cpu0
    stop.set()
    sampler.join()
    load_s, total_s = load_end - started, end - started
    phase: dict[str, Any] = {
        "signals": list(signal_names), "senders": senders, "load_seconds": round(load_s, 2),
        "drain_seconds": round(end - load_end, 2), "drained": drained,
        "collector_cpu_pct_load": round(100 * cpu_load / load_s, 1),
        "collector_cpu_pct_total": round(100 * cpu_total / total_s, 1),
        "collector_rss_peak_mib": round(max(peak), 1),
        "sender_cpu_seconds": round(sum(r.get("cpu_seconds", 0) for r in reports), 2),
        "sender_errors": {k: v for r in reports for k, v in r.get("errors", {}).items()},
        "per_signal": {},
    }
    for s in signal_names:
        m = METRIC[s]
        accepted = _delta(after_load, before, f"otelcol_receiver_accepted_{m}")
        delivered = _delta(final, before, f"otelcol_exporter_sent_{m}")
        phase["per_signal"][s] = {
            "sent_by_senders": sum(r.get("records", 0) for r in reports if r["signal"] == s),
            "accepted": accepted,
            "refused": _delta(final, before, f"otelcol_receiver_refused_{m}"),
            "memory_limiter_refused": _delta(final, before, f"otelcol_processor_memory_limiter_refused_{m}"),
            "send_failed": _delta(final, before, f"otelcol_exporter_send_failed_{m}"),
            "enqueue_failed": _delta(final, before, f"otelcol_exporter_enqueue_failed_{m}"),
            "delivered": delivered,
            "accepted_per_s": round(accepted / load_s),
            "delivered_per_s": round(delivered / total_s),
        }
    return phase


def _delta(now: dict[str, float], before: dict[str, float], key: str) -> float:
    return now.get(key, 0.0) - before.get(key, 0.0)


def _standin_rows(standin: Any) -> dict[str, int]:
    rows = standin.query("SELECT (SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM logs) AS logs")
    return {"spans": int(rows[0]["spans"]), "logs": int(rows[0]["logs"])}


# -- runner side ---------------------------------------------------------------------------------
def run(quick: bool, log: Any) -> Result:
    from pideai_otel.collector import CollectorProcess, ensure_built
    from pideai_otel.local import StandInProcess

    result = Result("P4", "collector capacity (full production config)")
    result.load_before = load()
    binary = ensure_built(log=log)
    seconds, drain_cap, senders, inflight = (6.0, 20.0, 3, 4) if quick else (20.0, 90.0, 3, 4)
    phases: list[tuple[str, tuple[str, ...]]] = [("spans", ("spans",)), ("logs", ("logs",))]
    if not quick:
        phases.append(("mixed", ("spans", "logs")))
    tokens = {"default": "bench-default", "errors": "bench-errors"}
    data: dict[str, Any] = {"seconds": seconds, "drain_cap": drain_cap, "senders": senders, "batch": BATCH, "backends": {}}
    with tempfile.TemporaryDirectory(prefix="pideai-bench-p4-") as tmp:
        for backend in ("standin", "sink"):
            with ExitStack() as stack:
                standin = None
                if backend == "standin":
                    standin = stack.enter_context(StandInProcess(Path(tmp) / "standin", sources=tokens))
                    url = standin.url
                else:
                    url = stack.enter_context(_sink(log))
                collector = stack.enter_context(CollectorProcess(Path(tmp) / f"collector-{backend}", standin_url=url, tokens=tokens, binary=binary))
                results: dict[str, Any] = {}
                for label, signal_names in phases:
                    rows_before = _standin_rows(standin) if standin else None
                    phase = _phase(collector, signal_names, seconds, drain_cap, senders, inflight, log)
                    if standin and rows_before:
                        rows_after = _standin_rows(standin)
                        phase["standin_rows"] = {k: rows_after[k] - rows_before[k] for k in rows_after}
                    results[label] = phase
                data["backends"][backend] = results
    result.load_after = load()
    result.data = data
    for backend, results in data["backends"].items():
        for label, phase in results.items():
            for s, stats in phase["per_signal"].items():
                refused = stats["refused"] + stats["memory_limiter_refused"]
                sustained = stats["delivered_per_s"]
                clean = refused == 0 and not phase["sender_errors"]
                result.rows.append(Row(
                    f"{backend}, {label}: {s}/s delivered (accepted {stats['accepted_per_s']:,}/s)",
                    f"{sustained:,}", "-", None, f">= {TARGET:,}/s, 0 refused", sustained >= TARGET and clean,
                ))  # fmt: skip
            result.rows.append(Row(
                f"{backend}, {label}: collector CPU / peak RSS",
                f"{phase['collector_cpu_pct_load']:.0f}% of a core / {phase['collector_rss_peak_mib']:.0f} MiB",
            ))  # fmt: skip
            if not phase["drained"]:
                result.notes.append(f"{backend} {label}: the queue had not drained {phase['drain_seconds']} s after the load "
                                    "stopped; delivered/s is the backend-limited rate.")  # fmt: skip
            for s, stats in phase["per_signal"].items():
                refused = stats["refused"] + stats["memory_limiter_refused"]
                if refused or phase["sender_errors"] or stats["send_failed"] or stats["enqueue_failed"]:
                    result.notes.append(f"{backend} {label} {s}: refused {refused:.0f}, sender errors {phase['sender_errors']}, "
                                        f"send_failed {stats['send_failed']:.0f}, enqueue_failed {stats['enqueue_failed']:.0f}.")  # fmt: skip
    return result


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.p4_capacity")
    sub = parser.add_subparsers(dest="cmd", required=True)
    send = sub.add_parser("sender")
    send.add_argument("--target", required=True)
    send.add_argument("--signal", choices=sorted(METHODS), required=True)
    send.add_argument("--seconds", type=float, default=10.0)
    send.add_argument("--inflight", type=int, default=2)
    send.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(sender(args.target, args.signal, args.seconds, args.inflight, args.seed + os.getpid())))


if __name__ == "__main__":
    main(sys.argv[1:])
