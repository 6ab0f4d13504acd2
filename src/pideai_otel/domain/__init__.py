"""PideAI's own flows as telemetry: Gemini image calls, WhatsApp messages, payments, the order
pipeline, business metrics and structured log events.

Everything here uses the OpenTelemetry API's global providers (what `init_telemetry` installs)
unless a `tracer_provider` / `meter_provider` / `logger_provider` is passed, and never configures
a provider itself. Attribute and metric names are documented in docs/domain.md.
"""

from .events import log_event
from .gemini import (
    AsyncGeminiImageClient,
    GeminiError,
    GeminiImage,
    GeminiImageClient,
    GeminiSafetyBlock,
    GeminiTimeout,
    GeminiUsage,
    ModelPrice,
)
from .metrics import FORBIDDEN_METRIC_KEYS, count_http_request, metric_views
from .orders import ORDER_STEPS, current_order, order_pipeline, order_step
from .payments import (
    AsyncPaymentGatewayClient,
    ChargeResult,
    PaymentError,
    PaymentGatewayClient,
    payment_call,
)
from .whatsapp import (
    AsyncWhatsAppClient,
    InMemoryLinkStore,
    MessageLink,
    MessageLinkStore,
    SentMessage,
    SQLiteLinkStore,
    StatusUpdate,
    WhatsAppClient,
    WhatsAppError,
    WhatsAppStatusHandler,
    mask_phone,
    verify_signature,
    webhook_endpoint,
)

__all__ = [
    "AsyncGeminiImageClient",
    "AsyncPaymentGatewayClient",
    "AsyncWhatsAppClient",
    "ChargeResult",
    "FORBIDDEN_METRIC_KEYS",
    "GeminiError",
    "GeminiImage",
    "GeminiImageClient",
    "GeminiSafetyBlock",
    "GeminiTimeout",
    "GeminiUsage",
    "InMemoryLinkStore",
    "MessageLink",
    "MessageLinkStore",
    "ModelPrice",
    "ORDER_STEPS",
    "PaymentError",
    "PaymentGatewayClient",
    "SQLiteLinkStore",
    "SentMessage",
    "StatusUpdate",
    "WhatsAppClient",
    "WhatsAppError",
    "WhatsAppStatusHandler",
    "count_http_request",
    "current_order",
    "log_event",
    "mask_phone",
    "metric_views",
    "order_pipeline",
    "order_step",
    "payment_call",
    "verify_signature",
    "webhook_endpoint",
]
