"""API keys: which role each method needs, and checking a presented key against the digests."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from journey.config import ApiKey
from journey.domain.errors import PermissionDenied, Unauthenticated

# The role each journey.v1 method needs besides `admin`; a method not listed needs `admin`.
METHOD_ROLES = {
    "/journey.v1.TrackerService/Track": "tracker",
    "/journey.v1.SessionService/EndSession": "tracker",
    "/journey.v1.SystemEventService/Subscribe": "subscriber",
    "/journey.v1.SystemEventService/ListSystemEvents": "subscriber",
    "/journey.v1.SessionService/GetSession": "subscriber",
    "/journey.v1.SessionService/GetProfile": "subscriber",
    # Creating, deleting and redriving a consumer group need `admin` (not listed).
    "/journey.v1.ConsumerGroupService/Consume": "subscriber",
    "/journey.v1.ConsumerGroupService/GetConsumerGroup": "subscriber",
    "/journey.v1.ConsumerGroupService/ListConsumerGroups": "subscriber",
    "/journey.v1.ConsumerGroupService/ListDeadLetters": "subscriber",
}
ADMIN = "admin"
_SCHEME = "bearer "


def digest(key: str) -> str:
    """The SHA-256 hex digest of a key's text, as `[[api_keys]] sha256` holds it."""
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    """The configured keys; answers whether an `authorization` value may call a method."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = tuple(keys)

    def check(self, method: str, authorization: str | None) -> None:
        """Return if allowed; raise Unauthenticated or PermissionDenied otherwise."""
        if not authorization or not authorization.lower().startswith(_SCHEME):
            raise Unauthenticated("missing API key: send the metadata 'authorization: Bearer KEY'")
        presented = digest(authorization[len(_SCHEME) :].strip()).encode()
        roles: frozenset[str] | None = None
        # Every digest is compared, in constant time, so timing tells nothing about a near miss.
        for key in self._keys:
            if hmac.compare_digest(presented, key.sha256.encode()):
                roles = key.roles
        if roles is None:
            raise Unauthenticated("unknown API key")
        needed = METHOD_ROLES.get(method, ADMIN)
        if needed not in roles and ADMIN not in roles:
            raise PermissionDenied(f"this API key lacks the role {needed!r} for {method}")
