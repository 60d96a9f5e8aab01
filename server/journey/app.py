"""The server factory: wires storage, streaming and the API together; start and graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.exc import SQLAlchemyError

from journey.api.encoding import add_consumer_group_service, add_system_event_service, encode
from journey.api.group_servicer import ConsumerGroupServicer
from journey.api.interceptors import (
    AdmissionInterceptor,
    AuthInterceptor,
    ErrorInterceptor,
    LoggingInterceptor,
    MethodInterceptor,
    MetricsInterceptor,
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
from journey.groups import ConsumerGroups
from journey.journal import Journal
from journey.observability.metrics import (
    BIDI_STREAM,
    SERVER_STREAM,
    UNARY,
    Metrics,
    MetricsServer,
    Streams,
)
from journey.reflection import enable_reflection
from journey.storage.database import Database, open_database
from journey.storage.failures import FAILURES
from journey.storage.listen import listener
from journey.storage.migrate import MigrationError, SchemaTooNew
from journey.storage.queries import Queries
from journey.storage.sqlite_lock import DatabaseInUse, SqliteLock, lock_for
from journey.storage.writer import Writer
from journey.streaming.broker import Broker
from journey.streaming.feed import Feed
from journey.streaming.follow import Follow
from journey.sweeper import Sweeper
from journey_client import pb

if TYPE_CHECKING:
    from opentelemetry import trace

    from journey.observability.tracing import Tracing

log = logging.getLogger(__name__)

# What grpc's own stop allows after the drain. A call whose handler has just returned may still
# be sending its answer, and a call that reached grpc in the meantime (clients keep calling a
# stopping replica) is still to be refused by the admission check, UNAVAILABLE. stop(0) cut
# either off as CANCELLED, which a client cannot tell from a call that failed (seen once in CI:
# a Track answered CANCELLED while one of two replicas restarted). It returns as soon as those
# are done; only a handler still running after shutdown_grace waits it out.
FINISH_SECONDS = 1.0

SERVICE_NAMES = tuple(
    module.DESCRIPTOR.services_by_name[name].full_name
    for module, name in (
        (pb.tracker_service_pb2, "TrackerService"),
        (pb.system_event_service_pb2, "SystemEventService"),
        (pb.session_service_pb2, "SessionService"),
        (pb.settings_service_pb2, "SettingsService"),
        (pb.consumer_group_service_pb2, "ConsumerGroupService"),
    )
)


class StartupError(Exception):
    """The server cannot start: bad TLS files, the database cannot be opened, the address taken.

    `exit_code` is what `journey serve` exits with: 2 when another process or a newer Journey
    owns what this one needs (the address, the SQLite file, the schema), else 1.
    """

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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


def server_options(settings: Settings, *, reuse_port: bool = False) -> list[tuple[str, int]]:
    """The grpc channel arguments for the configured limits; 0 turns an age limit off.

    grpc binds with SO_REUSEPORT by default on Linux, so a second server on a taken address
    would start and share its clients with the first. Only the workers of one
    `journey serve --workers` share a port (`reuse_port`).
    """
    options = [
        ("grpc.so_reuseport", int(reuse_port)),
        ("grpc.max_receive_message_length", settings.max_receive_message_size),
        ("grpc.max_send_message_length", settings.max_send_message_size),
        ("grpc.keepalive_time_ms", _ms(settings.keepalive_time)),
        ("grpc.keepalive_timeout_ms", _ms(settings.keepalive_timeout)),
        # A server counts a ping that comes sooner than min_ping_interval_without_data after
        # the last (GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, despite the string),
        # or any ping on a connection with no call unless it permits pings without calls, as
        # a strike; past grpc.http2.max_ping_strikes (2, kept) strikes with no data sent in
        # between, it sends GOAWAY "too_many_pings". A tenth of slack, so that a client pinging
        # at exactly the interval is never struck for its timer's or its clock's jitter.
        ("grpc.keepalive_permit_without_calls", 1),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            _ms(settings.keepalive_min_ping_interval * 0.9),
        ),
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
    settings: Settings,
    admission: AdmissionInterceptor,
    metrics: Metrics | None,
    tracing: Tracing | None,
) -> list[MethodInterceptor]:
    # Outermost first: the span and the metrics see the status the caller sees; errors map
    # whatever the inner ones raise; auth runs before anything else looks at the request.
    chain: list[MethodInterceptor] = [] if tracing is None else [tracing.interceptor()]
    if metrics is not None:
        chain.append(MetricsInterceptor(metrics.rpc))
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
    feed: Feed
    groups: ConsumerGroups
    # The /metrics server, when metrics_listen is set; its port is `metrics_port`.
    metrics_server: MetricsServer | None = None
    # SQLite: held while serving, so that no second process opens the file.
    lock: SqliteLock | None = None
    tracing: Tracing | None = None
    stopped: bool = False

    @property
    def metrics_port(self) -> int | None:
        """The port /metrics is served on, or None when metrics are off."""
        return None if self.metrics_server is None else self.metrics_server.port

    async def stop(self, grace: float | None) -> None:
        """Stop in order: refuse new calls, end streams, finish running calls, then storage."""
        if self.stopped:
            return
        self.stopped = True
        self.admission.close()
        await self.health.enter_graceful_shutdown()
        self.broker.close()
        # Consume streams end UNAVAILABLE, giving back their work, before the writer closes.
        self.groups.close()
        # Running calls finish while the server still answers newcomers UNAVAILABLE; only
        # then does it stop, when hardly anything is left to cut off as CANCELLED.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.admission.drained()
        # Not stop(0): see FINISH_SECONDS.
        await self.grpc_server.stop(FINISH_SECONDS)
        await self.groups.stop()
        await self.sweeper.stop()
        await self.feed.stop()
        await self.writer.close()
        await self.database.close()
        if self.lock is not None:
            self.lock.release()
        # Last: a scrape during shutdown still answers.
        if self.metrics_server is not None:
            await self.metrics_server.close()

        if self.tracing is not None:
            # Last: the spans of everything above are exported.
            await self.tracing.shutdown()


def _register_methods(metrics: Metrics) -> None:
    """Give every Journey method its series at zero, as go-grpc-prometheus does at start."""
    for name in SERVICE_NAMES:
        service = pb.tracker_service_pb2.DESCRIPTOR.pool.FindServiceByName(name)
        for method in service.methods:
            if method.client_streaming:
                grpc_type = BIDI_STREAM
            else:
                grpc_type = SERVER_STREAM if method.server_streaming else UNARY
            metrics.rpc.method(grpc_type, f"/{name}/{method.name}")


def _serve_metrics(settings: Settings, metrics: Metrics) -> MetricsServer:
    try:
        server = MetricsServer(metrics, settings.metrics_listen)
    except OSError as error:
        raise StartupError(
            f"metrics_listen: cannot listen on {settings.metrics_listen}: {error.strerror or error}"
        ) from error
    log.info("metrics on http://%s:%d/metrics", server.host, server.port)
    return server


def hold_database(settings: Settings) -> SqliteLock | None:
    """On SQLite, lock the file for this process (StartupError, exit 2, if another has it)."""
    try:
        lock = lock_for(settings.database_url)
    except ValueError as error:  # a URL that does not parse, such as a port that is no number
        where = settings.describe()["database_url"]
        raise StartupError(f"cannot open the database {where}: {error}") from None
    if lock is not None:
        try:
            lock.acquire()
        except DatabaseInUse as error:
            raise StartupError(str(error), exit_code=2) from None
        except OSError as error:
            raise StartupError(f"cannot lock {lock.path}: {error.strerror or error}") from None
    return lock


async def open_migrated(settings: Settings) -> Database:
    """Open the database and apply pending migrations (StartupError if that cannot be done)."""
    where = settings.describe()["database_url"]
    try:
        return await open_database(
            settings.database_url, sqlite_synchronous=settings.sqlite_synchronous, encode=encode
        )
    except SchemaTooNew as error:
        raise StartupError(f"{where}: {error}", exit_code=2) from None
    except MigrationError as error:
        raise StartupError(f"cannot migrate the database {where}: {error}") from None
    # ValueError, TypeError: a URL that parses but that the driver refuses (a port that is no
    # number, an unknown query option).
    except (OSError, SQLAlchemyError, ValueError, TypeError) as error:
        raise StartupError(f"cannot open the database {where}: {error}") from error


def _listen_failure(address: str) -> StartupError:
    """Why grpc could not bind `address`: grpc's own error does not say, a plain bind does."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        infos = []
    for family, kind, proto, _name, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return StartupError(
                        f"cannot listen on {address}: address in use (another process listens "
                        "there)",
                        exit_code=2,
                    )
    return StartupError(f"cannot listen on {address}: the address is taken or not this host's")


