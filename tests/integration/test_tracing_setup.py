"""Tracing's setup: nothing of OpenTelemetry without it, exit 2 without the extra, OTEL_* env."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import textwrap
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from journey.observability.tracing import TracingError, provider_from_env
from journey_client import pb

pytestmark = pytest.mark.slow

CLEAN_ENV = {"PATH": "/usr/bin:/bin"}
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

# A server in a process of its own, a traced Track against it; prints the modules then loaded.
_IMPORTS_PROBE = textwrap.dedent(
    """
    import asyncio, sys
    from journey.app import create_server
    from journey.config import Settings
    from journey_client import JourneyClient

    async def main(database_url: str, tracing: bool) -> None:
        settings = Settings(listen="127.0.0.1:0", database_url=database_url, tracing=tracing)
        server, port = await create_server(settings)
        try:
            async with JourneyClient(f"127.0.0.1:{port}") as client:
                response = await client.track(
                    "web", ["page-view"], trace_context={"traceparent": sys.argv[3]}
                )
                assert response.system_events[0].trace_context["traceparent"]
        finally:
            await server.stop(1)

    asyncio.run(main(sys.argv[1], sys.argv[2] == "on"))
    print(sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry"))
    """
)


async def run_python(*args: str, env: dict[str, str] = CLEAN_ENV) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("tracing", ["off", "on"])
async def test_opentelemetry_is_imported_only_with_tracing_on(tmp_path: Path, tracing: str) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'j.db'}"
    env = {**CLEAN_ENV, "OTEL_TRACES_EXPORTER": "none"}
    code, out, err = await run_python("-c", _IMPORTS_PROBE, url, tracing, TRACEPARENT, env=env)
    assert code == 0, err
    loaded = out.strip().splitlines()[-1]
    if tracing == "off":
        assert loaded == "[]"
    else:
        assert "'opentelemetry.sdk.trace'" in loaded


async def test_tracing_without_the_extra_stops_serve_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "journey.toml"
    config.write_text(
        f'listen = "127.0.0.1:0"\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "j.db"}"\n'
        "tracing = true\n"
    )
    # As if journey[otel] were not installed: `import opentelemetry` fails.
    serve = (
        "import sys; sys.modules['opentelemetry'] = None; from journey.cli import main; "
        f"sys.exit(main(['serve', '--config', {str(config)!r}]))"
    )
    code, _, err = await run_python("-c", serve)
    assert code == 2, err
    assert "pip install 'journey[otel]'" in err
    assert "listening" not in err
    assert "Traceback" not in err
    # The control: with the extra, the same configuration serves.
    ok = serve.replace("sys.modules['opentelemetry'] = None; ", "")
    assert ok != serve
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ok,
        env={**CLEAN_ENV, "OTEL_TRACES_EXPORTER": "none"},
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    async with asyncio.timeout(30):
        while b"listening on port" not in await process.stderr.readline():
            assert process.returncode is None
        process.send_signal(signal.SIGTERM)
        await process.communicate()
    assert process.returncode == 0


async def test_serve_exports_spans_as_the_otel_variables_say(tmp_path: Path) -> None:
    config = tmp_path / "journey.toml"
    config.write_text(
        f'listen = "127.0.0.1:0"\ndatabase_url = "sqlite+aiosqlite:///{tmp_path / "j.db"}"\n'
    )
    log = tmp_path / "serve.log"
    env = {
        **CLEAN_ENV,
        "JOURNEY_TRACING": "true",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_SERVICE_NAME": "journey-test",
    }
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "journey.cli",
            "serve",
            "--config",
            str(config),
            env=env,
            stdout=output,
            stderr=output,
        )
    try:
        async with asyncio.timeout(30):
            while not (found := re.search(r"listening on port (\d+)", log.read_text())):
                assert process.returncode is None, log.read_text()
                await asyncio.sleep(0.05)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{found.group(1)}") as channel:
            await pb.TrackerServiceStub(channel).Track(
                pb.TrackRequest(source_id="web", events=[pb.TrackedEvent(type="page-view")]),
                metadata=(("traceparent", TRACEPARENT),),
            )
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await process.wait()
    text = log.read_text()
    assert process.returncode == 0, text
    # Exported by the time the process ends: the provider is shut down (flushed) at stop.
    assert '"name": "journey.v1.TrackerService/Track"' in text
    assert '"trace_id": "0x4bf92f3577b34da6a3ce929d0e0e4736"' in text
    assert '"service.name": "journey-test"' in text


def _exporters(provider: TracerProvider) -> list[str]:
    # The SDK keeps its processors privately; this is the one place a test looks at them.
    processors = provider._active_span_processor._span_processors
    return [type(p.span_exporter).__name__ for p in processors]  # type: ignore[attr-defined]


def test_provider_from_env_defaults_to_otlp_over_grpc(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = provider_from_env()
    try:
        assert _exporters(provider) == ["OTLPSpanExporter"]
        assert provider.resource.attributes["service.name"] == "journey"
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("variables", "exporters"),
    [
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "console"}, [ConsoleSpanExporter.__name__]),
        (
            {"OTEL_TRACES_EXPORTER": "otlp, console", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            ["OTLPSpanExporter", ConsoleSpanExporter.__name__],
        ),
    ],
)
def test_provider_from_env_follows_otel_traces_exporter(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], exporters: list[str]
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    provider = provider_from_env()
    try:
        assert _exporters(provider) == exporters
    finally:
        provider.shutdown()


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, r"no span exporter 'zipkin' is installed"),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"},
            r"no span exporter 'otlp_proto_http' is installed",
        ),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}, r"unsupported 'carrier-pigeon'"),
    ],
)
def test_provider_from_env_names_what_it_cannot_do(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], message: str
) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(TracingError, match=message):
        provider_from_env()
