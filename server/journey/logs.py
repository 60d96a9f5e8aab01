"""Logging setup: text or one JSON object per line, with secrets masked in both."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, TextIO
from urllib.parse import unquote

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# The per-call fields that LoggingInterceptor passes as `extra`, by their JSON names.
CALL_FIELDS = ("method", "code", "duration_ms", "trace_id")
MASK = "***"

# A bearer token wherever it shows (metadata printed by a library, an echoed header): the
# server knows only the keys' digests, so a key, valid or not, is known by its place alone.
_BEARER = re.compile(r"(?i)(bearer)(\s+|%20|\+)[^\s'\",;)\]}]+")
# A bare key (no scheme) after its header's name: `('authorization', 'KEY')`, grpc's
# `_Metadatum(key='authorization', value='KEY')`, `authorization: KEY`.
_AUTHORIZATION = re.compile(
    r"(?i)(authorization['\"]?\s*[:=,]\s*(?:value\s*=\s*)?+['\"]?+)(?!bearer\b)"
    r"[^\s'\",;)\]}]+"
)
# `scheme://user:password@`: a database URL that some error text spells out. Up to the last
# `@` of the word, as an unescaped `@` in a password must not leak the password's tail.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][\w+.-]*://[^:/?#@\s]*):[^\s'\"]*@")
_QUERY_PASSWORD = re.compile(r"(?i)(?P<name>[?&]password=)[^&#\s'\"]*")


class Redactor:
    """Masks bearer tokens, URL passwords and the configured secrets in a log text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """The text with every secret replaced by ***."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        text = _BEARER.sub(rf"\1\2{MASK}", text)
        text = _AUTHORIZATION.sub(rf"\1{MASK}", text)
        text = _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", text)
        return _QUERY_PASSWORD.sub(rf"\g<name>{MASK}", text)


def database_secrets(url: str) -> list[str]:
    """The password of a database URL, as written and as decoded, to mask wherever it shows."""
    try:
        password = make_url(url).password
    except (ArgumentError, ValueError):
        return []
    if not password:
        return []
    text = str(password)
    # make_url decodes %XX; a text that echoes the URL as written shows the encoded form.
    return [text, *(form for form in (unquote(text), _encoded_in(url, text)) if form)]


def _encoded_in(url: str, password: str) -> str:
    """The password as it is spelled in the URL (percent-encoded, perhaps), if found there."""
    found = re.search(r"://[^:/?#@]*:(?P<password>.*)@", url)
    return found["password"] if found and unquote(found["password"]) == password else ""


class TextFormatter(logging.Formatter):
    """The classic `time LEVEL logger: message` line, secrets masked."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        """Format as usual, then mask."""
        return self._redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, logger, message, call fields.

    A call's duration is `duration_ms`, in milliseconds; an exception is a field of its own,
    with its traceback, rather than more lines.
    """

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        when = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": self._redact(record.getMessage()),
        }
        for name in CALL_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = self._redact(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = self._redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exception"] = self._redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = self._redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(
    level: str, log_format: str, secrets: Iterable[str] = (), stream: TextIO | None = None
) -> Redactor:
    """Send every logger's records to stderr in `log_format`; returns the redactor it uses."""
    redact = Redactor(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if log_format == "json" else TextFormatter(redact))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return redact
