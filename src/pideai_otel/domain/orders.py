"""The order pipeline as spans: placed -> validated -> paid -> stored -> notified.

    with order_pipeline(order_id="o-17", store_id="s-3"):
        with order_step("placed"): ...
        with order_step("validated"): ...

    @order_step("stored")          # also as a decorator, sync or async
    async def store(order): ...

`order_pipeline` is the parent span (`process order`); it records `pideai.orders` (by outcome:
completed / failed) and `pideai.order.duration` when it ends. Each `order_step` is a child span
(`order {step}`) carrying `order_id` and `pideai.order.status` (the step reached, or `failed`).
A step that raises, or on which `fail()` is called, marks the order failed: step span ERROR,
`pideai.order.status=failed` on the step and the pipeline. A step used outside any pipeline
counts its own failure in `pideai.orders` (there is no pipeline to do it).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from pideai_otel._diagnostics import guarded

from ._common import SCOPE, Stopwatch, current_order_scope, qualified_name, tenant_value
from .metrics import domain_metrics

__all__ = ["ORDER_STEPS", "OrderPipeline", "OrderStep", "order_pipeline", "order_step", "current_order"]

# Step names are span names and a metric attribute, so they are a closed set.
ORDER_STEPS: tuple[str, ...] = ("placed", "validated", "paid", "stored", "notified")
FAILED = "failed"

_F = TypeVar("_F", bound=Callable[..., Any])
_current = current_order_scope


def current_order() -> OrderPipeline | None:
    """The pipeline in force here, if any."""
    found = _current.get()
    return found if isinstance(found, OrderPipeline) else None


class OrderPipeline:
    """One order from placement to its last step. Use via `order_pipeline(...)`."""

    def __init__(
        self,
        order_id: str,
        *,
        store_id: str | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.order_id = str(order_id)
        self.store_id = tenant_value("store_id", store_id)
        self.status: str | None = None  # the last step reached, or "failed"
        self.failed_step: str | None = None
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._span: trace.Span = trace.INVALID_SPAN
        self._tokens: tuple[object, contextvars.Token[Any]] | None = None
        self._watch = Stopwatch()

    @property
    def failed(self) -> bool:
        return self.failed_step is not None

    def fail(self, step: str | None = None) -> None:
        """Mark the order failed (at `step`, if known) without raising."""
        if self.failed_step is None:
            self.failed_step = step or self.status or "unknown"
        self.status = FAILED

    def __enter__(self) -> OrderPipeline:
        tracer = trace.get_tracer(SCOPE, tracer_provider=self._tracer_provider)
        attributes = {"order_id": self.order_id}
        if self.store_id is not None:
            attributes["store_id"] = self.store_id
        self._span = tracer.start_span("process order", kind=SpanKind.INTERNAL, attributes=attributes)
        self._watch = Stopwatch()
        self._tokens = (otel_context.attach(trace.set_span_in_context(self._span)), _current.set(self))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        duration_s = self._watch.seconds
        if self._tokens is not None:
            otel_context.detach(self._tokens[0])  # type: ignore[arg-type]
            _current.reset(self._tokens[1])
        if exc is not None and not self.failed:
            self.fail()
        try:
            self._finish(duration_s, exc)
        finally:
            self._span.end()

    @guarded("domain.orders.pipeline")
    def _finish(self, duration_s: float, exc: BaseException | None) -> None:
        span = self._span
        outcome = FAILED if self.failed else "completed"
        span.set_attribute("pideai.order.status", self.status or outcome)
        span.set_attribute("pideai.order.outcome", outcome)
        span.set_attribute("pideai.order.duration_ms", round(duration_s * 1000.0, 3))
        if self.failed:
            span.set_attribute("pideai.order.failed_step", self.failed_step or "unknown")
            if exc is not None:
                span.set_attribute("error.type", qualified_name(exc))
            span.set_status(Status(StatusCode.ERROR, f"order failed at step {self.failed_step}"))
        m = domain_metrics(self._meter_provider)
        attributes = {"outcome": outcome, "store_id": self.store_id, "pideai.order.failed_step": self.failed_step}
        m.add(m.orders, 1, attributes)
        m.record(m.order_duration, duration_s, {"outcome": outcome, "store_id": self.store_id})


def order_pipeline(
    order_id: str,
    *,
    store_id: str | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> OrderPipeline:
    """The parent span of one order's steps; counts the order and times it when the block ends."""
    return OrderPipeline(order_id, store_id=store_id, tracer_provider=tracer_provider, meter_provider=meter_provider)


