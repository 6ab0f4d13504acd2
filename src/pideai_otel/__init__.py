"""pideai-otel: OpenTelemetry for PideAI services in one call.

    import pideai_otel

    telemetry = pideai_otel.init_telemetry(service_name="orders")
    with pideai_otel.tenant_context(store_id="store-42", user_id="u-7"):
        ...  # every span and log record here carries store_id and user_id

See the README for settings, the sidecar collector and searching traces.
"""

from ._config import ConfigError
from ._redaction import NO_REDACTION, RedactionPolicy
from ._setup import Telemetry, TelemetryShutdownError, init_telemetry
from ._tenant import TENANT_KEYS, current_tenant, tenant_context
from .asgi import TelemetryMiddleware

__all__ = [
    "ConfigError",
    "NO_REDACTION",
    "RedactionPolicy",
    "TENANT_KEYS",
    "Telemetry",
    "TelemetryMiddleware",
    "TelemetryShutdownError",
    "current_tenant",
    "init_telemetry",
    "tenant_context",
]
