import pytest

from pideai_otel import ConfigError
from pideai_otel._config import resolve_settings, settings_table_markdown


def test_defaults_without_environment() -> None:
    s = resolve_settings({}, environ={})
    assert s.protocol == "grpc"
    assert s.endpoint == "http://localhost:4317"
    assert s.shutdown_timeout == 5.0
    assert s.disabled is False
    assert s.sources["endpoint"] == "default"


def test_http_protocol_moves_the_default_port() -> None:
    assert resolve_settings({}, environ={"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}).endpoint == "http://localhost:4318"


def test_argument_beats_environment_beats_default() -> None:
    env = {"OTEL_SERVICE_NAME": "from-env", "OTEL_EXPORTER_OTLP_TIMEOUT": "2500"}
    s = resolve_settings({"service_name": "from-arg"}, environ=env)
    assert s.service_name == "from-arg" and s.sources["service_name"] == "argument"
    assert s.export_timeout == 2.5 and s.sources["export_timeout"] == "OTEL_EXPORTER_OTLP_TIMEOUT"
    assert resolve_settings({}, environ=env).service_name == "from-env"


def test_empty_variables_count_as_unset() -> None:
    assert resolve_settings({}, environ={"OTEL_SERVICE_NAME": "  "}).service_name == "unknown_service"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("OTEL_SDK_DISABLED", "maybe"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4317"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "-5"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ("OTEL_RESOURCE_ATTRIBUTES", "novalue"),
        ("PIDEAI_OTEL_LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_value_is_a_clear_error_naming_the_variable(var: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_settings({}, environ={var: value})
    assert var in str(err.value) and repr(value) in str(err.value)


def test_resource_attributes_are_percent_decoded() -> None:
    s = resolve_settings({}, environ={"OTEL_RESOURCE_ATTRIBUTES": "team=orders%20core,region=eu"})
    assert s.resource_attributes == {"team": "orders core", "region": "eu"}


def test_settings_table_lists_every_variable() -> None:
    table = settings_table_markdown()
    for var in ("OTEL_SERVICE_NAME", "OTEL_SDK_DISABLED", "PIDEAI_OTEL_SHUTDOWN_TIMEOUT", "PIDEAI_OTEL_BAGGAGE_HOSTS"):
        assert var in table


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("protocol", "foo"),
        ("endpoint", "not a url"),
        ("export_timeout", -1),
        ("shutdown_timeout", 0),
        ("shutdown_timeout", float("inf")),
        ("disabled", "false"),
        ("baggage_hosts", "localhost"),
        ("log_level", -5),
        ("metric_export_interval", 0),
        ("sampler_arg", float("nan")),
    ],
)
def test_bad_argument_is_as_clear_an_error_as_a_bad_variable(argument: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"init_telemetry\({argument}="):
        resolve_settings({argument: value}, environ={})


def test_non_finite_environment_values_are_refused() -> None:
    with pytest.raises(ConfigError, match="PIDEAI_OTEL_SHUTDOWN_TIMEOUT='inf'"):
        resolve_settings({}, environ={"PIDEAI_OTEL_SHUTDOWN_TIMEOUT": "inf"})


def test_good_arguments_are_normalised() -> None:
    s = resolve_settings({"protocol": "HTTP", "baggage_hosts": ["LocalHost"], "export_timeout": 2}, environ={})
    assert (s.protocol, s.baggage_hosts, s.export_timeout) == ("http/protobuf", ("localhost",), 2.0)
