"""Payment gateway calls as CLIENT spans: gateway, outcome, amount, currency; never card data or PII.

`payment_call(...)` wraps any gateway SDK call; `PaymentGatewayClient` is a small httpx client for
a gateway with a charges API (the demo's stand-in). A decline is a business outcome, not a failed
call: the span keeps status UNSET and says `payment.outcome=declined`. Only gateway errors
(5xx, timeouts, exceptions) set ERROR. Exception messages are not recorded (a gateway may echo
card details in them): only the exception type.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
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
    tenant_value,
)
from .metrics import domain_metrics

__all__ = [
    "Outcome",
    "PaymentCall",
    "payment_call",
    "ChargeResult",
    "PaymentError",
    "PaymentGatewayClient",
    "AsyncPaymentGatewayClient",
    "to_minor_units",
]

Outcome = Literal["approved", "declined", "error"]
_OUTCOMES = ("approved", "declined", "error")
# ISO 4217 currencies whose minor unit is not 1/100.
_EXPONENTS = {
    **dict.fromkeys(
        (
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
}


def to_minor_units(amount: Decimal | int | float | str, currency: str) -> int:
    """12.5 MXN -> 1250; 1500 CLP -> 1500 (the unit gateways charge in)."""
    exponent = _EXPONENTS.get(currency.upper(), 2)
    scaled = Decimal(str(amount)) * (Decimal(10) ** exponent)
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


class PaymentCall:
    """The span of one gateway call. Say how it ended with `set_outcome`; an exception means 'error'."""

    def __init__(
        self,
        gateway: str,
        *,
        amount: Decimal | int | float | str,
        currency: str,
        operation: str = "charge",
        order_id: str | None = None,
        store_id: str | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.gateway = gateway
        self.currency = currency.upper()
        self._amount = float(Decimal(str(amount)))
        self._operation = operation
        self._order_id = tenant_value("order_id", order_id)
        self._store_id = tenant_value("store_id", store_id)
        self._tracer = trace.get_tracer(SCOPE, tracer_provider=tracer_provider)
        self._meter_provider = meter_provider
        self._span: trace.Span = trace.INVALID_SPAN
        self._token: object | None = None
        self._watch = Stopwatch()
        self.outcome: Outcome | None = None
        self._error_type: str | None = None

    def set_outcome(
        self,
        outcome: Outcome,
        *,
        decline_code: str | None = None,
        error_type: str | None = None,
        payment_id: str | None = None,
    ) -> None:
        """`decline_code` is the gateway's reason (insufficient_funds...); `payment_id` its charge id."""
        if outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {_OUTCOMES}, not {outcome!r}")
        self.outcome = outcome
        self._error_type = error_type if outcome == "error" else None
        optional = {"payment.decline_code": decline_code, "payment.id": payment_id}
        self._span.set_attributes({k: v for k, v in optional.items() if v is not None})

    def __enter__(self) -> PaymentCall:
        attributes: dict[str, Any] = {
            "payment.gateway": self.gateway,
            "payment.operation": self._operation,
            "payment.amount": self._amount,
            "payment.currency": self.currency,
        }
        if self._order_id is not None:
            attributes["order_id"] = self._order_id
        if self._store_id is not None:
            attributes["store_id"] = self._store_id
        self._span = self._tracer.start_span(
            f"{self._operation} {self.gateway}", kind=SpanKind.CLIENT, attributes=attributes
        )
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._watch = Stopwatch()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        try:
            self._finish(exc)
        finally:
            self._span.end()

    @guarded("domain.payments.finish")
    def _finish(self, exc: BaseException | None) -> None:
        span = self._span
        if exc is not None:
            self.outcome = "error"
            if self._error_type is None:
                self._error_type = exc.error_type if isinstance(exc, PaymentError) else qualified_name(exc)
            span.add_event("exception", {"exception.type": qualified_name(exc)})
        outcome = self.outcome or "error"
        span.set_attribute("payment.outcome", outcome)
        span.set_attribute("pideai.payment.duration_ms", self._watch.ms)
        if outcome == "error":
            error_type = self._error_type or "unknown"
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, f"payment gateway error: {error_type}"))
        m = domain_metrics(self._meter_provider)
        m.add(
            m.payments,
            1,
            {
                "payment.gateway": self.gateway,
                "payment.outcome": outcome,
                "payment.currency": self.currency,
                "store_id": self._store_id,
            },
        )


