"""Page tokens: opaque, and bound to the query they continue (AIP-158)."""

from __future__ import annotations

import base64
import binascii
import hashlib

from google.protobuf.message import Message

from journey.domain.errors import FieldViolation, InvalidArgument
from journey_client import pb


def _fingerprint(request: Message) -> str:
    query = type(request)()
    query.CopyFrom(request)
    query.ClearField("page_size")
    query.ClearField("page_token")
    return hashlib.sha256(query.SerializeToString(deterministic=True)).hexdigest()[:16]


def encode(request: pb.ListSystemEventsRequest, after: int) -> str:
    """A token that continues `request` after position `after`."""
    raw = f"{after}:{_fingerprint(request)}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(request: pb.ListSystemEventsRequest) -> int:
    """The position `request.page_token` continues after (0 without a token)."""
    token = request.page_token
    if not token:
        return 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        position, fingerprint = raw.split(":")
        after = int(position)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _invalid("is not a token this server issued") from None
    if after < 0 or fingerprint != _fingerprint(request):
        raise _invalid("belongs to a different query (filter or times changed)")
    return after


def _invalid(why: str) -> InvalidArgument:
    return InvalidArgument([FieldViolation("page_token", why)])


def encode_after(request: Message, after: str) -> str:
    """A token that continues `request` (which has page_size and page_token) after `after`."""
    raw = f"{_fingerprint(request)}:{after}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_after(request: Message) -> str:
    """What `request.page_token` continues after ("" without a token)."""
    token: str = getattr(request, "page_token")  # noqa: B009  # every paged request has one
    if not token:
        return ""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        fingerprint, after = raw.split(":", 1)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _invalid("is not a token this server issued") from None
    if fingerprint != _fingerprint(request):
        raise _invalid("belongs to a different query")
    return after
