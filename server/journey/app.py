"""The server factory: wires storage, streaming and the API together; start and graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.exc import SQLAlchemyError

from journey.api.encoding import add_system_event_service, encode
from journey.api.interceptors import (
    AdmissionInterceptor,
    AuthInterceptor,
    ErrorInterceptor,
    LoggingInterceptor,
    MethodInterceptor,
    SubscriberLimitInterceptor,
    ValidationInterceptor,
)
from journey.api.servicers import (
    SessionServicer,
    SettingsServicer,
    SystemEventServicer,
    TrackerServicer,
)
from journey.auth import KeyRing
from journey.clock import Clock, SystemClock
from journey.config import Settings
from journey.domain.policy import Policy
from journey.journal import Journal
from journey.reflection import enable_reflection
from journey.storage.database import Database, open_database
from journey.storage.failures import FAILURES
from journey.storage.queries import Queries
from journey.storage.upgrade import fill_encoded
from journey.storage.writer import Writer
from journey.streaming.broker import Broker
from journey.streaming.follow import Follow
from journey.sweeper import Sweeper
from journey_client import pb

if TYPE_CHECKING:
    from opentelemetry import trace

    from journey.observability.tracing import Tracing

log = logging.getLogger(__name__)

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (pb.tracker_service_pb2, "TrackerService"),
        (pb.system_event_service_pb2, "SystemEventService"),
        (pb.session_service_pb2, "SessionService"),
        (pb.settings_service_pb2, "SettingsService"),
    )
)


class StartupError(Exception):
    """The server cannot start: bad TLS files, the database cannot be opened, the address taken."""


class TracingUnavailable(StartupError):
    """`tracing = true`, but the OpenTelemetry SDK (the journey[otel] extra) is not installed."""


def start_tracing(
    settings: Settings, provider: trace.TracerProvider | None = None
) -> Tracing | None:
    """Tracing as configured (None when off); `provider` replaces the global one (tests).

    The OpenTelemetry packages are imported only here, and only with tracing on.
    """
    if not settings.tracing:
        return None
    try:
        from journey.observability import tracing
    except ImportError as error:
        raise TracingUnavailable(
            f"tracing = true needs OpenTelemetry: pip install 'journey[otel]' ({error})"
        ) from None
    try:
        return tracing.Tracing.start(provider)
    except tracing.TracingError as error:
        raise StartupError(f"tracing: {error}") from None


def _read(setting: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as error:
        raise StartupError(f"{setting}: cannot read {path}: {error.strerror or error}") from None


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS credentials from the configured files (None for plaintext); StartupError if unusable."""
    if not settings.tls_cert_file:
        return None
    chain = _read("tls_cert_file", settings.tls_cert_file)
    key = _read("tls_key_file", settings.tls_key_file)
    client_ca = (
        _read("tls_client_ca_file", settings.tls_client_ca_file)
        if settings.tls_client_ca_file
        else None
    )
    for setting, data, marker in (
        ("tls_cert_file", chain, b"-----BEGIN CERTIFICATE-----"),
        ("tls_key_file", key, b"PRIVATE KEY-----"),
        ("tls_client_ca_file", client_ca, b"-----BEGIN CERTIFICATE-----"),
    ):
        # grpc only finds out at the first handshake; a clear error at start is kinder.
        if data is not None and marker not in data:
            raise StartupError(f"{setting}: {getattr(settings, setting)} is not PEM ({marker!r})")
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def server_options(settings: Settings) -> list[tuple[str, int]]:
    """The grpc channel arguments for the configured limits; 0 turns an age limit off."""
    options = [
        ("grpc.max_receive_message_length", settings.max_receive_message_size),
        ("grpc.max_send_message_length", settings.max_send_message_size),
        ("grpc.keepalive_time_ms", _ms(settings.keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(settings.keepalive_timeout)),
    ]
    if settings.max_connection_age:
        options.append(("grpc.max_connection_age_ms", _ms(settings.max_connection_age)))
    if settings.max_connection_age_grace:
        options.append(("grpc.max_connection_age_grace_ms", _ms(settings.max_connection_age_grace)))
    return options


def _ms(duration: timedelta) -> int:
    # grpc keeps these in a signed 32-bit int of milliseconds (about 24 days).
    return min(int(duration.total_seconds() * 1000), 2**31 - 1)


def _interceptors(
    settings: Settings, admission: AdmissionInterceptor, tracing: Tracing | None
) -> list[MethodInterceptor]:
    # Outermost first: the span sees the status the caller sees; errors map whatever the
    # inner ones raise; auth runs before anything else looks at the request.
    chain: list[MethodInterceptor] = [] if tracing is None else [tracing.interceptor()]
    chain += [LoggingInterceptor(), ErrorInterceptor()]
    if settings.api_keys:
        chain.append(AuthInterceptor(KeyRing(settings.api_keys)))
    else:
        log.warning("no [[api_keys]] configured: the server runs open, anyone may call it")
    chain += [admission, SubscriberLimitInterceptor(settings.max_subscribers)]
    chain.append(ValidationInterceptor())
    return chain


@dataclass
class JourneyServer:
    """A running Journey: the gRPC server and everything it owns."""

    grpc_server: grpc.aio.Server
    database: Database
    writer: Writer
    broker: Broker
    sweeper: Sweeper
    health: health_aio.HealthServicer
    admission: AdmissionInterceptor
    tracing: Tracing | None = None
    stopped: bool = False

    async def stop(self, grace: float | None) -> None:
        """Stop in order: refuse new calls, end streams, finish running calls, then storage."""
        if self.stopped:
            return
        self.stopped = True
        self.admission.close()
        await self.health.enter_graceful_shutdown()
        self.broker.close()
        # Running calls finish while the server still answers newcomers UNAVAILABLE; only
        # then does it stop, when hardly anything is left to cut off as CANCELLED.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.admission.drained()
        await self.grpc_server.stop(0)
        await self.sweeper.stop()
        await self.writer.close()
        await self.database.close()
        if self.tracing is not None:
            # Last: the spans of everything above are exported.
            await self.tracing.shutdown()


async def create_server(
    settings: Settings,
    *,
    clock: Clock | None = None,
    tracer_provider: trace.TracerProvider | None = None,
) -> tuple[JourneyServer, int]:
    """Open the database, bind `settings.listen`, start serving; returns the server and its port.

    `tracer_provider` (tests) is used instead of the global OpenTelemetry one with tracing on.
    """
    clock = clock or SystemClock()
    policy = settings.policy()
    credentials = server_credentials(settings)
    tracing = start_tracing(settings, tracer_provider)
    try:
        return await _create(settings, clock, policy, credentials, tracing)
    except BaseException:
        if tracing is not None:
            await tracing.shutdown()
        raise


async def _create(
    settings: Settings,
    clock: Clock,
    policy: Policy,
    credentials: grpc.ServerCredentials | None,
    tracing: Tracing | None,
) -> tuple[JourneyServer, int]:
    try:
        database = await open_database(
            settings.database_url, sqlite_synchronous=settings.sqlite_synchronous
        )
    except (OSError, SQLAlchemyError) as error:
        where = settings.describe()["database_url"]
        raise StartupError(f"cannot open the database {where}: {error}") from error
    broker = Broker()
    writer = Writer(database, broker.publish, encode)
    queries = Queries(database)
    try:
        try:
            await fill_encoded(database, encode)
            await writer.start()
        except FAILURES as error:
            raise StartupError(f"cannot read the database: {error!r}") from error
        broker.head = writer.last_position
        journal = Journal(
            writer, queries, policy, {s.id: s.enabled for s in settings.sources}, clock
        )
        follow = Follow(
            broker, queries, clock, settings.heartbeat_interval, settings.live_buffer_size
        )
        admission = AdmissionInterceptor()
        server = grpc.aio.server(
            interceptors=_interceptors(settings, admission, tracing),
            options=server_options(settings),
        )
        pb.add_TrackerServiceServicer_to_server(TrackerServicer(journal), server)
        add_system_event_service(SystemEventServicer(journal, follow), server)
        pb.add_SessionServiceServicer_to_server(SessionServicer(journal), server)
        pb.add_SettingsServiceServicer_to_server(SettingsServicer(settings), server)
        health_servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)
        try:
            if credentials is None:
                port = server.add_insecure_port(settings.listen)
            else:
                port = server.add_secure_port(settings.listen, credentials)
        except RuntimeError as error:
            raise StartupError(
                f"cannot listen on {settings.listen}: the address is taken or not this host's"
            ) from error
        await server.start()
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        sweeper = Sweeper(
            journal, queries, policy, clock, tracing.sweep if tracing is not None else None
        )
        sweeper.start()
    except BaseException:
        await writer.close()
        await database.close()
        raise
    return JourneyServer(
        server, database, writer, broker, sweeper, health_servicer, admission, tracing
    ), port