def payment_call(
    gateway: str,
    *,
    amount: Decimal | int | float | str,
    currency: str,
    operation: str = "charge",
    order_id: str | None = None,
    store_id: str | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> PaymentCall:
    """Span one gateway call; `amount` in major units (12.50), `currency` ISO 4217.

    with payment_call("stripe", amount=order.total, currency="MXN") as call:
        charge = stripe.Charge.create(...)
        call.set_outcome("approved" if charge.paid else "declined", payment_id=charge.id)
    """
    return PaymentCall(
        gateway,
        amount=amount,
        currency=currency,
        operation=operation,
        order_id=order_id,
        store_id=store_id,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )


@dataclass(frozen=True, slots=True)
class ChargeResult:
    payment_id: str | None
    outcome: Outcome  # approved or declined; errors raise PaymentError
    decline_code: str | None = None


class PaymentError(DomainError):
    """The gateway failed (not a decline). `error_type`: HTTP status, 'timeout' or the httpx error."""


class _GatewayConfig:
    def __init__(
        self,
        *,
        base_url: str,
        api_key: str,
        gateway: str = "standin",
        timeout: float = 15.0,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.gateway = gateway
        self.timeout = timeout
        self._providers: dict[str, Any] = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}

    def __repr__(self) -> str:  # never show the key
        return f"{type(self).__name__}(base_url={self._base_url!r}, gateway={self.gateway!r})"

    def _request(
        self, amount: Any, currency: str, source: str, order_id: str | None, idempotency_key: str | None
    ) -> dict[str, Any]:
        body = {"amount": to_minor_units(amount, currency), "currency": currency.upper(), "source": source}
        if order_id is not None:
            body["reference"] = order_id
        headers = {
            "authorization": f"Bearer {self._api_key}",
            "idempotency-key": idempotency_key or secrets.token_hex(16),
        }
        return {"url": f"{self._base_url}/v1/charges", "json": body, "headers": headers, "timeout": self.timeout}

    def _call(self, amount: Any, currency: str, order_id: str | None, store_id: str | None) -> PaymentCall:
        return payment_call(
            self.gateway, amount=amount, currency=currency, order_id=order_id, store_id=store_id, **self._providers
        )


def _transport_error(exc: httpx.HTTPError) -> PaymentError:
    if isinstance(exc, httpx.TimeoutException):
        return PaymentError("timeout", "the payment gateway did not answer in time")
    return PaymentError(f"httpx.{type(exc).__name__}", "could not reach the payment gateway")


def _read(call: PaymentCall, response: httpx.Response) -> ChargeResult:
    call._span.set_attribute("http.response.status_code", response.status_code)
    try:
        payload = response.json()
    except ValueError:
        payload = {}
    payload = payload if isinstance(payload, Mapping) else {}
    payment_id = payload.get("id") if isinstance(payload.get("id"), str) else None
    status = payload.get("status")
    if status == "approved" and response.status_code < 300:
        call.set_outcome("approved", payment_id=payment_id)
        return ChargeResult(payment_id, "approved")
    if status == "declined":
        code = payload.get("decline_code") if isinstance(payload.get("decline_code"), str) else None
        call.set_outcome("declined", decline_code=code, payment_id=payment_id)
        return ChargeResult(payment_id, "declined", code)
    raise PaymentError(
        str(response.status_code),
        f"payment gateway answered HTTP {response.status_code}",
        status_code=response.status_code,
    )


class PaymentGatewayClient(_GatewayConfig, SyncHttpOwner):
    """Blocking client for a charges API (`POST /v1/charges`); one span per call."""

    def __init__(self, *, http_client: httpx.Client | None = None, **config: Any) -> None:
        super().__init__(**config)
        self._adopt_http(http_client)

    def charge(
        self,
        amount: Decimal | int | float | str,
        currency: str,
        source: str,
        *,
        order_id: str | None = None,
        store_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> ChargeResult:
        """Charge `amount` (major units) to a tokenized `source`; a decline is returned, errors raise."""
        request = self._request(amount, currency, source, order_id, idempotency_key)
        with self._call(amount, currency, order_id, store_id) as call:
            error: PaymentError | None = None
            try:
                response = self._http.post(**request)
            except httpx.HTTPError as exc:
                error = _transport_error(exc)
            if error is not None:
                raise error
            return _read(call, response)


class AsyncPaymentGatewayClient(_GatewayConfig, AsyncHttpOwner):
    """asyncio client for a charges API (`POST /v1/charges`); one span per call."""

    def __init__(self, *, http_client: httpx.AsyncClient | None = None, **config: Any) -> None:
        super().__init__(**config)
        self._adopt_http(http_client)

    async def charge(
        self,
        amount: Decimal | int | float | str,
        currency: str,
        source: str,
        *,
        order_id: str | None = None,
        store_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> ChargeResult:
        request = self._request(amount, currency, source, order_id, idempotency_key)
        with self._call(amount, currency, order_id, store_id) as call:
            error: PaymentError | None = None
            try:
                response = await self._http.post(**request)
            except httpx.HTTPError as exc:
                error = _transport_error(exc)
            if error is not None:
                raise error
            return _read(call, response)

