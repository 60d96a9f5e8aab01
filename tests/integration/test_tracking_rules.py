"""Issue 2's Behaviour rules 1-10, idempotency and restarts, end to end through the gRPC stubs."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.protobuf.empty_pb2 import Empty
from google.protobuf.timestamp_pb2 import Timestamp

from journey_client import pb
from tests.conftest import SettingsFactory
from tests.integration.harness import Harness, serving, types_of

T = pb.SystemEventType
S = pb.SessionState
PROFILE_CREATED = T.SYSTEM_EVENT_TYPE_PROFILE_CREATED
SESSION_OPENED = T.SYSTEM_EVENT_TYPE_SESSION_OPENED
VISIT_STARTED = T.SYSTEM_EVENT_TYPE_VISIT_STARTED
VISIT_ENDED = T.SYSTEM_EVENT_TYPE_VISIT_ENDED
SESSION_CLOSED = T.SYSTEM_EVENT_TYPE_SESSION_CLOSED

SHORT = timedelta(seconds=0.5)
# Rules 4 and 6: a timeout-driven event comes within this long after its deadline.
PRECISION = 1.0
# How long a test waits for a timeout-driven event before it gives up.
PATIENCE = 5.0


# --- helpers -------------------------------------------------------------------------------


def moment(stamp: Timestamp) -> datetime:
    """An aware UTC datetime of a protobuf Timestamp."""
    return stamp.ToDatetime(tzinfo=UTC)


def props(event: pb.SystemEvent) -> dict[str, Any]:
    """The event's properties as plain Python values."""
    return json_format.MessageToDict(event.properties)


def positions(events: Sequence[pb.SystemEvent]) -> list[int]:
    """The positions of these events, in order."""
    return [e.position for e in events]


def is_uuid(text: str) -> bool:
    """Whether `text` is a UUID in its canonical form."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


async def get_session(h: Harness, session_id: str) -> pb.Session:
    """GetSession's session."""
    response = await h.sessions.GetSession(pb.GetSessionRequest(session_id=session_id))
    return response.session


async def get_profile(h: Harness, profile_id: str) -> pb.Profile:
    """GetProfile's profile."""
    response = await h.sessions.GetProfile(pb.GetProfileRequest(profile_id=profile_id))
    return response.profile


async def end_session(h: Harness, session_id: str, reason: str = "") -> pb.EndSessionResponse:
    """Call EndSession."""
    response: pb.EndSessionResponse = await h.sessions.EndSession(
        pb.EndSessionRequest(session_id=session_id, reason=reason)
    )
    return response


async def events_of_session(h: Harness, session_id: str) -> list[pb.SystemEvent]:
    """Every stored system event of one session, via a filtered ListSystemEvents."""
    page = await h.events.ListSystemEvents(
        pb.ListSystemEventsRequest(
            filter=pb.SystemEventFilter(session_id=session_id), page_size=1000
        )
    )
    assert page.next_page_token == ""
    return list(page.system_events)


@dataclass(frozen=True)
class Received:
    """A streamed system event and when the test received it."""

    event: pb.SystemEvent
    at: float  # time.monotonic()
    wall: datetime


class Feed:
    """The system events of one Subscribe stream, read one at a time with a deadline."""

    def __init__(
        self, call: grpc.aio.UnaryStreamCall[pb.SubscribeRequest, pb.SubscribeResponse]
    ) -> None:
        self.call = call
        self._messages = call.__aiter__()

    async def message(self, within: float = PATIENCE) -> pb.SubscribeResponse:
        """The next message of any kind."""
        async with asyncio.timeout(within):
            return await anext(self._messages)

    async def next_event(self, within: float = PATIENCE) -> Received:
        """The next system event, skipping checkpoints."""
        async with asyncio.timeout(within):
            while True:
                message = await anext(self._messages)
                if message.WhichOneof("content") == "event":
                    return Received(message.event, time.monotonic(), datetime.now(UTC))

    async def events_until(self, last: int, within: float = PATIENCE) -> list[Received]:
        """Events up to and including the first one of type `last`."""
        out: list[Received] = []
        async with asyncio.timeout(within):
            while not out or out[-1].event.type != last:
                out.append(await self.next_event(within))
        return out


