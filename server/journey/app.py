"""The server factory: wires storage, streaming and the API together; start and graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

import grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sqlalchemy.exc import SQLAlchemyError

from journey.api.interceptors import (
    AdmissionInterceptor,
    ErrorInterceptor,
    LoggingInterceptor,
    ValidationInterceptor,
)
from journey.api.servicers import (
    SessionServicer,
    SettingsServicer,
    SystemEventServicer,
    TrackerServicer,
)
from journey.clock import Clock, SystemClock
from journey.config import Settings
from journey.journal import Journal
from journey.reflection import enable_reflection
from journey.storage.database import Database, open_database
from journey.storage.queries import Queries
from journey.storage.writer import Writer
from journey.streaming.broker import Broker
from journey.streaming.follow import Follow
from journey.sweeper import Sweeper
from journey_client import pb

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
    """The server cannot start: the database cannot be opened or the address not bound."""


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


async def create_server(
    settings: Settings, *, clock: Clock | None = None
) -> tuple[JourneyServer, int]:
    """Open the database, bind `settings.listen`, start serving; returns the server and its port."""
    clock = clock or SystemClock()
    policy = settings.policy()
    try:
        database = await open_database(settings.database_url)
    except (OSError, SQLAlchemyError) as error:
        where = settings.describe()["database_url"]
        raise StartupError(f"cannot open the database {where}: {error}") from error
    broker = Broker()
    writer = Writer(database, broker.publish)
    queries = Queries(database)
    try:
        await writer.start()
        broker.head = writer.last_position
        journal = Journal(
            writer, queries, policy, {s.id: s.enabled for s in settings.sources}, clock
        )
        follow = Follow(
            broker, queries, clock, settings.heartbeat_interval, settings.live_buffer_size
        )
        admission = AdmissionInterceptor()
        server = grpc.aio.server(
            interceptors=[
                LoggingInterceptor(),
                ErrorInterceptor(),
                admission,
                ValidationInterceptor(),
            ]
        )
        pb.add_TrackerServiceServicer_to_server(TrackerServicer(journal), server)
        pb.add_SystemEventServiceServicer_to_server(SystemEventServicer(journal, follow), server)
        pb.add_SessionServiceServicer_to_server(SessionServicer(journal), server)
        pb.add_SettingsServiceServicer_to_server(SettingsServicer(settings), server)
        health_servicer = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        enable_reflection((*SERVICE_NAMES, health.SERVICE_NAME), server)
        try:
            port = server.add_insecure_port(settings.listen)
        except RuntimeError as error:
            raise StartupError(
                f"cannot listen on {settings.listen}: the address is taken or not this host's"
            ) from error
        await server.start()
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        sweeper = Sweeper(journal, queries, policy, clock)
        sweeper.start()
    except BaseException:
        await writer.close()
        await database.close()
        raise
    return JourneyServer(
        server, database, writer, broker, sweeper, health_servicer, admission
    ), port
