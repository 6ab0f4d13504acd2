"""P4: the built collector's capacity, full production config, to the stand-in and to a null sink.

Two sender processes push pre-serialised OTLP/gRPC requests (512 spans or 512 log records each,
built once, so a sender spends almost no CPU) with 4 requests in flight each, for a fixed time.
From the collector's own metrics, over a steady-state window (from 2 s after the start to the end
of the load):
  accepted/s   otelcol_receiver_accepted_*: what the receiver took in
  delivered/s  otelcol_exporter_sent_*: what the backend acknowledged (with the stand-in as the
               backend this is the stand-in's ingest rate)
  refused      otelcol_receiver_refused_* and memory_limiter refusals over the whole phase
After the load the runner waits until the exporters have delivered everything accepted (queue
empty), up to a cap, so a backlog is visible. The collector's CPU (% of one core, all threads)
and peak RSS come from /proc. Setups: production config to the stand-in; production config to
benchmarks._sink, which answers 200 `{}` without decoding (the collector alone); in a full run also
the sink with one cost removed at a time (memory queue, no key-based redaction, no redaction), all
collectors running side by side and rotated per round.

    python -m benchmarks.p4_capacity sender --target 127.0.0.1:4317 --signal spans --seconds 10
    (it builds its requests, prints `ready`, and starts sending when a line arrives on stdin)
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

from benchmarks._common import Result, Row, child_env, load, median, proc_cpu_seconds, proc_rss_mib

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
    # The steady-state window starts once batches flow (the exporter's batch timeout is 1 s).
    time.sleep(min(2.0, seconds / 3))
    warm, warm_at = scrape(collector.metrics_url), time.monotonic()
    reports = []
    for signal, proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        report = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": f"exit {proc.returncode}"}
        reports.append({"signal": signal, **report})
    after_load = scrape(collector.metrics_url)
    load_end = time.monotonic()
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
            # Rates over the steady-state window; totals over load + drain.
            "accepted_per_s": round(_delta(after_load, warm, f"otelcol_receiver_accepted_{m}") / (load_end - warm_at)),
            "delivered_per_s": round(_delta(after_load, warm, f"otelcol_exporter_sent_{m}") / (load_end - warm_at)),
            "delivered_per_s_incl_drain": round(delivered / total_s),
        }
    return phase


def _delta(now: dict[str, float], before: dict[str, float], key: str) -> float:
    return now.get(key, 0.0) - before.get(key, 0.0)


def _standin_rows(standin: Any) -> dict[str, int]:
    rows = standin.query("SELECT (SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM logs) AS logs")
    return {"spans": int(rows[0]["spans"]), "logs": int(rows[0]["logs"])}


# -- configurations --------------------------------------------------------------------------------
def what_if_config(kind: str, directory: Path) -> Path:
    """A copy of otel-collector.yaml with one cost removed, to show where the collector's time goes."""
    import yaml

    from pideai_otel.collector import CONFIG

    config = yaml.safe_load(CONFIG.read_text())
    if kind == "memory-queue":
        for exporter in config["exporters"].values():
            exporter["sending_queue"].pop("storage", None)
    elif kind == "no-key-redaction":
        # Drop the statements that copy attributes aside to redact by key (credential / phone keys).
        for section in ("trace_statements", "log_statements"):
            for group in config["processors"]["transform/redact"][section]:
                group["statements"] = [st for st in group["statements"] if ".cache[" not in st]
    elif kind == "no-redaction":
        for pipeline in config["service"]["pipelines"].values():
            pipeline["processors"] = [p for p in pipeline.get("processors", []) if p != "transform/redact"]
    else:
        raise ValueError(kind)
    path = directory / f"otel-collector.{kind}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# -- runner side ---------------------------------------------------------------------------------