@asynccontextmanager
async def watching(
    h: Harness, *types: int, session_id: str = "", after_position: int | None = None
) -> AsyncIterator[Feed]:
    """A live subscription (start `end`, or `after_position` when given) to matching events.

    With `end`, the first message must be `caught_up`; it is awaited here, so everything
    committed after entering the block is delivered.
    """
    event_filter = pb.SystemEventFilter(types=types, session_id=session_id)  # type: ignore[arg-type]
    if after_position is None:
        request = pb.SubscribeRequest(filter=event_filter, end=Empty())
    else:
        request = pb.SubscribeRequest(filter=event_filter, after_position=after_position)
    call = h.events.Subscribe(request)
    feed = Feed(call)
    try:
        if after_position is None:
            first = await feed.message()
            assert first.WhichOneof("content") == "caught_up"
        yield feed
    finally:
        call.cancel()


# --- rule 1: which profile a Track acts on -------------------------------------------------


async def test_rule_1_empty_profile_on_known_session_uses_the_sessions_profile(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view", profile_id="customer-1", session_id="s-1")
        before = await h.all_events()

        response = await h.track("click", profile_id="", session_id="s-1")

        assert response.profile_id == "customer-1"
        assert response.session_id == "s-1"
        assert list(response.system_events) == []
        assert await h.all_events() == before
        assert (await get_session(h, "s-1")).profile_id == "customer-1"
        profile = await get_profile(h, "customer-1")
        assert (profile.session_count, profile.visit_count) == (1, 1)


async def test_rule_1_empty_profile_on_new_session_creates_a_uuid_profile(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        response = await h.track("page-view", profile_id="", session_id="s-new")

        assert is_uuid(response.profile_id)
        created = [e for e in response.system_events if e.type == PROFILE_CREATED]
        assert len(created) == 1
        assert created[0].profile_id == response.profile_id
        profile = await get_profile(h, response.profile_id)
        assert profile.id == response.profile_id
        assert (profile.session_count, profile.visit_count) == (1, 1)
        assert (await get_session(h, "s-new")).profile_id == response.profile_id

        other = await h.track("page-view", profile_id="", session_id="s-other")
        assert is_uuid(other.profile_id)
        assert other.profile_id != response.profile_id
        assert types_of(other.system_events)[0] == PROFILE_CREATED


async def test_rule_1_unseen_profile_id_creates_exactly_that_profile(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await get_profile(h, "customer-42")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND

        response = await h.track("page-view", profile_id="customer-42")

        assert response.profile_id == "customer-42"
        assert types_of(response.system_events)[0] == PROFILE_CREATED
        assert response.system_events[0].profile_id == "customer-42"
        assert (await get_profile(h, "customer-42")).id == "customer-42"

        # Known now: a second session of the same profile does not create it again.
        again = await h.track("page-view", profile_id="customer-42")
        assert types_of(again.system_events) == [SESSION_OPENED, VISIT_STARTED]
        assert (await get_profile(h, "customer-42")).session_count == 2
        assert types_of(await h.all_events()).count(PROFILE_CREATED) == 1


# --- rule 2: opening sessions, and the order within one call -------------------------------


async def test_rule_2_unknown_session_id_opens_a_session_with_that_id(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        response = await h.track("page-view", "click", source_id="web", session_id="my-session")

        assert response.session_id == "my-session"
        opened = [e for e in response.system_events if e.type == SESSION_OPENED]
        started = [e for e in response.system_events if e.type == VISIT_STARTED]
        assert [e.session_id for e in opened + started] == ["my-session", "my-session"]
        session = await get_session(h, "my-session")
        assert session.id == "my-session"
        assert session.profile_id == response.profile_id
        assert session.source_id == "web"
        assert session.state == S.SESSION_STATE_ACTIVE
        assert (session.event_count, session.visit_count) == (2, 1)
        assert session.HasField("open_time")
        assert not session.HasField("close_time")


async def test_rule_2_empty_session_id_opens_a_session_with_a_new_uuid(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        first = await h.track("page-view", profile_id="p-1", session_id="")
        second = await h.track("page-view", profile_id="p-1", session_id="")

        assert is_uuid(first.session_id)
        assert is_uuid(second.session_id)
        assert first.session_id != second.session_id
        assert types_of(second.system_events) == [SESSION_OPENED, VISIT_STARTED]
        assert [e.session_id for e in second.system_events] == [second.session_id] * 2
        assert (await get_session(h, second.session_id)).state == S.SESSION_STATE_ACTIVE


async def test_rule_2_order_is_profile_created_session_opened_visit_started(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        response = await h.track("page-view")

        assert types_of(response.system_events) == [PROFILE_CREATED, SESSION_OPENED, VISIT_STARTED]
        numbers = positions(response.system_events)
        assert numbers[0] < numbers[1] < numbers[2]
        # The log holds them in the same order at the same positions.
        assert await h.all_events() == list(response.system_events)

        later = await h.track("page-view", profile_id=response.profile_id)
        assert types_of(later.system_events) == [SESSION_OPENED, VISIT_STARTED]
        assert numbers[2] < later.system_events[0].position < later.system_events[1].position


# --- rule 3: Track on an ACTIVE session ----------------------------------------------------


async def test_rule_3_track_on_active_session_emits_nothing_and_updates_counters(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view", session_id="s-1")
        before = await get_session(h, "s-1")
        log_before = await h.all_events()

        response = await h.track("click", "scroll", session_id="s-1")

        assert list(response.system_events) == []
        assert response.session_id == "s-1"
        assert await h.all_events() == log_before
        after = await get_session(h, "s-1")
        assert after.state == S.SESSION_STATE_ACTIVE
        assert (before.event_count, after.event_count) == (1, 3)
        assert moment(after.last_activity_time) > moment(before.last_activity_time)
        assert after.open_time == before.open_time
        assert after.visit_count == before.visit_count == 1


# --- rule 4: visit end by timeout ----------------------------------------------------------


@pytest.mark.slow
async def test_rule_4_visit_ends_on_its_own_after_visit_timeout(
    make_settings: SettingsFactory,
) -> None:
    # Longer than SHORT: the first Track, a read and the 0.2 s gap must all fit well inside the
    # timeout even on a loaded machine, or the first visit ends before the second Track lands.
    visit_timeout = timedelta(seconds=2)
    timeout = visit_timeout.total_seconds()
    settings = make_settings(visit_timeout=visit_timeout)
    async with serving(settings) as h, watching(h, VISIT_ENDED) as feed:
        first = await h.track("page-view", "click", session_id="s-1")
        opened = await get_session(h, "s-1")
        # A gap, so that the timeout provably runs from the last Track, not the first.
        await asyncio.sleep(0.2)
        sent = time.monotonic()
        await h.track("scroll", session_id="s-1")
        answered = time.monotonic()
        active = await get_session(h, "s-1")
        assert active.state == S.SESSION_STATE_ACTIVE

        received = await feed.next_event()

        ended = received.event
        assert ended.type == VISIT_ENDED
        assert (ended.session_id, ended.profile_id) == ("s-1", first.profile_id)
        # No earlier than the timeout after the last Track, and within PRECISION after it.
        assert received.at - sent >= timeout
        assert received.at - answered <= timeout + PRECISION
        last_activity = moment(active.last_activity_time)
        deadline = last_activity + visit_timeout
        assert deadline <= moment(ended.occur_time) <= deadline + timedelta(seconds=PRECISION)
        assert moment(ended.occur_time) <= received.wall

        properties = props(ended)
        assert set(properties) >= {
            "visit_start_time",
            "last_activity_time",
            "duration_seconds",
            "event_count",
        }
        visit_start = datetime.fromisoformat(properties["visit_start_time"])
        assert visit_start == moment(opened.open_time)
        assert datetime.fromisoformat(properties["last_activity_time"]) == last_activity
        assert properties["duration_seconds"] == pytest.approx(
            (last_activity - visit_start).total_seconds(), abs=1e-6
        )
        assert properties["duration_seconds"] >= 0.2
        assert properties["event_count"] == 3

        session = await get_session(h, "s-1")
        assert session.state == S.SESSION_STATE_IDLE
        assert not session.HasField("close_time")
        assert session.event_count == 3
        assert types_of(await events_of_session(h, "s-1")) == [
            SESSION_OPENED,
            VISIT_STARTED,
            VISIT_ENDED,
        ]


@pytest.mark.slow
async def test_rule_4_visit_ends_with_no_client_connected(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings(visit_timeout=SHORT)) as h:
        sent = time.monotonic()
        await h.track("page-view", session_id="s-1")
        assert h.server.broker.subscriber_count == 0

        # Poll the state, bounded; nobody is subscribed while the server ends the visit.
        deadline = sent + SHORT.total_seconds() + PRECISION + 0.5
        while (session := await get_session(h, "s-1")).state == S.SESSION_STATE_ACTIVE:
            assert time.monotonic() < deadline, "the visit did not end on time"
            await asyncio.sleep(0.05)

        assert session.state == S.SESSION_STATE_IDLE
        assert time.monotonic() - sent >= SHORT.total_seconds()
        assert types_of(await events_of_session(h, "s-1")) == [
            SESSION_OPENED,
            VISIT_STARTED,
            VISIT_ENDED,
        ]
        assert props((await events_of_session(h, "s-1"))[-1])["event_count"] == 1


# --- rule 5: Track on an IDLE session ------------------------------------------------------


@pytest.mark.slow
async def test_rule_5_track_on_idle_session_starts_a_new_visit(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings(visit_timeout=SHORT)) as h:
        async with watching(h, VISIT_ENDED, session_id="s-1") as feed:
            first = await h.track("page-view", profile_id="p-1", session_id="s-1")
            await feed.next_event()
        assert (await get_session(h, "s-1")).state == S.SESSION_STATE_IDLE
        profile_before = await get_profile(h, "p-1")

        response = await h.track("click", profile_id="", session_id="s-1")

        assert response.session_id == "s-1"
        assert response.profile_id == "p-1"
        assert types_of(response.system_events) == [VISIT_STARTED]
        started = response.system_events[0]
        assert started.session_id == "s-1"
        assert started.position > max(positions(first.system_events))
        session = await get_session(h, "s-1")
        assert session.state == S.SESSION_STATE_ACTIVE
        assert (session.visit_count, session.event_count) == (2, 2)
        profile_after = await get_profile(h, "p-1")
        assert profile_after.visit_count == profile_before.visit_count + 1 == 2
        assert profile_after.session_count == profile_before.session_count == 1


# --- rule 6: session close -----------------------------------------------------------------


@pytest.mark.slow
async def test_rule_6_session_timeout_ends_the_visit_then_closes_with_reason_timeout(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(visit_timeout=SHORT, session_timeout=SHORT)
    async with serving(settings) as h, watching(h, session_id="s-1") as feed:
        sent = time.monotonic()
        await h.track("page-view", session_id="s-1")
        answered = time.monotonic()
        last_activity = moment((await get_session(h, "s-1")).last_activity_time)

        received = await feed.events_until(SESSION_CLOSED)

        events = [r.event for r in received]
        assert types_of(events) == [SESSION_OPENED, VISIT_STARTED, VISIT_ENDED, SESSION_CLOSED]
        assert positions(events) == sorted(set(positions(events)))
        closed = received[-1]
        assert props(closed.event) == {"reason": "timeout"}
        assert closed.at - sent >= SHORT.total_seconds()
        assert closed.at - answered <= SHORT.total_seconds() + PRECISION
        deadline = last_activity + SHORT
        assert deadline <= moment(closed.event.occur_time)
        assert moment(closed.event.occur_time) <= deadline + timedelta(seconds=PRECISION)

        session = await get_session(h, "s-1")
        assert session.state == S.SESSION_STATE_CLOSED
        assert session.HasField("close_time")
        assert deadline <= moment(session.close_time) <= closed.wall


@pytest.mark.slow
async def test_rule_6_session_timeout_on_idle_session_emits_only_session_closed(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(
        visit_timeout=timedelta(seconds=0.3), session_timeout=timedelta(seconds=0.8)
    )
    async with serving(settings) as h, watching(h, session_id="s-1") as feed:
        sent = time.monotonic()
        await h.track("page-view", session_id="s-1")
        answered = time.monotonic()

        received = await feed.events_until(SESSION_CLOSED)

        assert types_of([r.event for r in received]) == [
            SESSION_OPENED,
            VISIT_STARTED,
            VISIT_ENDED,
            SESSION_CLOSED,
        ]
        # The visit ended at the visit timeout; the close, at the session timeout, did not
        # end it a second time.
        ended, closed = received[2], received[3]
        assert ended.at - sent >= 0.3
        assert closed.at - sent >= 0.8
        assert closed.at - answered <= 0.8 + PRECISION
        last_activity = moment((await get_session(h, "s-1")).last_activity_time)
        assert moment(ended.event.occur_time) >= last_activity + timedelta(seconds=0.3)
        assert moment(closed.event.occur_time) >= last_activity + timedelta(seconds=0.8)
        assert props(closed.event) == {"reason": "timeout"}
        assert types_of(await events_of_session(h, "s-1")).count(VISIT_ENDED) == 1
        assert (await get_session(h, "s-1")).state == S.SESSION_STATE_CLOSED


async def test_rule_6_end_session_default_reason_is_ended(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        opened = await h.track("page-view", "click", source_id="web", session_id="s-1")

        response = await end_session(h, "s-1")

        assert types_of(response.system_events) == [VISIT_ENDED, SESSION_CLOSED]
        ended, closed = response.system_events
        assert max(positions(opened.system_events)) < ended.position < closed.position
        assert props(closed) == {"reason": "ended"}
        assert props(ended)["event_count"] == 2
        assert [e.session_id for e in response.system_events] == ["s-1", "s-1"]
        assert response.session.state == S.SESSION_STATE_CLOSED
        assert response.session.HasField("close_time")
        stored = await get_session(h, "s-1")
        assert stored == response.session
        assert (await h.all_events())[-2:] == list(response.system_events)


async def test_rule_6_end_session_with_a_custom_reason(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view", session_id="s-1")

        response = await end_session(h, "s-1", reason="logout")

        assert types_of(response.system_events) == [VISIT_ENDED, SESSION_CLOSED]
        assert props(response.system_events[1]) == {"reason": "logout"}
        session = await get_session(h, "s-1")
        assert session.state == S.SESSION_STATE_CLOSED
        assert session.HasField("close_time")
        assert moment(session.close_time) >= moment(session.last_activity_time)


@pytest.mark.slow
async def test_rule_6_end_session_on_idle_session_emits_only_session_closed(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings(visit_timeout=SHORT)) as h:
        async with watching(h, VISIT_ENDED, session_id="s-1") as feed:
            await h.track("page-view", session_id="s-1")
            await feed.next_event()
        assert (await get_session(h, "s-1")).state == S.SESSION_STATE_IDLE

        response = await end_session(h, "s-1")

        assert types_of(response.system_events) == [SESSION_CLOSED]
        assert props(response.system_events[0]) == {"reason": "ended"}
        assert response.session.state == S.SESSION_STATE_CLOSED
        assert types_of(await events_of_session(h, "s-1")) == [
            SESSION_OPENED,
            VISIT_STARTED,
            VISIT_ENDED,
            SESSION_CLOSED,
        ]


# --- rule 7: Track naming a CLOSED session -------------------------------------------------


async def test_rule_7_track_on_closed_session_opens_a_new_session(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        first = await h.track("page-view", profile_id="p-1", session_id="s-1")
        await end_session(h, "s-1")
        closed_before = await get_session(h, "s-1")

        response = await h.track("click", session_id="s-1")

        assert response.session_id != "s-1"
        assert response.session_id != ""
        assert response.profile_id == "p-1"
        assert types_of(response.system_events) == [SESSION_OPENED, VISIT_STARTED]
        opened, started = response.system_events
        assert props(opened) == {"previous_session_id": "s-1"}
        assert (opened.session_id, started.session_id) == (response.session_id,) * 2
        assert (opened.profile_id, started.profile_id) == ("p-1", "p-1")
        assert types_of(await h.all_events()).count(PROFILE_CREATED) == 1
        assert max(positions(first.system_events)) < opened.position < started.position

        assert await get_session(h, "s-1") == closed_before
        new = await get_session(h, response.session_id)
        assert new.state == S.SESSION_STATE_ACTIVE
        assert (new.profile_id, new.event_count, new.visit_count) == ("p-1", 1, 1)
        profile = await get_profile(h, "p-1")
        assert (profile.session_count, profile.visit_count) == (2, 2)


async def test_rule_7_closed_session_with_explicit_profile_does_not_create_it_again(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view", profile_id="p-1", session_id="s-1")
        await end_session(h, "s-1", reason="logout")

        response = await h.track("page-view", profile_id="p-1", session_id="s-1")

        assert response.session_id not in ("", "s-1")
        assert types_of(response.system_events) == [SESSION_OPENED, VISIT_STARTED]
        assert props(response.system_events[0])["previous_session_id"] == "s-1"


# --- rule 8: a session of another profile --------------------------------------------------


async def test_rule_8_session_of_another_unknown_profile_fails_and_stores_nothing(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view", profile_id="owner", session_id="s-1")
        log_before = await h.all_events()
        session_before = await get_session(h, "s-1")
        owner_before = await get_profile(h, "owner")

        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await h.track("page-view", profile_id="intruder", session_id="s-1", ids=["evt-1"])

        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "s-1" in (failure.value.details() or "")
        assert await h.all_events() == log_before
        assert await get_session(h, "s-1") == session_before
        assert await get_profile(h, "owner") == owner_before
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await get_profile(h, "intruder")
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        # The tracked event was not stored either: the same client id is new to the server.
        retried = await h.track("page-view", profile_id="owner", session_id="s-1", ids=["evt-1"])
        assert list(retried.event_ids) == ["evt-1"]
        assert (await get_session(h, "s-1")).event_count == session_before.event_count + 1


async def test_rule_8_session_of_another_known_profile_fails_and_stores_nothing(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view", profile_id="alice", session_id="s-alice")
        await h.track("page-view", profile_id="bob", session_id="s-bob")
        log_before = await h.all_events()
        sessions_before = [await get_session(h, s) for s in ("s-alice", "s-bob")]
        profiles_before = [await get_profile(h, p) for p in ("alice", "bob")]

        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await h.track("click", profile_id="bob", session_id="s-alice")

        assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert await h.all_events() == log_before
        assert [await get_session(h, s) for s in ("s-alice", "s-bob")] == sessions_before
        assert [await get_profile(h, p) for p in ("alice", "bob")] == profiles_before


# --- rule 9: visit-started properties ------------------------------------------------------


async def test_rule_9_visit_started_carries_trigger_types_and_visit_number(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        first = await h.track("page-view", "add-to-cart", profile_id="p-1", session_id="s-1")
        started = [e for e in first.system_events if e.type == VISIT_STARTED]
        assert len(started) == 1
        assert props(started[0]) == {
            "trigger_event_types": ["page-view", "add-to-cart"],
            "visit_number": 1,
        }

        # A second session of the same profile is the profile's second visit.
        second = await h.track("checkout", profile_id="p-1", session_id="s-2")
        assert types_of(second.system_events) == [SESSION_OPENED, VISIT_STARTED]
        assert props(second.system_events[1]) == {
            "trigger_event_types": ["checkout"],
            "visit_number": 2,
        }

        # And a reopened (closed) session the third.
        await end_session(h, "s-1")
        third = await h.track("search", session_id="s-1")
        assert props(third.system_events[1]) == {
            "trigger_event_types": ["search"],
            "visit_number": 3,
        }
        assert (await get_profile(h, "p-1")).visit_count == 3


@pytest.mark.slow
async def test_rule_9_visit_number_counts_a_visit_after_idle(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings(visit_timeout=SHORT)) as h:
        async with watching(h, VISIT_ENDED, session_id="s-1") as feed:
            await h.track("page-view", profile_id="p-1", session_id="s-1")
            await feed.next_event()

        response = await h.track("scroll", "click", session_id="s-1")

        assert types_of(response.system_events) == [VISIT_STARTED]
        assert props(response.system_events[0]) == {
            "trigger_event_types": ["scroll", "click"],
            "visit_number": 2,
        }


# --- rule 10: source of system events ------------------------------------------------------


async def test_rule_10_system_events_carry_the_source_of_the_track_call(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        web = await h.track("page-view", source_id="web", profile_id="p-1", session_id="s-1")
        assert [e.source_id for e in web.system_events] == ["web"] * 3

        mobile = await h.track("page-view", source_id="mobile", profile_id="p-1")
        assert types_of(mobile.system_events) == [SESSION_OPENED, VISIT_STARTED]
        assert [e.source_id for e in mobile.system_events] == ["mobile"] * 2

        await end_session(h, "s-1")
        kiosk = await h.track("page-view", source_id="kiosk", session_id="s-1")
        assert types_of(kiosk.system_events) == [SESSION_OPENED, VISIT_STARTED]
        assert [e.source_id for e in kiosk.system_events] == ["kiosk"] * 2


@pytest.mark.slow
async def test_rule_10_timeout_driven_events_carry_the_sessions_source(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(visit_timeout=SHORT, session_timeout=SHORT)
    async with serving(settings) as h, watching(h, session_id="s-1") as feed:
        await h.track("page-view", source_id="web", session_id="s-1")
        later = await h.track("click", source_id="mobile", session_id="s-1")
        assert list(later.system_events) == []

        received = await feed.events_until(SESSION_CLOSED)

        events = [r.event for r in received]
        assert types_of(events) == [SESSION_OPENED, VISIT_STARTED, VISIT_ENDED, SESSION_CLOSED]
        assert [e.source_id for e in events] == ["web"] * 4
        assert (await get_session(h, "s-1")).source_id == "web"


@pytest.mark.slow
async def test_rule_10_visit_started_on_idle_session_carries_the_tracks_source(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings(visit_timeout=SHORT)) as h:
        async with watching(h, VISIT_ENDED, session_id="s-1") as feed:
            await h.track("page-view", source_id="web", session_id="s-1")
            ended = (await feed.next_event()).event
        assert ended.source_id == "web"

        response = await h.track("click", source_id="mobile", session_id="s-1")

        assert types_of(response.system_events) == [VISIT_STARTED]
        assert response.system_events[0].source_id == "mobile"


# --- idempotency ---------------------------------------------------------------------------


async def test_idempotent_retry_with_empty_session_answers_like_the_original(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        original = await h.track("page-view", "click", ids=["evt-1", "evt-2"])
        assert list(original.event_ids) == ["evt-1", "evt-2"]
        log_before = await h.all_events()
        session_before = await get_session(h, original.session_id)

        retry = await h.track("page-view", "click", ids=["evt-1", "evt-2"])

        assert list(retry.event_ids) == ["evt-1", "evt-2"]
        assert list(retry.system_events) == []
        assert (retry.profile_id, retry.session_id) == (original.profile_id, original.session_id)
        assert await h.all_events() == log_before
        assert await get_session(h, original.session_id) == session_before


async def test_idempotent_retry_naming_nothing_answers_with_the_originals_session(
    make_settings: SettingsFactory,
) -> None:
    async with serving(make_settings()) as h:
        original = await h.track("page-view", profile_id="p-1", session_id="s-1", ids=["evt-1"])
        log_before = await h.all_events()

        retry = await h.track("page-view", profile_id="", session_id="", ids=["evt-1"])

        assert list(retry.event_ids) == ["evt-1"]
        assert (retry.profile_id, retry.session_id) == ("p-1", "s-1")
        assert list(retry.system_events) == []
        assert await h.all_events() == log_before
        assert (await get_session(h, "s-1")).event_count == 1
        assert original.event_ids == retry.event_ids


async def test_idempotency_is_per_source(make_settings: SettingsFactory) -> None:
    async with serving(make_settings()) as h:
        await h.track("page-view", source_id="web", session_id="s-1", ids=["evt-1"])

        other = await h.track("page-view", source_id="mobile", session_id="s-1", ids=["evt-1"])

        assert list(other.event_ids) == ["evt-1"]
        assert (await get_session(h, "s-1")).event_count == 2


# --- persistence across a restart ----------------------------------------------------------


@pytest.mark.slow
async def test_state_and_log_survive_a_restart_and_positions_continue(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    async with serving(settings) as h:
        first = await h.track(
            "page-view", "click", profile_id="p-1", session_id="s-1", ids=["evt-1", "evt-2"]
        )
        await h.track("page-view", profile_id="p-1", session_id="s-2")
        await end_session(h, "s-2", reason="logout")
        log_before = await h.all_events()
        sessions_before = [await get_session(h, s) for s in ("s-1", "s-2")]
        profile_before = await get_profile(h, "p-1")
    assert types_of(log_before) == [
        PROFILE_CREATED,
        SESSION_OPENED,
        VISIT_STARTED,
        SESSION_OPENED,
        VISIT_STARTED,
        VISIT_ENDED,
        SESSION_CLOSED,
    ]

    async with serving(settings) as h:
        assert await h.all_events() == log_before
        assert [await get_session(h, s) for s in ("s-1", "s-2")] == sessions_before
        assert await get_profile(h, "p-1") == profile_before
        assert sessions_before[0].state == S.SESSION_STATE_ACTIVE
        assert sessions_before[1].state == S.SESSION_STATE_CLOSED

        # Stored client ids are remembered: a retry is still answered like the original.
        retry = await h.track("page-view", "click", ids=["evt-1", "evt-2"])
        assert list(retry.event_ids) == list(first.event_ids)
        assert (retry.profile_id, retry.session_id) == ("p-1", "s-1")
        assert list(retry.system_events) == []

        fresh = await h.track("page-view", profile_id="p-1", session_id="s-3")
        assert types_of(fresh.system_events) == [SESSION_OPENED, VISIT_STARTED]
        new_positions = positions(fresh.system_events)
        assert max(positions(log_before)) < new_positions[0] < new_positions[1]
        assert await h.all_events() == [*log_before, *fresh.system_events]
        profile = await get_profile(h, "p-1")
        assert (profile.session_count, profile.visit_count) == (3, 3)


@pytest.mark.slow
async def test_visit_active_before_a_restart_ends_exactly_once_after_it(
    make_settings: SettingsFactory,
) -> None:
    # The session timeout closes the session later on: a fence after which a second
    # visit-ended would already have shown up.
    settings = make_settings(visit_timeout=SHORT, session_timeout=timedelta(seconds=1.0))
    async with serving(settings) as h:
        response = await h.track("page-view", profile_id="p-1", session_id="s-1")
        answered = time.monotonic()
        last_position = max(positions(response.system_events))
        assert (await get_session(h, "s-1")).state == S.SESSION_STATE_ACTIVE
        last_activity = moment((await get_session(h, "s-1")).last_activity_time)
        assert VISIT_ENDED not in types_of(await h.all_events())

    async with serving(settings) as h:
        restarted = time.monotonic()
        async with watching(h, session_id="s-1", after_position=last_position) as feed:
            received = await feed.events_until(SESSION_CLOSED)

        assert types_of([r.event for r in received]) == [VISIT_ENDED, SESSION_CLOSED]
        ended = received[0]
        assert ended.event.position > last_position
        due = max(answered + SHORT.total_seconds(), restarted)
        assert ended.at <= due + PRECISION
        deadline = last_activity + SHORT
        assert deadline <= moment(ended.event.occur_time)
        assert moment(ended.event.occur_time) <= deadline + timedelta(seconds=PRECISION)
        assert props(ended.event)["event_count"] == 1
        assert types_of(await events_of_session(h, "s-1")) == [
            SESSION_OPENED,
            VISIT_STARTED,
            VISIT_ENDED,
            SESSION_CLOSED,
        ]
        assert (await get_session(h, "s-1")).state == S.SESSION_STATE_CLOSED
