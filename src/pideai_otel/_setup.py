"""`init_telemetry`: traces, logs and metrics in one call, and the handle that ends them.

Global state lives in one place (`_state`) with one lock. The first call builds the providers and
installs them as the OpenTelemetry globals; later calls return the same handle. Shutdown spends one
deadline across all signals and never hangs an exit, even with the collector unreachable.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from opentelemetry import _logs, metrics, propagate, trace
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk._logs import LoggerProvider, LogRecordLimits, LogRecordProcessor
from opentelemetry.sdk._logs.export import (
    BatchLogRecordProcessor,
    LogRecordExporter,
    LogRecordExportResult,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider, sampling
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.version import __version__ as _sdk_version

from . import _diagnostics
from ._cardinality import metric_views as cardinality_guard
from ._config import ConfigError, Settings, resolve_settings
from ._logging import BridgeHandler
from ._redaction import (
    NO_REDACTION,
    RedactingLogExporter,
    RedactingSpanExporter,
    RedactionPolicy,
)
from ._tenant import (
    GuardedBaggagePropagator,
    HostAllowlist,
    TenantLogProcessor,
    TenantSpanProcessor,
    suppress_baggage_for_next_injection,
)
from ._values import MAX_ATTRIBUTE_LENGTH

__all__ = ["init_telemetry", "Telemetry", "TelemetryShutdownError"]

_E = TypeVar("_E")


class TelemetryShutdownError(RuntimeError):
    """Raised when a handle is used after `shutdown()`."""


# -- exporters that belong to one process ---------------------------------------------------------
class _PerProcess(Generic[_E]):
    """Creates the real exporter lazily, and again in a forked child.

    A gRPC channel or an HTTP connection pool inherited across fork() is shared with the parent
    (or unusable), so each process makes its own on first use.
    """

    def __init__(self, factory: Callable[[], _E]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._inner: _E | None = None

    def get(self) -> _E:
        pid = os.getpid()
        if self._pid != pid:
            with self._lock:
                if self._pid != pid:
                    self._inner, self._pid = self._factory(), pid
        assert self._inner is not None
        return self._inner

    def existing(self) -> _E | None:
        return self._inner if self._pid == os.getpid() else None


class _ForkSafe(Generic[_E]):
    """Delegates shutdown and flush to this process's exporter, if it ever made one."""

    def __init__(self, factory: Callable[[], _E]) -> None:
        self._exporter = _PerProcess(factory)

    def shutdown(self, *args: Any, **kwargs: Any) -> None:
        if (inner := self._exporter.existing()) is not None:
            inner.shutdown(*args, **kwargs)  # type: ignore[attr-defined]

    def force_flush(self, timeout_millis: float = 30_000) -> bool:
        inner = self._exporter.existing()
        return True if inner is None else bool(inner.force_flush(timeout_millis))  # type: ignore[attr-defined]


class _ForkSafeSpanExporter(_ForkSafe[SpanExporter], SpanExporter):
    def export(self, spans: Sequence[Any]) -> SpanExportResult:
        return self._exporter.get().export(spans)


class _ForkSafeLogExporter(_ForkSafe[LogRecordExporter], LogRecordExporter):
    def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
        return self._exporter.get().export(batch)


class _ForkSafeMetricExporter(_ForkSafe[MetricExporter], MetricExporter):
    def __init__(self, factory: Callable[[], MetricExporter]) -> None:
        MetricExporter.__init__(self)
        _ForkSafe.__init__(self, factory)

    def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return self._exporter.get().export(metrics_data, timeout_millis=timeout_millis, **kwargs)


