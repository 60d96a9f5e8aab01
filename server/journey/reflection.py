"""Server reflection that serves the .proto comments and answers every kind of symbol."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

import grpc
from google.protobuf import descriptor, descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from journey_client import pb


class CommentedReflection(reflection.aio.ReflectionServicer):  # type: ignore[misc,name-defined]
    """grpcio-reflection's servicer, answering our files with their source info kept.

    grpcio-reflection rebuilds each file with `CopyToProto`, which drops source_code_info;
    the descriptor set made by scripts/generate_protos.py still has it. It also finds only
    the symbols that the descriptor pool finds (not methods, nor `pkg.Enum.VALUE`: grpc/grpc
    issue 34743), so symbols are looked up in an index of every element of the served files.
    """

    def __init__(self, service_names: Iterable[str], commented: Mapping[str, bytes]) -> None:
        names = tuple(service_names)
        super().__init__(names)
        self._commented = commented
        self._files_by_symbol = symbol_index(served_files(descriptor_pool.Default(), names))

    def _file_containing_symbol(
        self, request: reflection_pb2.ServerReflectionRequest, fully_qualified_name: str
    ) -> reflection_pb2.ServerReflectionResponse:
        file_name = self._files_by_symbol.get(fully_qualified_name.lstrip("."))
        if file_name is None:
            # Whatever else the pool knows; NOT_FOUND for the rest.
            response: reflection_pb2.ServerReflectionResponse = super()._file_containing_symbol(
                request, fully_qualified_name
            )
            return response
        found: reflection_pb2.ServerReflectionResponse = self._file_by_filename(request, file_name)
        return found

    async def ServerReflectionInfo(
        self,
        request_iterator: AsyncIterable[reflection_pb2.ServerReflectionRequest],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        """Answer as grpcio-reflection does, with our files swapped for the commented ones."""
        async for response in super().ServerReflectionInfo(request_iterator, context):
            files = response.file_descriptor_response.file_descriptor_proto
            for i, data in enumerate(files):
                name = descriptor_pb2.FileDescriptorProto.FromString(data).name
                if name in self._commented:
                    files[i] = self._commented[name]
            yield response


def served_files(
    pool: descriptor_pool.DescriptorPool, service_names: Iterable[str]
) -> list[descriptor.FileDescriptor]:
    """The files that define these services, and every file they import, transitively."""
    found: dict[str, descriptor.FileDescriptor] = {}
    pending = [pool.FindFileContainingSymbol(name) for name in service_names]
    while pending:
        file = pending.pop()
        if file.name not in found:
            found[file.name] = file
            pending.extend(file.dependencies)
    return list(found.values())


def symbol_index(files: Iterable[descriptor.FileDescriptor]) -> dict[str, str]:
    """Every symbol these files define -> the file's name.

    Symbols: services, methods, messages (nested too), fields, oneofs, extensions, enums and
    enum values. An enum value goes under `pkg.Enum.VALUE`, as grpcurl asks for it, and under
    `pkg.VALUE` too: protobuf scopes values beside their enum, and grpc-go's clients ask so.
    """
    return {symbol: file.name for file in files for symbol in _symbols(file)}


def _symbols(file: descriptor.FileDescriptor) -> Iterator[str]:
    for service in file.services_by_name.values():
        yield service.full_name
        for method in service.methods:
            yield method.full_name
    for message in file.message_types_by_name.values():
        yield from _message_symbols(message)
    for enum in file.enum_types_by_name.values():
        yield from _enum_symbols(enum, file.package)
    for extension in file.extensions_by_name.values():
        yield extension.full_name


def _message_symbols(message: descriptor.Descriptor) -> Iterator[str]:
    yield message.full_name
    for field in (*message.fields, *message.extensions):
        yield field.full_name
    for oneof in message.oneofs:
        yield oneof.full_name
    for nested in message.nested_types:
        yield from _message_symbols(nested)
    for enum in message.enum_types:
        yield from _enum_symbols(enum, message.full_name)


def _enum_symbols(enum: descriptor.EnumDescriptor, scope: str) -> Iterator[str]:
    yield enum.full_name
    for value in enum.values:
        yield f"{enum.full_name}.{value.name}"
        yield f"{scope}.{value.name}" if scope else value.name


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection for these services (and reflection itself) on `server`."""
    names = (*service_names, reflection.SERVICE_NAME)
    servicer = CommentedReflection(names, pb.commented_descriptors())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
