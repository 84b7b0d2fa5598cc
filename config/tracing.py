"""The span settings: `OTEL_ENABLED` and the exporter, checked against what is installed."""

from __future__ import annotations

import importlib.util

from config.env import EnvReader, SettingsError
from telemetry.spans import EXPORTERS, TracingSettings

OTLP_PROTOCOL = "http/protobuf"  # the one the `otel` extra installs an exporter for
INSTALL_HINT = "pip install 'hello-ship[otel]'"


def read_tracing(env: EnvReader) -> TracingSettings:
    """`OTEL_ENABLED` and the exporter; the OpenTelemetry SDK reads the rest of `OTEL_*`."""
    enabled = env.choice("OTEL_ENABLED", "false", ("true", "false", "1", "0")) in ("true", "1")
    # The standard switch that turns the whole SDK off wins over ours.
    if not enabled or (env.raw("OTEL_SDK_DISABLED") or "").lower() == "true":
        return TracingSettings()
    exporter = env.choice("OTEL_TRACES_EXPORTER", "otlp", EXPORTERS)
    if importlib.util.find_spec("opentelemetry.sdk") is None:
        raise SettingsError("OTEL_ENABLED", f"needs the OpenTelemetry SDK: {INSTALL_HINT}")
    if exporter == "otlp":
        protocol = env.text("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                            env.text("OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOL))
        if protocol != OTLP_PROTOCOL:
            raise SettingsError("OTEL_EXPORTER_OTLP_PROTOCOL",
                                f"only {OTLP_PROTOCOL} is supported, got {protocol!r}")
        if importlib.util.find_spec("opentelemetry.exporter.otlp.proto.http") is None:
            raise SettingsError("OTEL_TRACES_EXPORTER",
                                f"otlp needs the OTLP exporter: {INSTALL_HINT}")
    return TracingSettings(enabled=True, exporter=exporter)  # type: ignore[arg-type]
