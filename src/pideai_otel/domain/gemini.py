"""Gemini image generation (product-photo enhancement) as a GenAI client span.

One call is one `generate_content {model}` CLIENT span following the OpenTelemetry GenAI semantic
conventions, plus PideAI's fields (duration, image size, estimated cost, style, menu item), and the
business metrics of `metrics.py`. Failures raise `GeminiError` with a low-cardinality `error_type`:
Google's `error.status` (RESOURCE_EXHAUSTED, INTERNAL...) or the HTTP status, "timeout",
"safety_block", "no_image", "invalid_response", or the httpx exception type.

The API key goes in the `x-goog-api-key` header by default, never in a span, metric or exception:
httpx exceptions are replaced by a `GeminiError` whose message is scrubbed and which carries no
reference to the original exception (its text may contain the URL).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Literal

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from pideai_otel._diagnostics import guarded

from ._common import (
    SCOPE,
    AsyncHttpOwner,
    DomainError,
    Stopwatch,
    SyncHttpOwner,
    qualified_name,
    scrub,
    tenant_value,
)
from .metrics import domain_metrics

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DEFAULT_PRICES",
    "ModelPrice",
    "GeminiUsage",
    "GeminiImage",
    "GeminiError",
    "GeminiTimeout",
    "GeminiSafetyBlock",
    "GeminiImageClient",
    "AsyncGeminiImageClient",
]

DEFAULT_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_MODEL = "gemini-2.5-flash-image"
OPERATION = "generate_content"
PROVIDER = "gcp.gemini"

# Finish reasons (and prompt block reasons) that mean the content filter stopped the image.
_SAFETY_REASONS = frozenset(
    {"SAFETY", "PROHIBITED_CONTENT", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT", "BLOCKLIST", "SPII"}
)
_MAX_MESSAGE = 300


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD list prices of one model: per million input tokens, per million output tokens, per image.

    Gemini bills generated images as output tokens (an image is ~1290 tokens), so for Gemini models
    leave `per_output_image` at 0; it exists for models billed per image.
    """

    input_per_million: float = 0.0
    output_per_million: float = 0.0
    per_output_image: float = 0.0

    def cost(self, input_tokens: int | None, output_tokens: int | None, images: int) -> float:
        total = (
            (input_tokens or 0) * self.input_per_million / 1_000_000
            + (output_tokens or 0) * self.output_per_million / 1_000_000
            + images * self.per_output_image
        )
        return round(total, 8)


# Public list prices when written (standard tier); pass `prices=` to use your own contract.
DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    "gemini-2.5-flash-image": ModelPrice(input_per_million=0.30, output_per_million=30.0),
}


@dataclass(frozen=True, slots=True)
class GeminiUsage:
    input_tokens: int | None
    output_tokens: int | None
    total_tokens: int | None


@dataclass(frozen=True, slots=True)
class GeminiImage:
    """A generated image and what it cost."""

    image: bytes
    mime_type: str
    usage: GeminiUsage
    model: str  # the model version that answered
    response_id: str | None
    cost_usd: float | None  # None when the model has no price in the table
    duration_ms: float
    text: str | None = None  # any text the model returned next to the image


class GeminiError(DomainError):
    """A failed Gemini call. `error_type` is the low-cardinality reason, as recorded on the span."""

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        status_code: int | None = None,
        block_reason: str | None = None,
        usage: GeminiUsage | None = None,
    ) -> None:
        super().__init__(error_type, message, status_code=status_code)
        self.block_reason = block_reason
        self.usage = usage


class GeminiTimeout(GeminiError):
    """No answer within the client's timeout."""


class GeminiSafetyBlock(GeminiError):
    """The content filter refused the prompt or the image (`block_reason` says which rule)."""


@dataclass(frozen=True, slots=True)
class _Prepared:
    url: str
    headers: dict[str, str]
    params: dict[str, str]
    body: dict[str, Any]
    model: str
    attributes: dict[str, Any]
    store_id: str | None


