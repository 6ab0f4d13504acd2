import pideai_otel


def test_public_surface_is_exactly_this() -> None:
    assert sorted(pideai_otel.__all__) == [
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
    for name in pideai_otel.__all__:
        assert getattr(pideai_otel, name) is not None