class OrderStep:
    """One pipeline step as a span. Use via `order_step(...)`, as `with` or as a decorator."""

    def __init__(
        self,
        step: str,
        *,
        order_id: str | None = None,
        store_id: str | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if step not in ORDER_STEPS:
            raise ValueError(f"unknown order step {step!r}; steps: {', '.join(ORDER_STEPS)}")
        self.step = step
        self._order_id = order_id
        self._store_id = store_id
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self._span: trace.Span = trace.INVALID_SPAN
        self._token: object | None = None
        self._pipeline: OrderPipeline | None = None
        self._failed = False
        self._entered = False

    def fail(self, reason: str | None = None) -> None:
        """Mark this step (and so the order) failed without raising, e.g. a declined payment."""
        self._failed = True
        if reason:
            self._span.set_attribute("pideai.order.failure_reason", reason)

    def __enter__(self) -> OrderStep:
        if self._entered:
            raise RuntimeError("an OrderStep is entered once; call order_step(...) again")
        self._entered = True
        pipeline = self._pipeline = current_order()
        order_id = self._order_id or (pipeline.order_id if pipeline else None) or tenant_value("order_id")
        store_id = self._store_id or (pipeline.store_id if pipeline else None) or tenant_value("store_id")
        self._order_id, self._store_id = order_id, store_id
        attributes = {"pideai.order.step": self.step}
        if order_id is not None:
            attributes["order_id"] = order_id
        if store_id is not None:
            attributes["store_id"] = store_id
        tracer = trace.get_tracer(SCOPE, tracer_provider=self._tracer_provider)
        self._span = tracer.start_span(f"order {self.step}", kind=SpanKind.INTERNAL, attributes=attributes)
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        failed = self._failed or exc is not None
        pipeline = self._pipeline
        if pipeline is not None:
            if failed:
                pipeline.fail(self.step)
            elif not pipeline.failed:
                pipeline.status = self.step
        try:
            self._finish(failed, exc)
        finally:
            self._span.end()

    @guarded("domain.orders.step")
    def _finish(self, failed: bool, exc: BaseException | None) -> None:
        span = self._span
        span.set_attribute("pideai.order.status", FAILED if failed else self.step)
        if not failed:
            return
        if exc is not None:
            span.set_attribute("error.type", qualified_name(exc))
            span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"order step {self.step} failed"))
        if self._pipeline is None:
            m = domain_metrics(self._meter_provider)
            m.add(m.orders, 1, {"outcome": FAILED, "store_id": self._store_id, "pideai.order.failed_step": self.step})

    def __call__(self, func: _F) -> _F:
        """Decorate a function: each call runs inside a fresh step span."""
        options: dict[str, Any] = {
            "order_id": self._order_id,
            "store_id": self._store_id,
            "tracer_provider": self._tracer_provider,
            "meter_provider": self._meter_provider,
        }
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with OrderStep(self.step, **options):
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with OrderStep(self.step, **options):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def order_step(
    step: str,
    *,
    order_id: str | None = None,
    store_id: str | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> OrderStep:
    """A step span; order_id and store_id come from the enclosing pipeline (or baggage) if not given."""
    return OrderStep(
        step, order_id=order_id, store_id=store_id, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
