"""P2: the cost of one `logger.info("...", extra={...})`, the kit's bridge against the SDK handlers.

All variants export through a BatchLogRecordProcessor to an exporter that only counts. The call is
made inside an active span (so every record carries trace and span ids) with five `extra` fields.
  sdk-handler      opentelemetry.sdk._logs.LoggingHandler (deprecated in 1.45, still the baseline)
  contrib-handler  opentelemetry-instrumentation-logging 0.66b2's LoggingHandler, code attributes on
  kit              the kit's BridgeHandler: the caller formats and queues; conversion, tenant, code
                   location and redaction happen on the bridge worker and the export thread
  logfire          LogfireLoggingHandler (records become Logfire log spans)
Per round each worker logs N records, then flushes everything, and reports:
  caller_cpu  CPU time of the calling thread only (time.thread_time): what the app's thread pays
  caller      wall time of the N calls (includes waiting for the GIL held by the kit's worker)
  total       wall time including the flush, i.e. until every record has been exported
  cpu         CPU time of the whole process (all threads) over the same span
"""

from __future__ import annotations

import gc
import logging
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks._common import Result, Row, Worker, can_import, interleaved, load, median, serve_worker

EXTRA: dict[str, Any] = {
    "order.items": 3,
    "order.total": 12.5,
    "payment.method": "card",
    "delivery.zone": "centro",
    "promo.codes": ["SPRING", "FREESHIP"],
}
VARIANTS = ("sdk-handler", "contrib-handler", "kit", "kit-no-redaction", "logfire")


def counting_log_exporter() -> Any:
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult

    class CountingLogExporter(LogRecordExporter):
        def __init__(self) -> None:
            self.count = 0

        def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
            self.count += len(batch)
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return True

    return CountingLogExporter()


def _sdk_pipeline(exporter: Any) -> Any:
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    provider = LoggerProvider(resource=Resource({"service.name": "bench"}), shutdown_on_exit=False)
    provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
    return provider