def run(quick: bool, log: Any) -> Result:
    from pideai_otel.collector import CollectorProcess, ensure_built
    from pideai_otel.local import StandInProcess

    result = Result("P4", "collector capacity (full production config)")
    result.load_before = load()
    binary = ensure_built(log=log)
    seconds, drain_cap, rounds = (5.0, 20.0, 1) if quick else (10.0, 60.0, 3)
    senders, inflight = 2, 4
    # (label, backend, what-if): production to the stand-in and to the null sink; in a full run also
    # the sink with one cost removed at a time.
    setups = [("stand-in", "standin", None), ("sink", "sink", None)]
    if not quick:
        setups += [(f"sink, {kind}", "sink", kind) for kind in ("memory-queue", "no-key-redaction", "no-redaction")]
    tokens = {"default": "bench-default", "errors": "bench-errors"}
    phases: dict[str, dict[str, list[dict[str, Any]]]] = {label: {} for label, _, _ in setups}
    with tempfile.TemporaryDirectory(prefix="pideai-bench-p4-") as tmp, ExitStack() as stack:
        standin = stack.enter_context(StandInProcess(Path(tmp) / "standin", sources=tokens))
        sink_url = stack.enter_context(_sink(log))
        collectors = {}
        for label, backend, kind in setups:
            config = what_if_config(kind, Path(tmp)) if kind else None
            extra = {"config": config} if config else {}
            collectors[label] = stack.enter_context(CollectorProcess(
                Path(tmp) / f"collector-{len(collectors)}", standin_url=standin.url if backend == "standin" else sink_url,
                tokens=tokens, binary=binary, **extra,
            ))  # fmt: skip
        for r in range(rounds):
            shift = r % len(setups)
            for label, backend, _ in [*setups[shift:], *setups[:shift]]:
                for signal in (("spans", "logs") if r % 2 == 0 else ("logs", "spans")):
                    rows_before = _standin_rows(standin) if backend == "standin" else None
                    phase = _phase(collectors[label], (signal,), seconds, drain_cap, senders, inflight, log)
                    if rows_before is not None:
                        rows_after = _standin_rows(standin)
                        phase["standin_rows"] = {k: rows_after[k] - rows_before[k] for k in rows_after}
                    phases[label].setdefault(signal, []).append(phase)
    result.load_after = load()
    result.data = {"seconds": seconds, "drain_cap": drain_cap, "rounds": rounds, "senders": senders,
                   "inflight": inflight, "batch": BATCH, "phases": phases}  # fmt: skip
    summary: dict[str, Any] = {}
    for label, _, kind in setups:
        for signal, runs in phases[label].items():
            stats = [p["per_signal"][signal] for p in runs]
            refused = sum(st["refused"] + st["memory_limiter_refused"] for st in stats)
            errors = {k: v for p in runs for k, v in p["sender_errors"].items()}
            delivered = median(st["delivered_per_s"] for st in stats)
            accepted = median(st["accepted_per_s"] for st in stats)
            cpu = median(p["collector_cpu_pct_load"] for p in runs)
            rss = max(p["collector_rss_peak_mib"] for p in runs)
            summary[f"{label}/{signal}"] = {"delivered_per_s": delivered, "accepted_per_s": accepted, "refused": refused,
                                            "sender_errors": errors, "cpu_pct": cpu, "rss_peak_mib": rss}  # fmt: skip
            what = "stand-in ingest" if label == "stand-in" else "delivered"
            is_target = kind is None
            result.rows.append(Row(
                f"{label}: {signal}/s {what} (accepted {accepted:,.0f}/s); collector {cpu:.0f}% CPU, {rss:.0f} MiB peak",
                f"{delivered:,.0f}", "-", None, f">= {TARGET:,}/s, 0 refused" if is_target else "-",
                (delivered >= TARGET and refused == 0 and not errors) if is_target else None,
            ))  # fmt: skip
            if refused or errors:
                result.notes.append(f"{label} {signal}: {refused:.0f} refused by the collector; sender errors {errors}.")
            undrained = [p["drain_seconds"] for p in runs if not p["drained"]]
            if undrained:
                result.notes.append(f"{label} {signal}: the queue had not drained {undrained[0]} s after the load stopped; "
                                    "delivered/s is the backend-limited rate.")  # fmt: skip
    result.data["summary"] = summary
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