async def create_server(
    settings: Settings,
    *,
    clock: Clock | None = None,
    reuse_port: bool = False,
    tracer_provider: trace.TracerProvider | None = None,
) -> tuple[JourneyServer, int]:
    """Open the database, bind `settings.listen`, start serving; returns the server and its port.

    `reuse_port` lets this server share its port with the other workers of one
    `journey serve --workers`; otherwise a taken address fails with "address in use".
    `tracer_provider` (tests) is used instead of the global OpenTelemetry one with tracing on.
    """
    clock = clock or SystemClock()
    policy = settings.policy()
    credentials = server_credentials(settings)
    tracing = start_tracing(settings, tracer_provider)
    try:
        return await _create(settings, clock, policy, credentials, tracing, reuse_port)
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
    reuse_port: bool,
) -> tuple[JourneyServer, int]:
    lock = hold_database(settings)
    try:
        database = await open_migrated(settings)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    broker = Broker()
    # Off (None) unless metrics_listen is set: then nothing on the hot paths counts.
    metrics = Metrics([s.id for s in settings.sources]) if settings.metrics_listen else None
    queries = Queries(database, metrics.storage_failed if metrics else None)
    # Other processes' commits reach the broker through the feed too (PostgreSQL).
    feed = Feed(broker, queries, listener(database))
    writer = Writer(
        database,
        feed.committed,
        encode,
        on_stats=metrics.committed if metrics else None,
        on_failure=metrics.storage_failed if metrics else None,
    )
    metrics_server: MetricsServer | None = None
    groups: ConsumerGroups | None = None
    try:
        try:
            await writer.start()
        except FAILURES as error:
            raise StartupError(f"cannot read the database: {error!r}") from error
        broker.head = writer.last_position
        feed.start()
        groups = ConsumerGroups(database, writer, broker, clock)
        await groups.start()
        journal = Journal(
            writer, queries, policy, {s.id: s.enabled for s in settings.sources}, clock
        )
        follow = Follow(
            broker, queries, clock, settings.heartbeat_interval, settings.live_buffer_size
        )
        if metrics is not None:
            metrics.watch(Streams(head=lambda: broker.head, cursors=follow.positions))
            loop = asyncio.get_running_loop()
            metrics.watch_groups(lambda: groups.states_from_thread(loop))
            _register_methods(metrics)
            metrics_server = _serve_metrics(settings, metrics)
        admission = AdmissionInterceptor()
        server = grpc.aio.server(
            interceptors=_interceptors(settings, admission, metrics, tracing),
            options=server_options(settings, reuse_port=reuse_port),
        )
        pb.add_TrackerServiceServicer_to_server(TrackerServicer(journal), server)
        add_system_event_service(SystemEventServicer(journal, follow), server)
        pb.add_SessionServiceServicer_to_server(SessionServicer(journal), server)
        pb.add_SettingsServiceServicer_to_server(SettingsServicer(settings), server)
        add_consumer_group_service(ConsumerGroupServicer(groups), server)
        health_servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)
        try:
            if credentials is None:
                port = server.add_insecure_port(settings.listen)
            else:
                port = server.add_secure_port(settings.listen, credentials)
        except RuntimeError as error:
            raise _listen_failure(settings.listen) from error
        await server.start()
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        sweeper = Sweeper(
            journal,
            queries,
            policy,
            clock,
            metrics.expired if metrics else None,
            tracing.sweep if tracing is not None else None,
        )
        sweeper.start()
    except BaseException:
        if groups is not None:
            await groups.stop()
        await feed.stop()
        await writer.close()
        await database.close()
        if metrics_server is not None:
            await metrics_server.close()
        if lock is not None:
            lock.release()
        raise
    return JourneyServer(
        server,
        database,
        writer,
        broker,
        sweeper,
        health_servicer,
        admission,
        feed,
        groups,
        metrics_server,
        lock,
        tracing,
    ), port
