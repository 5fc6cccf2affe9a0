"""Traces: OpenTelemetry spans of requests and of their queries, when OpenTelemetry's own
environment asks for them (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
OTEL_TRACES_EXPORTER) and the `otel` extra is installed. Otherwise nothing of OpenTelemetry is
imported, and requests pay nothing for it."""

from __future__ import annotations

from collections.abc import Mapping

from litestar.types import ASGIApp

ASKING = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")
MISSING = "OTEL_* asks for traces, but OpenTelemetry is not installed: pip install 'convtree[otel]'"


def wanted(env: Mapping[str, str]) -> bool:
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() not in ("", "none") for name in ASKING)


def traced(handler: ASGIApp, env: Mapping[str, str]) -> ASGIApp:
    """`handler` in a span per request, asyncpg's queries as child spans, exported as OTEL_* says."""
    try:
        from opentelemetry import trace
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
        from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
    except ImportError as exc:
        raise RuntimeError(MISSING) from exc

    if not isinstance(trace.get_tracer_provider(), TracerProvider):  # once per process
        exporter: SpanExporter
        if env.get("OTEL_TRACES_EXPORTER", "").strip() == "console":
            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers, timeout: from OTEL_EXPORTER_OTLP_*
        provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "convtree"}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]  # its __init__ has no annotations
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    # The same ASGI callable: OpenTelemetry types a scope and its messages as MutableMapping, which
    # litestar's TypedDicts are not (to mypy), though every scope litestar passes is one.
    return OpenTelemetryMiddleware(handler)  # type: ignore[return-value]
