"""Traces: one server span per request, the limiter's decision and the upstream call as its
children with the GenAI attributes, and the trace context sent upstream; nothing when off."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from gateway.app import create_app
from gateway.config import ConfigError, load_settings

CHAT = "/v1/chat/completions"


@pytest.fixture
def exported():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def traced(aiohttp_client, base_env, translator, provider, **env):
    settings = load_settings({**base_env, "MINUTE_LIMIT": "10", **env})
    app = create_app(settings, translator=translator, tracer_provider=provider)
    return await aiohttp_client(app)


@pytest.mark.parametrize("stream", [False, True])
async def test_one_request_one_trace(aiohttp_client, base_env, translator, exported, fake, stream):
    provider, exporter = exported
    client = await traced(aiohttp_client, base_env, translator, provider)
    call = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
    if stream:
        call |= {"stream": True, "stream_options": {"include_usage": True}}
    response = await client.post(CHAT, data=json.dumps(call))
    assert response.status == 200
    await response.read()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans[f"POST {CHAT}"]
    limiter = spans["rate_limit"]
    upstream = spans["chat gpt-4o-mini"]
    assert server.kind == SpanKind.SERVER and upstream.kind == SpanKind.CLIENT
    for child in (limiter, upstream):
        assert child.parent.span_id == server.context.span_id
        assert child.context.trace_id == server.context.trace_id
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time
    assert limiter.attributes["gateway.limit.allowed"] is True
    assert server.attributes["http.response.status_code"] == 200
    attributes = dict(upstream.attributes)
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert (attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]) == (
        11,
        4,
    )
    assert attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert attributes["gen_ai.response.time_to_first_chunk"] * 1e9 <= (
        upstream.end_time - upstream.start_time
    )
    # The upstream sees the trace: its traceparent names this trace.
    traceparent = fake.received[-1].headers["traceparent"]
    assert traceparent.split("-")[1] == f"{server.context.trace_id:032x}"


@pytest.mark.parametrize("stream", [False, True])
async def test_the_legacy_route_is_traced_too(
    aiohttp_client, base_env, translator, exported, stream
):
    provider, exporter = exported
    client = await traced(aiohttp_client, base_env, translator, provider)
    response = await client.post("/api", json={"user_content": "Hi", "stream": stream})
    assert response.status == 200
    await response.read()
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert {"POST /api", "rate_limit", "chat gpt-4o-mini"} <= set(spans)
    attributes = dict(spans["chat gpt-4o-mini"].attributes)
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    if not stream:  # a stream not metered does not ask for its usage
        usage = attributes["gen_ai.usage.input_tokens"], attributes["gen_ai.usage.output_tokens"]
        assert usage == (11, 4)


async def test_an_incoming_trace_is_continued(aiohttp_client, base_env, translator, exported):
    provider, exporter = exported
    client = await traced(aiohttp_client, base_env, translator, provider)
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    await client.get("/v1/models", headers={"traceparent": parent})
    (server,) = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert f"{server.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"


def test_off_without_an_endpoint_no_tracer_and_no_tracing_layer():
    # redis-py imports parts of OpenTelemetry for its own metrics; the tracer and the
    # propagators, ours to load, stay out.
    probe = (
        "import sys; from gateway.app import create_app; from gateway.config import load_settings;"
        "app = create_app(load_settings({'API_KEY': 'sk-x'}));"
        "loaded = {'opentelemetry.sdk.trace', 'opentelemetry.propagate'} & set(sys.modules);"
        "assert not loaded, loaded;"
        "print(' '.join(m.__name__ for m in app.middlewares))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert "middleware" in done.stdout and "tracing" not in done.stdout.lower()
    assert len(done.stdout.split()) == 5  # access, drain, errors, CORS, admission


@pytest.mark.parametrize(
    ("env", "endpoint"),
    [
        ({}, None),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"},
            "http://collector:4318/v1/traces",
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/v1/traces",
            },
            "http://traces:4318/v1/traces",
        ),
    ],
)
def test_the_endpoint_is_read_as_opentelemetry_reads_it(env, endpoint):
    assert load_settings(env).otel_endpoint == endpoint


def test_a_bad_endpoint_is_a_configuration_error():
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_ENDPOINT='collector:4318'"):
        load_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"})


async def test_an_endpoint_turns_tracing_on(base_env, translator):
    env = {
        **base_env,
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_SERVICE_NAME": "gw",
    }
    app = create_app(load_settings(env), translator=translator)
    assert len(app.middlewares) == 6