def _setup(variant: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    root = logging.getLogger()
    root.handlers.clear()
    root.setLevel(logging.INFO)
    exporter = counting_log_exporter()
    flush: Callable[[], Any]
    if variant == "sdk-handler":
        from opentelemetry.sdk._logs import LoggingHandler

        provider = _sdk_pipeline(exporter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            root.addHandler(LoggingHandler(logger_provider=provider))
        flush = provider.force_flush
    elif variant == "contrib-handler":
        from opentelemetry.instrumentation.logging.handler import LoggingHandler as ContribHandler

        provider = _sdk_pipeline(exporter)
        root.addHandler(ContribHandler(logger_provider=provider, log_code_attributes=True))
        flush = provider.force_flush
    elif variant in ("kit", "kit-no-redaction"):
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        import pideai_otel
        from benchmarks.p1_spans import _counting_exporter
        from pideai_otel._config import resolve_settings
        from pideai_otel._redaction import NO_REDACTION
        from pideai_otel._setup import _init

        settings = resolve_settings({"service_name": "bench"}, environ={})  # defaults, as init_telemetry builds it
        handle = _init(
            settings, policy=NO_REDACTION if variant == "kit-no-redaction" else None,
            span_exporter=_counting_exporter(), log_exporter=exporter, metric_reader=InMemoryMetricReader(),
        )  # fmt: skip
        flush = handle.flush
        pideai_otel.tenant_context(store_id="store-lima", user_id="user-42").__enter__()
    elif variant == "logfire":
        import logfire
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from benchmarks.p1_spans import _counting_exporter

        exporter = _counting_exporter()
        instance = logfire.configure(
            send_to_logfire=False, console=False, metrics=False, inspect_arguments=False, service_name="bench",
            additional_span_processors=[BatchSpanProcessor(exporter)],
        )  # fmt: skip
        root.addHandler(logfire.LogfireLoggingHandler(logfire_instance=instance))
        flush = instance.force_flush
    else:
        raise ValueError(f"unknown variant {variant!r}")

    # One active span for the whole worker: every record is correlated, none pays for a span.
    span = NonRecordingSpan(SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7, False, TraceFlags(1)))
    trace.use_span(span).__enter__()
    logger = logging.getLogger("bench.orders")

    def emit(n: int) -> None:
        info = logger.info
        for i in range(n):
            info("order %s placed with %d item(s)", i, 3, extra=EXTRA)

    def run(command: dict[str, Any]) -> dict[str, Any]:
        n = int(command["n"])
        gc.collect()
        before = exporter.count
        cpu0, th0, t0 = time.process_time(), time.thread_time(), time.perf_counter()
        emit(n)
        t1, th1 = time.perf_counter(), time.thread_time()
        flush()
        t2, cpu2 = time.perf_counter(), time.process_time()
        return {
            "n": n,
            "exported": exporter.count - before,
            "caller_cpu_us": (th1 - th0) / n * 1e6,
            "caller_us": (t1 - t0) / n * 1e6,
            "total_us": (t2 - t0) / n * 1e6,
            "cpu_us": (cpu2 - cpu0) / n * 1e6,
        }

    return run


# -- runner side ---------------------------------------------------------------------------------
def run(quick: bool, log: Any) -> Result:
    result = Result("P2", "log record cost: kit bridge vs SDK handlers")
    result.load_before = load()
    # 5,000 per round stays under the bridge's 10,000-record queue, so nothing is dropped.
    n, rounds = (2_000, 5) if quick else (5_000, 15)
    env = {"OTEL_BLRP_MAX_QUEUE_SIZE": str(2 * n), "OTEL_BSP_MAX_QUEUE_SIZE": str(2 * n)}
    variants = list(VARIANTS)
    for variant, module in (("contrib-handler", "opentelemetry.instrumentation.logging.handler"), ("logfire", "logfire")):
        missing = can_import(module)
        if missing:
            variants.remove(variant)
            result.notes.append(f"{variant} skipped: {module} does not import here ({missing}).")
    workers = [Worker(v, [sys.executable, "-m", "benchmarks.p2_logs", "worker", v], env, log) for v in variants]
    try:
        for worker in workers:
            if worker.error:
                result.notes.append(f"{worker.name} skipped: {worker.error}")
        rounds_by_variant = interleaved([w for w in workers if not w.error], rounds, n=n)
    finally:
        for worker in workers:
            worker.close()
    result.load_after = load()
    if "sdk-handler" not in rounds_by_variant:
        result.skipped = "the baseline (sdk-handler) did not start; see the notes"
        return result
    keys = ("caller_cpu_us", "caller_us", "total_us", "cpu_us")
    summary = {
        name: {key: median(r[key] for r in rs) for key in keys} | {"dropped": sum(r["n"] - r["exported"] for r in rs)}
        for name, rs in rounds_by_variant.items()
    }
    result.data = {"n_per_round": n, "rounds": rounds, "median": summary, "raw": rounds_by_variant}
    base = summary["sdk-handler"]
    shown = {
        "kit": ("caller_cpu_us", "caller_us", "total_us", "cpu_us"),
        "kit-no-redaction": ("caller_cpu_us", "total_us", "cpu_us"),
    }
    labels = {"caller_cpu_us": "caller-thread CPU", "caller_us": "caller wall", "total_us": "wall incl. flush", "cpu_us": "process CPU"}
    for name in (v for v in summary if v != "sdk-handler"):
        mine = summary[name]
        for key in shown.get(name, ("caller_cpu_us", "total_us")):
            ratio = mine[key] / base[key]
            is_target = name == "kit" and key == "caller_cpu_us"
            result.rows.append(Row(
                f"{name}: µs/record, {labels[key]}", f"{mine[key]:.1f}", f"{base[key]:.1f} (sdk-handler)", ratio,
                "<= 0.80x" if is_target else "-", (ratio <= 0.80) if is_target else None,
            ))  # fmt: skip
    for name, s in summary.items():
        if s["dropped"]:
            result.notes.append(f"{name} dropped {s['dropped']} records (the figures flatter it).")
    return result


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "worker":
        serve_worker(lambda: _setup(argv[1]))
    else:
        raise SystemExit("usage: python -m benchmarks.p2_logs worker VARIANT")


if __name__ == "__main__":
    main(sys.argv[1:])