def _otlp_factories(settings: Settings) -> tuple[Callable[[], SpanExporter], Callable[[], LogRecordExporter], Callable[[], MetricExporter]]:
    timeout = settings.export_timeout
    if settings.protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
            OTLPMetricExporter,
        )
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        insecure = settings.endpoint.startswith("http://")
        return (
            lambda: OTLPSpanExporter(endpoint=settings.endpoint, insecure=insecure, timeout=timeout),
            lambda: OTLPLogExporter(endpoint=settings.endpoint, insecure=insecure, timeout=timeout),
            lambda: OTLPMetricExporter(endpoint=settings.endpoint, insecure=insecure, timeout=timeout),
        )
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HTTPLogExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    base = settings.endpoint
    return (
        lambda: HTTPSpanExporter(endpoint=f"{base}/v1/traces", timeout=timeout),
        lambda: HTTPLogExporter(endpoint=f"{base}/v1/logs", timeout=timeout),
        lambda: HTTPMetricExporter(endpoint=f"{base}/v1/metrics", timeout=timeout),
    )


# -- resource, sampler, propagators --------------------------------------------------------------
def _resource(settings: Settings) -> Resource:
    attributes: dict[str, Any] = {
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": _sdk_version,
        "telemetry.distro.name": "pideai-otel",
        "service.namespace": "pideai",
        "service.instance.id": str(uuid.uuid4()),
    }
    attributes.update(settings.resource_attributes)
    if settings.sources.get("service_name") != "default" or "service.name" not in attributes:
        attributes["service.name"] = settings.service_name
    if settings.service_version:
        attributes["service.version"] = settings.service_version
    if settings.sources.get("environment") != "default" or "deployment.environment" not in attributes:
        attributes["deployment.environment"] = settings.environment
    attributes["deployment.environment.name"] = attributes["deployment.environment"]
    return Resource(attributes)


def _sampler(settings: Settings) -> sampling.Sampler:
    name, ratio = settings.sampler, settings.sampler_arg
    root: sampling.Sampler = {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
    }.get(name.removeprefix("parentbased_"), None) or sampling.TraceIdRatioBased(ratio)
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


def _install_propagators() -> None:
    propagate.set_global_textmap(CompositePropagator([TraceContextTextMapPropagator(), GuardedBaggagePropagator()]))


# -- the handle ----------------------------------------------------------------------------------
@dataclass
class _Parts:
    tracer_provider: TracerProvider | None = None
    logger_provider: LoggerProvider | None = None
    meter_provider: MeterProvider | None = None
    handler: BridgeHandler | None = None
    httpx_instrumentor: Any = None


class Telemetry:
    """What `init_telemetry` returns: flush and shut down everything it set up."""

    def __init__(self, settings: Settings, parts: _Parts) -> None:
        self.settings = settings
        self._parts = parts
        self._shutdown = False
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return not self.settings.disabled

    @property
    def is_shut_down(self) -> bool:
        return self._shutdown

    @property
    def tracer_provider(self) -> TracerProvider | None:
        return self._parts.tracer_provider

    @property
    def logger_provider(self) -> LoggerProvider | None:
        return self._parts.logger_provider

    @property
    def meter_provider(self) -> MeterProvider | None:
        return self._parts.meter_provider

    def flush(self, timeout: float | None = None) -> bool:
        """Export everything recorded so far; True if every signal finished within `timeout`."""
        if self._shutdown:
            raise TelemetryShutdownError("flush() called after shutdown(); telemetry cannot restart in this process")
        deadline = time.monotonic() + (self.settings.shutdown_timeout if timeout is None else timeout)
        parts = self._parts
        ok = parts.handler.flush(_remaining(deadline)) if parts.handler else True
        for provider in (parts.tracer_provider, parts.logger_provider, parts.meter_provider):
            if provider is not None:
                ok = bool(provider.force_flush(int(_remaining(deadline) * 1000))) and ok
        return ok

    def shutdown(self, timeout: float | None = None) -> bool:
        """Flush and stop every signal within `timeout` seconds (default: the shutdown_timeout setting).

        Returns False if the deadline passed first; the rest is abandoned, never waited for.
        """
        with self._lock:
            if self._shutdown:
                return True
            self._shutdown = True
        deadline = time.monotonic() + (self.settings.shutdown_timeout if timeout is None else timeout)
        parts = self._parts
        if parts.handler is not None:
            logging.getLogger().removeHandler(parts.handler)
            parts.handler.stop(_remaining(deadline))
        if parts.httpx_instrumentor is not None:
            try:
                parts.httpx_instrumentor.uninstrument()
            except Exception as exc:
                _diagnostics.report("shutdown.httpx", f"could not uninstrument httpx: {exc}")

        def stop_providers() -> None:
            for provider in (parts.tracer_provider, parts.logger_provider):
                if provider is not None:
                    provider.shutdown()
            if parts.meter_provider is not None:
                parts.meter_provider.shutdown(timeout_millis=max(1.0, _remaining(deadline) * 1000))

        # Provider shutdown can block on an exporter retrying against a dead collector; run it
        # where it may be abandoned when the deadline passes.
        worker = threading.Thread(target=stop_providers, name="pideai-otel-shutdown", daemon=True)
        worker.start()
        worker.join(_remaining(deadline))
        _forget(self)
        if worker.is_alive():
            _diagnostics.report("shutdown", "shutdown deadline passed; unexported telemetry was dropped")
            return False
        return True


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


