"""OpenTelemetry traces, when an OTLP endpoint is set: a server span per request, with the limiter's
decision and the upstream call as children (GenAI attributes on the latter), and the trace context
sent upstream. Off, nothing of it is imported or run."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from gateway.config import Settings
from gateway.keys import ADMISSION_KEY, EXCHANGE_KEY

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

# The upstream path (after /v1/) -> gen_ai.operation.name; the legacy route is a chat.
_OPERATIONS = {
    "chat/completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "chat",
}


def build_tracer_provider(settings: Settings) -> TracerProvider | None:
    """A provider exporting to OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT in batches; None when unset."""
    if not settings.otel_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name})
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otel_endpoint))
    )
    return provider


def tracing_middleware(provider: TracerProvider) -> Middleware:
    from opentelemetry import propagate, trace

    tracer = provider.get_tracer("gateway")

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        """Inside the access middleware: the request's Exchange exists; its figures become spans
        when the handler is done (a stream's end included)."""
        wall, clock = time.time_ns(), time.perf_counter()

        def at(moment: float) -> int:
            return wall + int((moment - clock) * 1e9)

        parent = propagate.extract(request.headers)
        name = f"{request.method} {_route(request)}"
        with tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.SERVER) as span:
            span.set_attribute("http.request.method", request.method)
            span.set_attribute("url.path", request.path)
            exchange = request[EXCHANGE_KEY]
            propagate.inject(exchange.headers)
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                span.set_attribute("http.response.status_code", exc.status)
                raise
            else:
                span.set_attribute("http.response.status_code", response.status)
                return response
            finally:
                _children(tracer, request, span, at)

    return middleware


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def _children(tracer: Tracer, request: web.Request, parent: Span, at: Any) -> None:
    from opentelemetry import trace

    context = trace.set_span_in_context(parent)
    admission = request.get(ADMISSION_KEY)
    if admission is not None and admission.started is not None and admission.seconds is not None:
        decision = admission.decision
        span = tracer.start_span("rate_limit", context=context, start_time=at(admission.started))
        if decision is not None:
            span.set_attribute("gateway.limit.allowed", decision.allowed)
            span.set_attribute("gateway.limit.source", decision.source)
        span.end(end_time=at(admission.started + admission.seconds))
    exchange = request[EXCHANGE_KEY]
    if exchange.started is None:
        return
    operation = _OPERATIONS.get(request.path.removeprefix("/v1/"), "chat")
    model = exchange.model or ""
    span = tracer.start_span(
        f"{operation} {model}".strip(),
        context=context,
        kind=trace.SpanKind.CLIENT,
        start_time=at(exchange.started),
    )
    span.set_attribute("gen_ai.provider.name", "openai")
    span.set_attribute("gen_ai.operation.name", operation)
    if model:
        span.set_attribute("gen_ai.request.model", model)
    if exchange.usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", exchange.usage.prompt)
        span.set_attribute("gen_ai.usage.output_tokens", exchange.usage.completion)
    first = exchange.seconds_to_first_byte()
    if first is not None:
        span.set_attribute("gen_ai.response.time_to_first_chunk", first)
    end = exchange.finished if exchange.finished is not None else time.perf_counter()
    span.end(end_time=at(end))
