"""P1: the cost of one span (create, 5 attributes, end), the kit against the plain SDK.

Every variant exports through a BatchSpanProcessor to an exporter that only counts, so what is
measured is the SDK pipeline itself. The kit runs exactly as `init_telemetry` builds it (tenant
stamping, redaction in the exporter chain), inside `tenant_context(store_id=..., user_id=...)`.
Per round each worker creates N spans and then force-flushes, and reports:
  loop    wall time of the N spans on the caller's thread
  total   wall time including the final force_flush, i.e. until the export thread has also done
          its work (redaction runs there in the kit)
  cpu     CPU time of the whole process over the same span (all threads)
Run a worker by hand: python -m benchmarks.p1_spans worker kit
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks._common import Result, Row, Worker, interleaved, load, median

NAME = "process order"
ATTRIBUTES: tuple[tuple[str, Any], ...] = (
    ("http.request.method", "POST"),
    ("url.path", "/orders/ord-7f3a9c/items"),
    ("order.items", 3),
    ("payment.amount", 12.5),
    ("customer.note", "leave it at the door, ring twice"),
)
VARIANTS = ("plain", "kit", "kit-no-redaction", "logfire", "logfire-span")


# -- worker side ---------------------------------------------------------------------------------
def _counting_exporter() -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class CountingSpanExporter(SpanExporter):
        def __init__(self) -> None:
            self.count = 0

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            self.count += len(spans)
            return SpanExportResult.SUCCESS

    return CountingSpanExporter()


def _setup(variant: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    exporter = _counting_exporter()
    if variant == "plain":
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource({"service.name": "bench"}), shutdown_on_exit=False)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        tracer = provider.get_tracer("bench")
        flush: Callable[[], Any] = provider.force_flush
    elif variant in ("kit", "kit-no-redaction"):
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        import pideai_otel
        from benchmarks.p2_logs import counting_log_exporter
        from pideai_otel._config import resolve_settings
        from pideai_otel._redaction import NO_REDACTION
        from pideai_otel._setup import _init

        settings = resolve_settings({"service_name": "bench"}, environ={})  # defaults, as init_telemetry builds it
        handle = _init(
            settings, policy=NO_REDACTION if variant == "kit-no-redaction" else None,
            span_exporter=exporter, log_exporter=counting_log_exporter(), metric_reader=InMemoryMetricReader(),
        )  # fmt: skip
        assert handle.tracer_provider is not None
        tracer = handle.tracer_provider.get_tracer("bench")
        flush = handle.tracer_provider.force_flush
        # The tenant is set for the whole worker, as the middleware would for a request.
        pideai_otel.tenant_context(store_id="store-lima", user_id="user-42").__enter__()
    elif variant in ("logfire", "logfire-span"):
        import logfire
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        instance = logfire.configure(
            send_to_logfire=False, console=False, metrics=False, inspect_arguments=False, service_name="bench",
            additional_span_processors=[BatchSpanProcessor(exporter)],
        )  # fmt: skip
        tracer = instance.config.get_tracer_provider().get_tracer("bench")
        flush = instance.force_flush
        if variant == "logfire-span":
            return _round(lambda n: _logfire_spans(instance, n), flush, exporter)
    else:
        raise ValueError(f"unknown variant {variant!r}")
    return _round(lambda n: _otel_spans(tracer, n), flush, exporter)


def _otel_spans(tracer: Any, n: int) -> None:
    for _ in range(n):
        with tracer.start_as_current_span(NAME) as span:
            for key, value in ATTRIBUTES:
                span.set_attribute(key, value)


def _logfire_spans(instance: Any, n: int) -> None:
    # Logfire's own API: the attributes are keyword arguments of the span.
    attributes = {key.replace(".", "_"): value for key, value in ATTRIBUTES}
    for _ in range(n):
        with instance.span(NAME, **attributes):
            pass


def _round(emit: Callable[[int], None], flush: Callable[[], Any], exporter: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def run(command: dict[str, Any]) -> dict[str, Any]:
        n = int(command["n"])
        gc.collect()
        before = exporter.count
        cpu0, t0 = time.process_time(), time.perf_counter()
        emit(n)
        t1 = time.perf_counter()
        flush()
        t2, cpu2 = time.perf_counter(), time.process_time()
        return {
            "n": n,
            "exported": exporter.count - before,
            "loop_us": (t1 - t0) / n * 1e6,
            "total_us": (t2 - t0) / n * 1e6,
            "cpu_us": (cpu2 - cpu0) / n * 1e6,
        }

    return run


# -- runner side ---------------------------------------------------------------------------------
def run(quick: bool, log: Any) -> Result:
    from benchmarks._common import can_import

    result = Result("P1", "span cost: kit vs plain SDK")
    result.load_before = load()
    n, rounds = (3_000, 5) if quick else (10_000, 11)
    # Queues hold a whole round, so no variant gets cheaper by dropping spans.
    env = {"OTEL_BSP_MAX_QUEUE_SIZE": str(2 * n)}
    variants = list(VARIANTS)
    missing = can_import("logfire")
    if missing:
        variants = [v for v in variants if not v.startswith("logfire")]
        result.notes.append(f"Logfire skipped: it does not import here ({missing}).")
    workers = [Worker(v, [sys.executable, "-m", "benchmarks.p1_spans", "worker", v], env, log) for v in variants]
    try:
        for worker in workers:
            if worker.error:
                result.notes.append(f"{worker.name} skipped: {worker.error}")
        live = [w for w in workers if not w.error]
        rounds_by_variant = interleaved(live, rounds, n=n)
    finally:
        for worker in workers:
            worker.close()
    result.load_after = load()
    if "plain" not in rounds_by_variant:
        result.skipped = "the baseline (plain) did not start; see the notes"
        return result
    summary = {
        name: {key: median(r[key] for r in rs) for key in ("loop_us", "total_us", "cpu_us")}
        | {"dropped": sum(r["n"] - r["exported"] for r in rs)}
        for name, rs in rounds_by_variant.items()
    }
    result.data = {"n_per_round": n, "rounds": rounds, "median": summary, "raw": rounds_by_variant}
    plain = summary["plain"]
    shown = {"kit": ("total_us", "cpu_us", "loop_us")}
    labels = {"total_us": "wall incl. flush", "cpu_us": "process CPU", "loop_us": "caller loop"}
    for name in (v for v in summary if v != "plain"):
        mine = summary[name]
        for key in shown.get(name, ("total_us", "cpu_us")):
            ratio = mine[key] / plain[key]
            is_target = name == "kit" and key in ("total_us", "cpu_us")
            result.rows.append(Row(
                f"{name}: µs/span, {labels[key]}", f"{mine[key]:.1f}", f"{plain[key]:.1f} (plain)", ratio,
                "<= 1.10x" if is_target else "-", (ratio <= 1.10) if is_target else None,
            ))  # fmt: skip
    for name, s in summary.items():
        if s["dropped"]:
            result.notes.append(f"{name} dropped {s['dropped']} spans (the figures flatter it).")
    return result


def main(argv: list[str]) -> None:
    from benchmarks._common import serve_worker

    if len(argv) == 2 and argv[0] == "worker":
        serve_worker(lambda: _setup(argv[1]))
    else:
        raise SystemExit("usage: python -m benchmarks.p1_spans worker VARIANT")


if __name__ == "__main__":
    main(sys.argv[1:])