# -- global state ------------------------------------------------------------------------------
_lock = threading.RLock()
_state: Telemetry | None = None
_installed_once = False  # OpenTelemetry's global providers can be set once per process


def _forget(handle: Telemetry) -> None:
    global _state
    with _lock:
        if _state is handle:
            _state = None
            atexit.unregister(_exit_hook)


def _exit_hook() -> None:
    handle = _state
    if handle is not None:
        handle.shutdown()


def current_handle() -> Telemetry | None:
    return _state


def init_telemetry(
    *,
    service_name: str | None = None,
    service_version: str | None = None,
    environment: str | None = None,
    endpoint: str | None = None,
    protocol: str | None = None,
    resource_attributes: dict[str, str] | None = None,
    export_timeout: float | None = None,
    shutdown_timeout: float | None = None,
    metric_export_interval: float | None = None,
    capture_logging: bool | None = None,
    log_level: int | str | None = None,
    instrument_httpx: bool | None = None,
    redaction: RedactionPolicy | bool | None = None,
    baggage_hosts: Iterable[str] | None = None,
    metric_views: Sequence[View] | None = None,
    disabled: bool | None = None,
) -> Telemetry:
    """Set up traces, logs and metrics for this service, once. Returns the handle.

    Every argument left as None is read from the environment (see the README's settings table),
    else defaults. A second call returns the first call's handle and changes nothing.
    `metric_views` replaces the default View, which drops unbounded keys (user_id, order_id...)
    from every metric series.
    """
    policy = redaction if isinstance(redaction, RedactionPolicy) else None
    if isinstance(log_level, str):
        level = logging.getLevelName(log_level.upper())
        if not isinstance(level, int):
            raise ConfigError(f"init_telemetry(log_level={log_level!r}) is not valid: expected DEBUG, INFO, WARNING...")
        log_level = level
    settings = resolve_settings(
        {
            "service_name": service_name, "service_version": service_version, "environment": environment,
            "endpoint": endpoint, "protocol": protocol, "resource_attributes": resource_attributes,
            "export_timeout": export_timeout, "shutdown_timeout": shutdown_timeout,
            "metric_export_interval": metric_export_interval, "capture_logging": capture_logging,
            "log_level": log_level, "instrument_httpx": instrument_httpx,
            "redaction": None if redaction is None else bool(redaction if policy is None else policy.enabled),
            "baggage_hosts": baggage_hosts,
            "disabled": disabled,
        }
    )
    return _init(settings, policy=policy, metric_views=metric_views)


