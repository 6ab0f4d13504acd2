"""PideAI business metrics: names, units, bounded attributes, and the View that guards them.

Every instrument takes only low-cardinality attributes (store_id, model, outcome, status, error.type).
Per-user and per-order keys would make one time series per user or order, so they are dropped twice:
here, before a measurement is recorded (`bounded`), and by the SDK View from `metric_views()`, which
the kit installs so that no instrument, ours or a library's, can export them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Histogram, MeterProvider

from pideai_otel._cardinality import FORBIDDEN_METRIC_KEYS, metric_views

from ._common import SCOPE

__all__ = [
    "FORBIDDEN_METRIC_KEYS",
    "IMAGES_GENERATED",
    "AI_GENERATION_DURATION",
    "AI_ERRORS",
    "AI_COST",
    "GEN_AI_TOKEN_USAGE",
    "ORDER_DURATION",
    "ORDERS",
    "PAYMENTS",
    "WHATSAPP_MESSAGES",
    "HTTP_REQUESTS",
    "DomainMetrics",
    "bounded",
    "domain_metrics",
    "count_http_request",
    "metric_views",
]


IMAGES_GENERATED = "pideai.ai.images_generated"
AI_GENERATION_DURATION = "pideai.ai.generation.duration"
AI_ERRORS = "pideai.ai.errors"
AI_COST = "pideai.ai.cost"
GEN_AI_TOKEN_USAGE = "gen_ai.client.token.usage"
ORDER_DURATION = "pideai.order.duration"
ORDERS = "pideai.orders"
PAYMENTS = "pideai.payments"
WHATSAPP_MESSAGES = "pideai.whatsapp.messages"
HTTP_REQUESTS = "pideai.http.requests"

# Image generation takes seconds, not milliseconds: the SDK's default buckets (0..10000) would put
# every call in the first few buckets.
_GENERATION_BUCKETS_S = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0)
# An order runs from placement to the WhatsApp notice: sub-second to a minute.
_ORDER_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# The buckets the GenAI semantic conventions recommend for gen_ai.client.token.usage.
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304)


def bounded(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes fit for a metric: forbidden keys and None values removed."""
    return {k: v for k, v in attributes.items() if v is not None and k not in FORBIDDEN_METRIC_KEYS}


class DomainMetrics:
    """The business instruments of one meter provider (the global one unless given)."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        meter = metrics.get_meter(SCOPE, meter_provider=meter_provider)
        self.images_generated: Counter = meter.create_counter(
            IMAGES_GENERATED, unit="{image}", description="Images returned by the image model."
        )
        self.generation_duration: Histogram = meter.create_histogram(
            AI_GENERATION_DURATION,
            unit="s",
            description="Duration of image-generation calls, successful or not.",
            explicit_bucket_boundaries_advisory=_GENERATION_BUCKETS_S,
        )
        self.ai_errors: Counter = meter.create_counter(
            AI_ERRORS, unit="{error}", description="Failed image-generation calls, by error.type."
        )
        self.ai_cost: Counter = meter.create_counter(
            AI_COST, unit="{USD}", description="Estimated model API spend, from the configured price table."
        )
        self.token_usage: Histogram = meter.create_histogram(
            GEN_AI_TOKEN_USAGE,
            unit="{token}",
            description="Tokens per model call, by gen_ai.token.type (input/output).",
            explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
        )
        self.order_duration: Histogram = meter.create_histogram(
            ORDER_DURATION,
            unit="s",
            description="Time from order placement to the end of its pipeline, by outcome.",
            explicit_bucket_boundaries_advisory=_ORDER_BUCKETS_S,
        )
        self.orders: Counter = meter.create_counter(
            ORDERS, unit="{order}", description="Orders that finished their pipeline, by outcome."
        )
        self.payments: Counter = meter.create_counter(
            PAYMENTS, unit="{payment}", description="Payment gateway calls, by gateway and outcome."
        )
        self.whatsapp_messages: Counter = meter.create_counter(
            WHATSAPP_MESSAGES, unit="{message}", description="WhatsApp messages, by delivery status."
        )
        self.http_requests: Counter = meter.create_counter(
            HTTP_REQUESTS, unit="{request}", description="Inbound HTTP requests, by store."
        )

    @staticmethod
    def add(counter: Counter, value: float, attributes: Mapping[str, Any]) -> None:
        counter.add(value, bounded(attributes))

    @staticmethod
    def record(histogram: Histogram, value: float, attributes: Mapping[str, Any]) -> None:
        histogram.record(value, bounded(attributes))


_lock = threading.Lock()
_by_provider: weakref.WeakKeyDictionary[MeterProvider, DomainMetrics] = weakref.WeakKeyDictionary()


def domain_metrics(meter_provider: MeterProvider | None = None) -> DomainMetrics:
    """The instruments for this provider (the current global one when None), created once each.

    Before `init_telemetry` the global provider is the API's proxy, whose instruments start
    exporting once the SDK is installed, so helpers may be used before the kit is initialised.
    """
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    found = _by_provider.get(provider)
    if found is None:
        with _lock:
            found = _by_provider.get(provider)
            if found is None:
                found = _by_provider[provider] = DomainMetrics(provider)
    return found


def count_http_request(
    store_id: str | None,
    *,
    method: str | None = None,
    route: str | None = None,
    status_code: int | None = None,
    meter_provider: MeterProvider | None = None,
) -> None:
    """Count one inbound request for `pideai.http.requests` (the ASGI middleware calls this).

    `route` must be the route template (`/stores/{store_id}/menu`), never the raw path.
    """
    m = domain_metrics(meter_provider)
    m.add(
        m.http_requests,
        1,
        {
            "store_id": store_id,
            "http.request.method": method,
            "http.route": route,
            "http.response.status_code": status_code,
        },
    )
