"""The .proto comments are the API reference: each service, RPC, message, field, value has one."""

from __future__ import annotations

from google.protobuf import descriptor_pb2

from journey_client import pb

# Paths into FileDescriptorProto (descriptor.proto field numbers), as source_code_info uses them.
MESSAGE, ENUM, SERVICE = 4, 5, 6
FIELD, NESTED_MESSAGE, NESTED_ENUM, ONEOF = 2, 3, 4, 8
ENUM_VALUE, METHOD = 2, 2


def elements(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    """Every documentable element of a file: its source path -> its full name."""
    out: dict[tuple[int, ...], str] = {}
    prefix = file.package

    def enum(path: tuple[int, ...], e: descriptor_pb2.EnumDescriptorProto, scope: str) -> None:
        out[path] = f"{scope}.{e.name}"
        for i, value in enumerate(e.value):
            out[(*path, ENUM_VALUE, i)] = f"{scope}.{e.name}.{value.name}"

    def message(path: tuple[int, ...], m: descriptor_pb2.DescriptorProto, scope: str) -> None:
        name = f"{scope}.{m.name}"
        out[path] = name
        for i, field in enumerate(m.field):
            out[(*path, FIELD, i)] = f"{name}.{field.name}"
        for i, oneof in enumerate(m.oneof_decl):
            out[(*path, ONEOF, i)] = f"{name}.{oneof.name}"
        for i, nested in enumerate(m.nested_type):
            # A map field's entry message is made by protoc: there is no source to comment.
            if not nested.options.map_entry:
                message((*path, NESTED_MESSAGE, i), nested, name)
        for i, nested_enum in enumerate(m.enum_type):
            enum((*path, NESTED_ENUM, i), nested_enum, name)

    for i, m in enumerate(file.message_type):
        message((MESSAGE, i), m, prefix)
    for i, e in enumerate(file.enum_type):
        enum((ENUM, i), e, prefix)
    for i, service in enumerate(file.service):
        out[(SERVICE, i)] = f"{prefix}.{service.name}"
        for j, method in enumerate(service.method):
            out[(SERVICE, i, METHOD, j)] = f"{prefix}.{service.name}.{method.name}"
    return out


def test_every_element_of_the_contract_has_a_comment() -> None:
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in pb.commented_descriptors().values()
    ]
    assert len(files) == 9
    checked, missing = 0, []
    for file in files:
        comments = {
            tuple(location.path): location.leading_comments.strip()
            for location in file.source_code_info.location
        }
        for path, name in elements(file).items():
            checked += 1
            if not comments.get(path):
                missing.append(name)
    assert checked > 100
    assert missing == []
