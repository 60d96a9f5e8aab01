"""The log formats, the masking of secrets, and the trace id read from `traceparent`."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from journey.api.traceparent import trace_id
from journey.logs import Redactor, configure_logging, database_secrets

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@pytest.fixture
def restore_root() -> Iterator[None]:
    """configure_logging replaces the root's handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def emit(log_format: str, secrets: list[str], *args: object, **kwargs: object) -> str:
    """Log one record through configure_logging's handler; what it wrote."""
    out = io.StringIO()
    configure_logging("DEBUG", log_format, secrets, stream=out)
    logging.getLogger("journey.test").info(*args, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


@pytest.mark.usefixtures("restore_root")
def test_json_is_one_object_per_line_with_the_call_fields() -> None:
    fields = {"method": "/journey.v1.TrackerService/Track", "code": "OK", "duration_ms": 1.5}
    text = emit("json", [], "%s done\nsecond line", "call", extra={**fields, "trace_id": TRACE})
    assert text.count("\n") == 1
    entry = json.loads(text)
    assert entry["message"] == "call done\nsecond line"
    assert (entry["level"], entry["logger"]) == ("INFO", "journey.test")
    assert {k: entry[k] for k in (*fields, "trace_id")} == {**fields, "trace_id": TRACE}
    when = datetime.fromisoformat(entry["time"])
    assert entry["time"].endswith("Z")
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60


@pytest.mark.usefixtures("restore_root")
def test_json_has_the_exception_as_a_field_and_no_absent_call_fields() -> None:
    try:
        raise RuntimeError("boom at postgresql://u:s3cret@db/x")
    except RuntimeError:
        text = emit("json", [], "failed", exc_info=True)
    entry = json.loads(text)
    assert "Traceback" in entry["exception"]
    assert "RuntimeError: boom" in entry["exception"]
    assert "s3cret" not in text
    assert not {"method", "code", "duration_ms", "trace_id"} & set(entry)


@pytest.mark.usefixtures("restore_root")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_both_formats_mask_keys_and_passwords(log_format: str) -> None:
    secret = 'pa"ss\\word'  # JSON escapes it: masked before encoding
    text = emit(
        log_format,
        [secret],
        "metadata %s, url %s, raw %s",
        (("authorization", "Bearer key-one"), ("authorization", "key-two")),
        "postgresql+asyncpg://journey:other@db/journey?password=third",
        secret,
    )
    for leaked in ("key-one", "key-two", "other", "third", "ss\\word", 'pa\\"ss'):
        assert leaked not in text
    assert text.count("***") == 5


def test_redactor_masks_each_spelling_of_a_key() -> None:
    redact = Redactor()
    cases = {
        "authorization: Bearer abc.def-ghi": "authorization: Bearer ***",
        "bearer%20abc": "bearer%20***",
        "_Metadatum(key='authorization', value='raw')": (
            "_Metadatum(key='authorization', value='***')"
        ),
        "_Metadatum(key='authorization', value='Bearer tok')": (
            "_Metadatum(key='authorization', value='Bearer ***')"
        ),
        '{"authorization": "raw"}': '{"authorization": "***"}',
        "https://sqlalche.me/e/21/dbapi": "https://sqlalche.me/e/21/dbapi",
        "postgresql://u:p@ss@db/x": "postgresql://u:***@db/x",
    }
    assert {text: redact(text) for text in cases} == cases


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        ("postgresql+asyncpg://u:s3cret@db/x", ["s3cret"]),
        ("postgresql+asyncpg://u:a%40b%3A@db/x", ["a@b:", "a%40b%3A"]),
        ("postgresql+asyncpg://u@db/x", []),
        ("sqlite+aiosqlite:///journey.db", []),
        ("not a url", []),
    ],
)
def test_database_secrets_are_the_password_in_each_spelling(url: str, secrets: list[str]) -> None:
    assert set(database_secrets(url)) == set(secrets)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"00-{TRACE}-{PARENT}-01", TRACE),
        (f" 00-{TRACE}-{PARENT}-00 ", TRACE),
        (f"01-{TRACE}-{PARENT}-01-future", TRACE),
        (f"00-{TRACE}-{PARENT}-01-extra", None),
        (f"ff-{TRACE}-{PARENT}-01", None),
        (f"00-{'0' * 32}-{PARENT}-01", None),
        (f"00-{TRACE}-{'0' * 16}-01", None),
        (f"00-{TRACE.upper()}-{PARENT}-01", None),
        (f"00-{TRACE[:-1]}-{PARENT}-01", None),
        ("garbage", None),
    ],
)
def test_trace_id_from_traceparent(value: str, expected: str | None) -> None:
    assert trace_id([("traceparent", value)]) == expected


def test_trace_id_needs_exactly_one_traceparent() -> None:
    header = ("traceparent", f"00-{TRACE}-{PARENT}-01")
    assert trace_id(None) is None
    assert trace_id([("tracestate", "a=b")]) is None
    assert trace_id([header, header]) is None
    assert trace_id([("traceparent", b"bytes")]) is None
    assert trace_id([("x", "y"), header]) == TRACE
