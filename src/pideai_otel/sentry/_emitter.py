"""Turns accepted deliveries into OTel log records and counts them; runs off the request path."""

from __future__ import annotations

from opentelemetry import _logs, metrics

from .._diagnostics import report
from ._mapping import to_log_fields
from ._payload import Delivery
from ._stats import BridgeStats

__all__ = ["EVENTS_METRIC", "LOGGER_NAME", "REJECTED_METRIC", "Emitter"]

LOGGER_NAME = "pideai_otel.sentry"
EVENTS_METRIC = "pideai.sentry.events"
REJECTED_METRIC = "pideai.sentry.rejected"


class Emitter:
    __slots__ = ("_events", "_logger", "_rejected", "stats")

    def __init__(
        self,
        stats: BridgeStats,
        logger_provider: _logs.LoggerProvider | None = None,
        meter_provider: metrics.MeterProvider | None = None,
    ) -> None:
        # None means the global providers; the proxies they return follow a later init_telemetry().
        self._logger = (
            logger_provider.get_logger(LOGGER_NAME) if logger_provider is not None else _logs.get_logger(LOGGER_NAME)
        )
        meter = meter_provider.get_meter(LOGGER_NAME) if meter_provider is not None else metrics.get_meter(LOGGER_NAME)
        self._events = meter.create_counter(
            EVENTS_METRIC, unit="{event}", description="Sentry deliveries turned into log records."
        )
        self._rejected = meter.create_counter(
            REJECTED_METRIC, unit="{request}", description="Sentry webhook requests refused, by reason."
        )
        self.stats = stats

    def reject(self, status: int, reason: str) -> None:
        self.stats.add(f"rejected.{status}")
        self._rejected.add(1, {"reason": reason, "http.response.status_code": status})

    def emit(self, delivery: Delivery, received_ns: int) -> None:
        """Called as a background task: an error here is reported, never raised into the server."""
        try:
            fields = to_log_fields(delivery, received_ns)
            self._logger.emit(
                timestamp=fields.timestamp_ns,
                observed_timestamp=received_ns,
                context=fields.context,
                severity_number=fields.severity_number,
                severity_text=fields.severity_text,
                body=fields.body,
                attributes=fields.attributes,
                event_name=fields.event_name,
            )
            correlated = "correlated" if fields.correlated else "uncorrelated"
            self.stats.add(f"emitted.{correlated}.{delivery.resource}")
            self._events.add(1, {"correlated": fields.correlated, "resource": delivery.resource})
        except Exception as exc:  # noqa: BLE001 - telemetry must never fail the server
            self.stats.add("emit_errors")  # tests assert this stays 0
            report("sentry.emit", f"sentry bridge could not emit a record: {type(exc).__name__}: {exc}")