class _GeminiConfig:
    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        model: str = DEFAULT_MODEL,
        timeout: float = 60.0,
        auth: Literal["header", "query"] = "header",
        prices: Mapping[str, ModelPrice] | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if auth not in ("header", "query"):
            raise ValueError(f"auth must be 'header' or 'query', not {auth!r}")
        self._api_key = api_key
        self._base_url = base_url.rstrip("/")
        self.model = model
        self.timeout = timeout
        self._auth = auth
        self._prices = dict(DEFAULT_PRICES if prices is None else prices)
        self._tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        self._metrics = domain_metrics(meter_provider)
        parsed = httpx.URL(self._base_url)
        self._server = {"server.address": parsed.host, "server.port": parsed.port or _default_port(parsed.scheme)}

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(base_url={self._base_url!r}, model={self.model!r})"

    def _prepare(
        self,
        prompt: str,
        *,
        image: bytes | None,
        image_mime_type: str,
        model: str | None,
        style: str | None,
        aspect_ratio: str | None,
        menu_item_id: str | None,
        store_id: str | None,
    ) -> _Prepared:
        model = model or self.model
        parts: list[dict[str, Any]] = [{"text": prompt}]
        if image is not None:
            data = base64.b64encode(image).decode("ascii")
            parts.append({"inlineData": {"mimeType": image_mime_type, "data": data}})
        config: dict[str, Any] = {"responseModalities": ["IMAGE"]}
        if aspect_ratio:
            config["imageConfig"] = {"aspectRatio": aspect_ratio}
        body = {"contents": [{"role": "user", "parts": parts}], "generationConfig": config}
        headers = {"x-goog-api-key": self._api_key} if self._auth == "header" else {}
        params = {"key": self._api_key} if self._auth == "query" else {}
        store = tenant_value("store_id", store_id)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": model,
            "gen_ai.output.type": "image",
            **self._server,
        }
        optional = {
            "pideai.ai.style": style,
            "pideai.ai.aspect_ratio": aspect_ratio,
            "pideai.menu_item_id": menu_item_id,
            "pideai.ai.input_image_size_kb": _kb(image) if image is not None else None,
            "store_id": store,
        }
        attributes.update({k: v for k, v in optional.items() if v is not None})
        url = f"{self._base_url}/v1beta/models/{model}:generateContent"
        return _Prepared(url, headers, params, body, model, attributes, store)

    def _call(self, prepared: _Prepared) -> _GeminiCall:
        return _GeminiCall(self, prepared)


