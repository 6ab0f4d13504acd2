"""Gemini calls as GenAI spans, against the Gemini stand-in on loopback.

Each test gets its own SDK providers with in-memory exporters, passed to the client explicitly, so
nothing here depends on (or changes) the process-wide providers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import traceback
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pideai_otel.demo import thirdparty
from pideai_otel.domain import (
    AsyncGeminiImageClient,
    GeminiError,
    GeminiImageClient,
    GeminiSafetyBlock,
    ModelPrice,
    metric_views,
)
from pideai_otel.domain.metrics import FORBIDDEN_METRIC_KEYS

API_KEY = "AIzaSy-test-SECRET-0123456789abcdef"
MODEL = "gemini-2.5-flash-image"
SPAN_NAME = f"generate_content {MODEL}"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Capture:
    """In-memory SDK providers for one test, with plain-dict views of what they recorded."""

    def __init__(self) -> None:
        self.span_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self.span_exporter))
        self.reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(metric_readers=[self.reader], views=metric_views())
        self.log_exporter = InMemoryLogRecordExporter()
        self.logger_provider = LoggerProvider()
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self.log_exporter))

    @property
    def providers(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def spans(self, name: str | None = None) -> list[Any]:
        return [s for s in self.span_exporter.get_finished_spans() if name is None or s.name == name]

    def metrics(self) -> dict[str, list[Any]]:
        data = self.reader.get_metrics_data()
        found: dict[str, list[Any]] = {}
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    found.setdefault(metric.name, []).extend(metric.data.data_points)
        self._last_metrics_json = data.to_json() if data else ""
        return found

    def total(self, name: str, **attributes: Any) -> float:
        points = self.metrics().get(name, [])
        return sum(
            getattr(p, "value", None) if hasattr(p, "value") else p.count
            for p in points
            if all(p.attributes.get(k) == v for k, v in attributes.items())
        )

    def serialized(self) -> str:
        """Everything exported, as text: spans, log records and metric points."""
        self.metrics()
        parts = [s.to_json() for s in self.span_exporter.get_finished_spans()]
        parts += [r.to_json() for r in self.log_exporter.get_finished_logs()]
        return "\n".join(parts) + self._last_metrics_json

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
        self.logger_provider.shutdown()


@pytest.fixture
def cap() -> Iterator[Capture]:
    capture = Capture()
    yield capture
    for points in capture.metrics().values():
        for point in points:
            assert not FORBIDDEN_METRIC_KEYS & set(point.attributes), point.attributes
    capture.shutdown()


@pytest.fixture(scope="module")
def gemini() -> Iterator[thirdparty.RunningServer]:
    with thirdparty.start("gemini", api_key=API_KEY) as server:
        yield server


@pytest.fixture
def server(gemini: thirdparty.RunningServer) -> thirdparty.RunningServer:
    gemini.control("reset", {})
    return gemini


def _client(server: thirdparty.RunningServer, cap: Capture, **options: Any) -> GeminiImageClient:
    options.setdefault("timeout", 1.0)
    return GeminiImageClient(api_key=API_KEY, base_url=server.url, **cap.providers, **options)


def test_scripted_mix_gives_exact_spans_error_types_and_metrics(server: thirdparty.RunningServer, cap: Capture) -> None:
    script = ["ok", "ok", "safety_block", "ok", "429", "ok", "500", "ok", {"outcome": "timeout", "seconds": 10}, "ok"]
    server.control("script", script)
    results: list[str] = []
    with _client(server, cap) as client:
        for _ in script:
            try:
                image = client.generate_image(
                    "Enhance this taco photo", image=b"\xff\xd8jpeg" * 100, store_id="store-1"
                )
            except GeminiError as exc:
                results.append(exc.error_type)
            else:
                assert image.image.startswith(PNG_MAGIC)
                results.append("ok")

    assert results == ["ok", "ok", "safety_block", "ok", "RESOURCE_EXHAUSTED", "ok", "INTERNAL", "ok", "timeout", "ok"]
    spans = cap.spans(SPAN_NAME)
    assert len(spans) == 10 and len(cap.spans()) == 10
    assert all(s.kind.name == "CLIENT" for s in spans)
    errors = Counter(s.attributes.get("error.type") for s in spans)
    assert errors == {None: 6, "safety_block": 1, "RESOURCE_EXHAUSTED": 1, "INTERNAL": 1, "timeout": 1}
    assert Counter(s.status.status_code.name for s in spans) == {"UNSET": 6, "ERROR": 4}
    assert {
        s.attributes["http.response.status_code"] for s in spans if s.attributes.get("error.type") == "INTERNAL"
    } == {500}

    assert cap.total("pideai.ai.images_generated") == 6
    assert cap.total("pideai.ai.images_generated", store_id="store-1", **{"gen_ai.request.model": MODEL}) == 6
    by_type = {
        t: cap.total("pideai.ai.errors", **{"error.type": t})
        for t in ("safety_block", "RESOURCE_EXHAUSTED", "INTERNAL", "timeout")
    }
    assert by_type == {"safety_block": 1, "RESOURCE_EXHAUSTED": 1, "INTERNAL": 1, "timeout": 1}
    assert cap.total("pideai.ai.errors") == 4
    durations = cap.metrics()["pideai.ai.generation.duration"]
    assert sum(p.count for p in durations) == 10
    assert sum(p.count for p in durations if "error.type" not in p.attributes) == 6
    timeout_point = next(p for p in durations if p.attributes.get("error.type") == "timeout")
    assert 0.9 <= timeout_point.sum < 5.0  # the client gave up at its 1 s timeout
    assert [c["outcome"] for c in server.control("calls")] == [
        s if isinstance(s, str) else s["outcome"] for s in script
    ]


def test_ok_span_follows_genai_conventions_with_tokens_and_cost(server: thirdparty.RunningServer, cap: Capture) -> None:
    server.control(
        "script", [{"outcome": "ok", "prompt_tokens": 1000, "output_tokens": 1290, "width": 256, "height": 256}]
    )
    prices = {MODEL: ModelPrice(input_per_million=1.0, output_per_million=2.0, per_output_image=0.04)}
    photo = b"\xff\xd8" + bytes(3070)  # 3 KiB
    with _client(server, cap, prices=prices) as client:
        result = client.generate_image(
            "Make the arepa glow",
            image=photo,
            style="studio",
            aspect_ratio="4:3",
            menu_item_id="item-77",
            store_id="s-9",
        )

    expected_cost = 1000 * 1.0 / 1e6 + 1290 * 2.0 / 1e6 + 0.04
    assert result.cost_usd == pytest.approx(expected_cost)
    assert (
        result.usage.input_tokens == 1000 and result.usage.output_tokens == 1290 and result.usage.total_tokens == 2290
    )
    assert result.mime_type == "image/png" and result.model == MODEL and result.duration_ms > 0

    (span,) = cap.spans(SPAN_NAME)
    a = dict(span.attributes)
    assert span.kind.name == "CLIENT" and span.status.status_code.name == "UNSET"
    assert a["gen_ai.operation.name"] == "generate_content"
    assert a["gen_ai.provider.name"] == "gcp.gemini"
    assert a["gen_ai.request.model"] == MODEL and a["gen_ai.response.model"] == MODEL
    assert a["gen_ai.usage.input_tokens"] == 1000 and a["gen_ai.usage.output_tokens"] == 1290
    assert a["gen_ai.response.id"] == result.response_id
    assert a["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["pideai.ai.api_cost_usd"] == pytest.approx(expected_cost)
    assert a["pideai.ai.style"] == "studio" and a["pideai.ai.aspect_ratio"] == "4:3"
    assert a["pideai.menu_item_id"] == "item-77" and a["store_id"] == "s-9"
    assert a["pideai.ai.image_size_kb"] == round(len(result.image) / 1024, 2)
    assert a["pideai.ai.input_image_size_kb"] == 3.0
    assert a["pideai.ai.duration_ms"] == pytest.approx(result.duration_ms)
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == server.port
    assert "error.type" not in a

    assert cap.total("pideai.ai.cost") == pytest.approx(expected_cost)
    assert cap.total("gen_ai.client.token.usage", **{"gen_ai.token.type": "output"}) == 1  # one histogram point
    (output_point,) = [
        p for p in cap.metrics()["gen_ai.client.token.usage"] if p.attributes["gen_ai.token.type"] == "output"
    ]
    assert output_point.sum == 1290


def test_safety_blocks_are_errors_with_their_reason(server: thirdparty.RunningServer, cap: Capture) -> None:
    server.control("script", [{"outcome": "safety_block", "reason": "IMAGE_SAFETY"}, "prompt_blocked", "no_image"])
    with _client(server, cap) as client:
        with pytest.raises(GeminiSafetyBlock) as first:
            client.generate_image("a dish")
        with pytest.raises(GeminiSafetyBlock) as second:
            client.generate_image("a dish")
        with pytest.raises(GeminiError) as third:
            client.generate_image("a dish")
    assert (first.value.error_type, first.value.block_reason) == ("safety_block", "IMAGE_SAFETY")
    assert (second.value.error_type, second.value.block_reason) == ("safety_block", "SAFETY")
    assert third.value.error_type == "no_image" and not isinstance(third.value, GeminiSafetyBlock)
    spans = cap.spans(SPAN_NAME)
    assert [s.attributes["error.type"] for s in spans] == ["safety_block", "safety_block", "no_image"]
    assert [s.attributes.get("pideai.ai.block_reason") for s in spans] == ["IMAGE_SAFETY", "SAFETY", None]
    assert all(s.status.status_code.name == "ERROR" for s in spans)
    # A blocked prompt still used (and is billed for) its input tokens.
    assert all(s.attributes["gen_ai.usage.input_tokens"] > 0 for s in spans)
    assert cap.total("pideai.ai.images_generated") == 0


def test_async_client_records_the_same_span(server: thirdparty.RunningServer, cap: Capture) -> None:
    server.control("script", ["ok", "429"])

    async def run() -> tuple[bytes, str]:
        async with AsyncGeminiImageClient(api_key=API_KEY, base_url=server.url, timeout=2.0, **cap.providers) as client:
            image = await client.generate_image("pupusas, bright", aspect_ratio="1:1")
            with pytest.raises(GeminiError) as info:
                await client.generate_image("pupusas, bright")
            return image.image, info.value.error_type

    image, error_type = asyncio.run(run())
    assert image.startswith(PNG_MAGIC) and error_type == "RESOURCE_EXHAUSTED"
    ok, failed = cap.spans(SPAN_NAME)
    assert ok.attributes["gen_ai.usage.output_tokens"] == 1290 and ok.status.status_code.name == "UNSET"
    assert failed.attributes["error.type"] == "RESOURCE_EXHAUSTED" and failed.status.status_code.name == "ERROR"
    assert cap.total("pideai.ai.images_generated") == 1 and cap.total("pideai.ai.errors") == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("auth", ["header", "query"])
def test_api_key_never_appears_in_telemetry_or_errors(
    server: thirdparty.RunningServer, cap: Capture, auth: str
) -> None:
    server.control("script", ["ok", "500", {"outcome": "timeout", "seconds": 10}, "safety_block"])
    errors: list[GeminiError] = []
    with _client(server, cap, auth=auth) as client:
        assert API_KEY not in repr(client)
        for _ in range(4):
            try:
                client.generate_image("tamales")
            except GeminiError as exc:
                errors.append(exc)
    # A connection failure: httpx's own exception would carry the request (and its URL).
    with GeminiImageClient(
        api_key=API_KEY, base_url=f"http://127.0.0.1:{_closed_port()}", auth=auth, timeout=1.0, **cap.providers
    ) as dead:
        with pytest.raises(GeminiError) as info:
            dead.generate_image("tamales")
    errors.append(info.value)
    assert info.value.error_type == "httpx.ConnectError"

    assert [c["auth"] for c in server.control("calls")] == [auth] * 4  # the key really was sent that way
    assert len(cap.spans()) == 5
    exported = cap.serialized()
    assert "tamales" not in exported  # prompts are not recorded either
    assert API_KEY not in exported and "SECRET" not in exported
    for exc in errors:
        text = "".join(traceback.format_exception(exc))
        assert API_KEY not in text and API_KEY not in repr(exc)
        assert exc.__cause__ is None and exc.__context__ is None


def test_wrong_key_is_an_error_with_googles_status(server: thirdparty.RunningServer, cap: Capture) -> None:
    with GeminiImageClient(api_key="wrong-key", base_url=server.url, **cap.providers) as client:
        with pytest.raises(GeminiError) as info:
            client.generate_image("x")
    assert info.value.error_type == "INVALID_ARGUMENT" and info.value.status_code == 400
    (span,) = cap.spans(SPAN_NAME)
    assert span.attributes["error.type"] == "INVALID_ARGUMENT"
    assert "wrong-key" not in cap.serialized()


def test_unknown_model_price_leaves_cost_out(server: thirdparty.RunningServer, cap: Capture) -> None:
    with _client(server, cap, model="gemini-next-image", prices={}) as client:
        result = client.generate_image("x")
    assert result.cost_usd is None
    (span,) = cap.spans("generate_content gemini-next-image")
    assert "pideai.ai.api_cost_usd" not in span.attributes
    assert span.attributes["gen_ai.usage.output_tokens"] == 1290
    assert "pideai.ai.cost" not in cap.metrics()


def test_stand_in_rejects_unknown_outcomes(server: thirdparty.RunningServer) -> None:
    import httpx

    response = httpx.post(f"{server.url}/_control/script", json=["ok", "explode"])
    assert response.status_code == 400 and "explode" in response.json()["error"]
    body = json.loads(httpx.post(f"{server.url}/_control/script", json=["ok"]).text)
    assert body == {"queued": 1}