def _init(
    settings: Settings,
    *,
    policy: RedactionPolicy | None = None,
    metric_views: Sequence[View] | None = None,
    span_exporter: SpanExporter | None = None,
    log_exporter: LogRecordExporter | None = None,
    metric_reader: MetricReader | None = None,
    span_processor: Callable[[SpanExporter], SpanProcessor] | None = None,
    log_processor: Callable[[LogRecordExporter], LogRecordProcessor] | None = None,
) -> Telemetry:
    global _state, _installed_once
    with _lock:
        if _state is not None:
            return _state
        if _installed_once:
            raise TelemetryShutdownError(
                "init_telemetry() after shutdown(): OpenTelemetry's global providers can be installed once per "
                "process, so telemetry cannot restart here; shut down only at exit"
            )
        _diagnostics.install_sdk_log_handler()
        if settings.disabled:
            _state = Telemetry(settings, _Parts())
            return _state

        if policy is None:
            policy = RedactionPolicy() if settings.redaction else NO_REDACTION
        span_factory, log_factory, metric_factory = _otlp_factories(settings)
        raw_spans = span_exporter or _ForkSafeSpanExporter(span_factory)
        raw_logs = log_exporter or _ForkSafeLogExporter(log_factory)
        spans_out: SpanExporter = RedactingSpanExporter(raw_spans, policy) if policy.enabled else raw_spans
        logs_out: LogRecordExporter = RedactingLogExporter(raw_logs, policy) if policy.enabled else raw_logs

        resource = _resource(settings)
        # Better Stack advises records under 100 KiB, and the collector drops a whole batch when one
        # record cannot fit a request; cap every attribute value unless the user chose a limit.
        length = None if os.environ.get("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT") else MAX_ATTRIBUTE_LENGTH
        tracer_provider = TracerProvider(resource=resource, sampler=_sampler(settings), shutdown_on_exit=False,
                                         span_limits=SpanLimits(max_attribute_length=length))
        tracer_provider.add_span_processor(TenantSpanProcessor())
        tracer_provider.add_span_processor((span_processor or BatchSpanProcessor)(spans_out))

        logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False,
                                         log_record_limits=LogRecordLimits(max_attribute_length=length))
        logger_provider.add_log_record_processor(TenantLogProcessor())
        logger_provider.add_log_record_processor((log_processor or BatchLogRecordProcessor)(logs_out))

        reader = metric_reader or PeriodicExportingMetricReader(
            _ForkSafeMetricExporter(metric_factory),
            export_interval_millis=settings.metric_export_interval * 1000,
            export_timeout_millis=settings.export_timeout * 1000,
        )
        if metric_views is None:
            metric_views = cardinality_guard()
        meter_provider = MeterProvider(resource=resource, metric_readers=[reader], views=list(metric_views), shutdown_on_exit=False)

        _installed_once = True
        trace.set_tracer_provider(tracer_provider)
        _logs.set_logger_provider(logger_provider)
        metrics.set_meter_provider(meter_provider)
        _install_propagators()

        parts = _Parts(tracer_provider, logger_provider, meter_provider)
        if settings.capture_logging:
            parts.handler = BridgeHandler(logger_provider, level=settings.log_level)
            root = logging.getLogger()
            root.addHandler(parts.handler)
            if root.level > settings.log_level:
                root.setLevel(settings.log_level)
        if settings.instrument_httpx:
            parts.httpx_instrumentor = _instrument_httpx(tracer_provider, HostAllowlist(settings.baggage_hosts))

        _state = Telemetry(settings, parts)
        atexit.register(_exit_hook)
        return _state


def _instrument_httpx(tracer_provider: TracerProvider, allowlist: HostAllowlist) -> Any:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    @_diagnostics.guarded("httpx.request_hook")
    def request_hook(span: Any, request: Any) -> None:
        suppress_baggage_for_next_injection(not allowlist.allows(_host_of(request.url)))

    async def async_request_hook(span: Any, request: Any) -> None:
        request_hook(span, request)

    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=tracer_provider, request_hook=request_hook, async_request_hook=async_request_hook)
    return instrumentor


def _host_of(url: Any) -> str | None:
    """The host of a request hook's URL: an httpx.URL, or httpcore's raw (scheme, host, port, target)."""
    host = url[1] if isinstance(url, tuple) else getattr(url, "host", None)
    return host.decode("ascii", "replace") if isinstance(host, bytes) else host