class _GeminiCall:
    """The span, timing and metrics of one request; the transport is the caller's."""

    def __init__(self, client: _GeminiConfig, prepared: _Prepared) -> None:
        self._client = client
        self._prepared = prepared
        self._watch = Stopwatch()
        self._span: trace.Span = trace.INVALID_SPAN
        self._token: object | None = None
        self._result: GeminiImage | None = None
        self._usage: GeminiUsage | None = None

    def __enter__(self) -> _GeminiCall:
        p = self._prepared
        self._span = self._client._tracer.start_span(
            f"{OPERATION} {p.model}", kind=SpanKind.CLIENT, attributes=p.attributes
        )
        # Current, so that an instrumented httpx client's HTTP span nests under this one.
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._watch = Stopwatch()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        duration_s = self._watch.seconds
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        if self._result is not None:
            self._result = replace(self._result, duration_ms=round(duration_s * 1000.0, 3))
        try:
            self._finish(duration_s, exc)
        finally:
            self._span.end()

    def transport_error(self, exc: httpx.HTTPError) -> GeminiError:
        message = scrub(str(exc) or type(exc).__name__, [self._client._api_key])[:_MAX_MESSAGE]
        if isinstance(exc, httpx.TimeoutException):
            return GeminiTimeout("timeout", f"no answer within {self._client.timeout:g} s ({message})")
        return GeminiError(f"httpx.{type(exc).__name__}", message)

    def parse(self, response: httpx.Response) -> GeminiImage:
        """The image in `response`, or the GeminiError that describes why there is none."""
        self._span.set_attribute("http.response.status_code", response.status_code)
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code >= 400:
            raise self._http_error(response.status_code, payload)
        if not isinstance(payload, dict):
            raise GeminiError("invalid_response", "response body is not a JSON object")
        return self._parse_success(payload)

    def _http_error(self, status: int, payload: Any) -> GeminiError:
        error = payload.get("error") if isinstance(payload, dict) else None
        error = error if isinstance(error, dict) else {}
        google_status = error.get("status")
        error_type = google_status if isinstance(google_status, str) and google_status else str(status)
        detail = scrub(str(error.get("message") or ""), [self._client._api_key])[:_MAX_MESSAGE]
        return GeminiError(
            error_type, f"Gemini API answered HTTP {status} {error_type}: {detail}".rstrip(": "), status_code=status
        )

    def _parse_success(self, payload: dict[str, Any]) -> GeminiImage:
        usage = _usage(payload.get("usageMetadata"))
        self._usage = usage
        response_model = payload.get("modelVersion")
        response_id = payload.get("responseId")
        if isinstance(response_model, str):
            self._span.set_attribute("gen_ai.response.model", response_model)
        if isinstance(response_id, str):
            self._span.set_attribute("gen_ai.response.id", response_id)

        feedback = payload.get("promptFeedback")
        block_reason = feedback.get("blockReason") if isinstance(feedback, dict) else None
        if block_reason:
            raise GeminiSafetyBlock(
                "safety_block", f"prompt blocked: {block_reason}", block_reason=str(block_reason), usage=usage
            )

        candidates = payload.get("candidates")
        first = candidates[0] if isinstance(candidates, list) and candidates and isinstance(candidates[0], dict) else {}
        finish_reason = first.get("finishReason")
        if isinstance(finish_reason, str):
            self._span.set_attribute("gen_ai.response.finish_reasons", [finish_reason.lower()])
        image, mime_type, text = _first_image(first)
        if image is None:
            if finish_reason in _SAFETY_REASONS:
                raise GeminiSafetyBlock(
                    "safety_block", f"image blocked: {finish_reason}", block_reason=finish_reason, usage=usage
                )
            raise GeminiError("no_image", f"no image in the answer (finishReason={finish_reason})", usage=usage)
        try:
            data = base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise GeminiError("invalid_response", "image data is not valid base64", usage=usage) from None
        model = response_model if isinstance(response_model, str) else self._prepared.model
        self._result = GeminiImage(
            image=data,
            mime_type=mime_type or "application/octet-stream",
            usage=usage,
            model=model,
            response_id=response_id if isinstance(response_id, str) else None,
            cost_usd=self._cost_of(usage, images=1),
            duration_ms=0.0,
            text=text,
        )
        return self._result

    @property
    def result(self) -> GeminiImage:
        """The parsed image, with its duration once the call has ended."""
        if self._result is None:
            raise RuntimeError("no result: parse() did not succeed")
        return self._result

    def _cost_of(self, usage: GeminiUsage | None, images: int) -> float | None:
        price = self._client._prices.get(self._prepared.model)
        if usage is None or price is None:
            return None
        return price.cost(usage.input_tokens, usage.output_tokens, images)

    @guarded("domain.gemini.finish")
    def _finish(self, duration_s: float, exc: BaseException | None) -> None:
        p = self._prepared
        span = self._span
        span.set_attribute("pideai.ai.duration_ms", round(duration_s * 1000.0, 3))
        usage = self._usage or (exc.usage if isinstance(exc, GeminiError) else None)
        ok = exc is None and self._result is not None
        self._record_usage(usage, images=1 if ok else 0)

        m = self._client._metrics
        common = {"gen_ai.request.model": p.model, "store_id": p.store_id}
        if exc is None:
            if self._result is not None:
                span.set_attribute("pideai.ai.image_size_kb", _kb(self._result.image))
                m.add(m.images_generated, 1, common)
            m.record(m.generation_duration, duration_s, common)
            return

        error_type = exc.error_type if isinstance(exc, GeminiError) else qualified_name(exc)
        message = exc.message if isinstance(exc, GeminiError) else scrub(str(exc), [self._client._api_key])
        message = message[:_MAX_MESSAGE]
        span.set_attribute("error.type", error_type)
        if isinstance(exc, GeminiError) and exc.block_reason:
            span.set_attribute("pideai.ai.block_reason", exc.block_reason)
        span.set_status(Status(StatusCode.ERROR, message))
        # Not record_exception(): the message is scrubbed here, and the chain of causes is not kept.
        span.add_event("exception", {"exception.type": qualified_name(exc), "exception.message": message})
        m.add(m.ai_errors, 1, {**common, "error.type": error_type})
        m.record(m.generation_duration, duration_s, {**common, "error.type": error_type})

    def _record_usage(self, usage: GeminiUsage | None, images: int) -> None:
        if usage is None:
            return
        p = self._prepared
        span = self._span
        m = self._client._metrics
        token_attrs = {
            "gen_ai.operation.name": OPERATION,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": p.model,
        }
        if usage.input_tokens is not None:
            span.set_attribute("gen_ai.usage.input_tokens", usage.input_tokens)
            m.record(m.token_usage, usage.input_tokens, {**token_attrs, "gen_ai.token.type": "input"})
        if usage.output_tokens is not None:
            span.set_attribute("gen_ai.usage.output_tokens", usage.output_tokens)
            m.record(m.token_usage, usage.output_tokens, {**token_attrs, "gen_ai.token.type": "output"})
        cost = self._cost_of(usage, images)
        if cost is not None:
            span.set_attribute("pideai.ai.api_cost_usd", cost)
            m.add(m.ai_cost, cost, {"gen_ai.request.model": p.model, "store_id": p.store_id})


