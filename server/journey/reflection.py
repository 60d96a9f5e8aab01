"""Server reflection that serves the .proto comments, so `grpcurl describe` shows the API docs."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from journey_client import pb


class CommentedReflection(reflection.aio.ReflectionServicer):  # type: ignore[misc,name-defined]
    """grpcio-reflection's servicer, answering our files with their source info kept.

    grpcio-reflection rebuilds each file with `CopyToProto`, which drops source_code_info;
    the descriptor set made by scripts/generate_protos.py still has it.
    """

    def __init__(self, service_names: Iterable[str], commented: Mapping[str, bytes]) -> None:
        super().__init__(service_names)
        self._commented = commented

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


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection for these services (and reflection itself) on `server`."""
    names = (*service_names, reflection.SERVICE_NAME)
    servicer = CommentedReflection(names, pb.commented_descriptors())
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
