"""A bug inside a handler answers INTERNAL with a plain message, and the server keeps serving."""

from __future__ import annotations

import grpc
import pytest

from journey.storage.queries import Queries
from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import serving


async def test_an_unexpected_exception_becomes_internal_without_details(
    make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: Queries, session_id: str) -> None:
        raise RuntimeError("secret internals")

    async with serving(make_settings()) as h:
        await h.track("page-view", session_id="s")
        monkeypatch.setattr(Queries, "session", broken)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await h.sessions.GetSession(pb.GetSessionRequest(session_id="s"))
        assert raised.value.code() == grpc.StatusCode.INTERNAL
        assert raised.value.details() == "internal error"
        monkeypatch.undo()
        session = await h.sessions.GetSession(pb.GetSessionRequest(session_id="s"))
        assert session.session.id == "s"