class GeminiImageClient(_GeminiConfig, SyncHttpOwner):
    """Blocking client. Use as a context manager, or call `close()`, unless you pass `http_client`."""

    def __init__(self, *, http_client: httpx.Client | None = None, **config: Any) -> None:
        super().__init__(**config)
        self._adopt_http(http_client)

    def generate_image(
        self,
        prompt: str,
        *,
        image: bytes | None = None,
        image_mime_type: str = "image/jpeg",
        model: str | None = None,
        style: str | None = None,
        aspect_ratio: str | None = None,
        menu_item_id: str | None = None,
        store_id: str | None = None,
    ) -> GeminiImage:
        """Generate (or, given `image`, enhance) a product image. Raises GeminiError.

        `style` names the PideAI style preset the prompt was built from; it is recorded, not sent.
        """
        prepared = self._prepare(
            prompt,
            image=image,
            image_mime_type=image_mime_type,
            model=model,
            style=style,
            aspect_ratio=aspect_ratio,
            menu_item_id=menu_item_id,
            store_id=store_id,
        )
        with self._call(prepared) as call:
            error: GeminiError | None = None
            try:
                response = self._http.post(
                    prepared.url,
                    json=prepared.body,
                    headers=prepared.headers,
                    params=prepared.params,
                    timeout=self.timeout,
                )
            except httpx.HTTPError as exc:
                error = call.transport_error(exc)
            if error is not None:
                raise error  # outside the handler: the httpx exception is not chained
            call.parse(response)
        return call.result


class AsyncGeminiImageClient(_GeminiConfig, AsyncHttpOwner):
    """asyncio client. Use as an async context manager, or `await aclose()`, unless you pass `http_client`."""

    def __init__(self, *, http_client: httpx.AsyncClient | None = None, **config: Any) -> None:
        super().__init__(**config)
        self._adopt_http(http_client)

    async def generate_image(
        self,
        prompt: str,
        *,
        image: bytes | None = None,
        image_mime_type: str = "image/jpeg",
        model: str | None = None,
        style: str | None = None,
        aspect_ratio: str | None = None,
        menu_item_id: str | None = None,
        store_id: str | None = None,
    ) -> GeminiImage:
        """Generate (or, given `image`, enhance) a product image. Raises GeminiError."""
        prepared = self._prepare(
            prompt,
            image=image,
            image_mime_type=image_mime_type,
            model=model,
            style=style,
            aspect_ratio=aspect_ratio,
            menu_item_id=menu_item_id,
            store_id=store_id,
        )
        with self._call(prepared) as call:
            error: GeminiError | None = None
            try:
                response = await self._http.post(
                    prepared.url,
                    json=prepared.body,
                    headers=prepared.headers,
                    params=prepared.params,
                    timeout=self.timeout,
                )
            except httpx.HTTPError as exc:
                error = call.transport_error(exc)
            if error is not None:
                raise error
            call.parse(response)
        return call.result


def _usage(raw: Any) -> GeminiUsage:
    raw = raw if isinstance(raw, dict) else {}
    return GeminiUsage(
        input_tokens=_int_or_none(raw.get("promptTokenCount")),
        output_tokens=_int_or_none(raw.get("candidatesTokenCount")),
        total_tokens=_int_or_none(raw.get("totalTokenCount")),
    )


def _first_image(candidate: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(base64 data, mime type, text) of the first image part; the REST API spells keys either way."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        inline = part.get("inlineData") or part.get("inline_data")
        if isinstance(inline, dict) and isinstance(inline.get("data"), str):
            mime = inline.get("mimeType") or inline.get("mime_type")
            if mime is None or str(mime).startswith("image/"):
                return inline["data"], mime, "\n".join(texts) or None
    return None, None, "\n".join(texts) or None


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _kb(data: bytes) -> float:
    return round(len(data) / 1024.0, 2)


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
