"""Settings from a TOML file and JOURNEY_* environment variables, validated once, then immutable."""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

from journey.domain.model import SystemEventType
from journey.domain.policy import Policy

_ENV_PREFIX = "JOURNEY_"
_DURATION_HINT = "use a number of seconds or 500ms, 2s, 30m, 24h"
_DURATION_UNITS = {
    "ms": timedelta(milliseconds=1),
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
}
_DURATION_TEXT = re.compile(r"(?P<number>\d+(?:\.\d+)?|\.\d+)\s*(?P<unit>[A-Za-z]*)")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")
_SQLITE_SYNCHRONOUS = ("NORMAL", "FULL")
_SOURCE_KEYS = ("id", "enabled")
_API_KEY_KEYS = ("sha256", "roles")
# What each role may call: tracker writes, subscriber reads, admin does everything.
ROLES = ("tracker", "subscriber", "admin")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_SOURCE_ID_LENGTH = 128
_MAX_PORT = 65535
# grpc keeps message sizes in a signed 32-bit int.
_MAX_MESSAGE_SIZE = 2**31 - 1
# Greedy up to the last `@`: an unescaped `@` in a password must not leak the password's tail;
# masking a rare `@` in the path as well is the safe way to be wrong.
_URL_PASSWORD = re.compile(r"^(?P<user>[^:/?#]+://[^:/?#@]*):.*@(?P<rest>[^@]*)$", re.DOTALL)
_QUERY_PASSWORD = re.compile(r"(?P<name>[?&]password=)[^&#]*", re.IGNORECASE)


class ConfigError(Exception):
    """The configuration is unusable; the message names the key (and the variable, if one)."""


class _Invalid(ValueError):
    """A bad value; `path` locates it below its top-level key, e.g. `[1].enabled`."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


def parse_duration(value: object) -> timedelta:
    """Read a duration: seconds as a number or string (`2`, `"0.5"`) or `500ms`, `2s`, `30m`, `24h`.

    Raises ValueError, saying what is wrong, for anything else.
    """
    # bool is an int subclass, but `visit_timeout = true` is a mistake, not one second.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"bad duration {_kind(value)} ({_DURATION_HINT})")
    if isinstance(value, str):
        return _parse_duration_text(value)
    if not math.isfinite(value):
        raise ValueError(f"bad duration {value!r}: must be finite")
    if value < 0:
        raise ValueError(f"bad duration {value!r}: must not be negative")
    return _scale(_DURATION_UNITS["s"], value, value)


def _parse_duration_text(text: str) -> timedelta:
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"empty duration ({_DURATION_HINT})")
    if stripped.startswith("-"):
        raise ValueError(f"bad duration {text!r}: must not be negative")
    match = _DURATION_TEXT.fullmatch(stripped)
    if match is None:
        raise ValueError(f"bad duration {text!r} ({_DURATION_HINT})")
    unit = match["unit"] or "s"
    if unit not in _DURATION_UNITS:
        raise ValueError(f"bad duration {text!r}: unknown unit {unit!r} (use ms, s, m or h)")
    return _scale(_DURATION_UNITS[unit], float(match["number"]), text)


def _scale(unit: timedelta, number: float, original: object) -> timedelta:
    try:
        return unit * number
    except OverflowError:
        raise ValueError(f"bad duration {original!r}: too large") from None


def _format_duration(duration: timedelta) -> str:
    """The shortest of `24h`, `30m`, `5s`, `500ms` that is exact, else decimal seconds."""
    micros = duration // timedelta(microseconds=1)
    if micros == 0:
        return "0s"
    for suffix, unit in (("h", 3_600_000_000), ("m", 60_000_000), ("s", 1_000_000), ("ms", 1000)):
        if micros % unit == 0:
            return f"{micros // unit}{suffix}"
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{seconds}.{fraction:06d}".rstrip("0") + "s"


def _mask_password(url: str) -> str:
    """Replace the password of `scheme://user:password@host/...` and any `password=` with `***`."""
    masked = _URL_PASSWORD.sub(r"\g<user>:***@\g<rest>", url)
    return _QUERY_PASSWORD.sub(r"\g<name>***", masked)


def _kind(value: object) -> str:
    """Name a TOML value's type for an error message, with the value itself if it is short."""
    for python_type, name in (
        (bool, "boolean"),
        (int, "integer"),
        (float, "float"),
        (str, "string"),
    ):
        if isinstance(value, python_type):
            return f"{name} {value!r}"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


# Normalizers: check a typed value and return it in its stored form. Settings runs them in
# __post_init__, so a Settings built by hand obeys the same rules as a loaded one.


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"expected a string, got {_kind(value)}")
    return value


def _non_empty_string(value: object) -> str:
    text = _string(value)
    if not text.strip():
        raise _Invalid("must not be empty")
    return text


def _listen_address(value: object) -> str:
    address = _non_empty_string(value)
    host, colon, port = address.rpartition(":")
    if (
        not colon
        or not host
        or any(char.isspace() for char in address)
        or not (port.isascii() and port.isdigit() and int(port) <= _MAX_PORT)
    ):
        raise _Invalid(
            f"expected HOST:PORT with a port of 0..{_MAX_PORT}, "
            f"such as '127.0.0.1:50051' or '[::]:50051', got {address!r}"
        )
    # Without brackets `::1:50051` could be read as several host/port splits.
    if ":" in host and not (host.startswith("[") and host.endswith("]")):
        raise _Invalid(f"an IPv6 host needs brackets, as in '[::1]:50051', got {address!r}")
    return address


def _optional_listen_address(value: object) -> str:
    # Empty turns the feature off.
    return "" if _string(value) == "" else _listen_address(value)


def _duration_value(value: object) -> timedelta:
    if not isinstance(value, timedelta):
        raise _Invalid(f"expected a duration, got {_kind(value)}")
    return value


def _positive_duration(value: object) -> timedelta:
    duration = _duration_value(value)
    if duration <= timedelta(0):
        raise _Invalid(f"must be greater than 0, got {_format_duration(duration)}")
    return duration


def _non_negative_duration(value: object) -> timedelta:
    duration = _duration_value(value)
    if duration < timedelta(0):
        raise _Invalid(f"must not be negative, got {_format_duration(duration)}")
    return duration


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"expected an integer, got {_kind(value)}")
    if value < 1:
        raise _Invalid(f"must be at least 1, got {value}")
    return value


def _log_level(value: object) -> str:
    level = _string(value).strip().upper()
    if level not in _LOG_LEVELS:
        raise _Invalid(f"expected one of {', '.join(_LOG_LEVELS)}, got {value!r}")
    return level


def _log_format(value: object) -> str:
    text = _string(value).strip().lower()
    if text not in LOG_FORMATS:
        raise _Invalid(f"expected one of {', '.join(LOG_FORMATS)}, got {value!r}")
    return text


def _sqlite_synchronous(value: object) -> str:
    mode = _string(value).strip().upper()
    if mode not in _SQLITE_SYNCHRONOUS:
        raise _Invalid(f"expected one of {', '.join(_SQLITE_SYNCHRONOUS)}, got {value!r}")
    return mode


def _system_event_switches(value: object) -> Mapping[SystemEventType, bool]:
    if not isinstance(value, Mapping):
        raise _Invalid(f"expected a table of event type = true/false, got {_kind(value)}")
    # Every type is listed, so a type left out of the file stays on.
    switches = dict.fromkeys(SystemEventType, True)
    for event_type, enabled in value.items():
        if not isinstance(event_type, SystemEventType):
            raise _Invalid("expected a SystemEventType key", f".{event_type}")
        if not isinstance(enabled, bool):
            raise _Invalid(f"expected true or false, got {_kind(enabled)}", f".{event_type.slug}")
        switches[event_type] = enabled
    return MappingProxyType(switches)


def _source_list(value: object) -> tuple[Source, ...]:
    if not isinstance(value, list | tuple):
        raise _Invalid(f"expected an array of tables ([[sources]]), got {_kind(value)}")
    first_index: dict[str, int] = {}
    for index, source in enumerate(value):
        if not isinstance(source, Source):
            raise _Invalid(f"expected a Source, got {_kind(source)}", f"[{index}]")
        _check_source(source, index)
        if source.id in first_index:
            raise _Invalid(
                f"duplicate id {source.id!r} (also sources[{first_index[source.id]}])",
                f"[{index}].id",
            )
        first_index[source.id] = index
    return tuple(value)


def _check_source(source: Source, index: int) -> None:
    if not isinstance(source.id, str):
        raise _Invalid(f"expected a string, got {_kind(source.id)}", f"[{index}].id")
    if not source.id:
        raise _Invalid("must not be empty", f"[{index}].id")
    if len(source.id) > _MAX_SOURCE_ID_LENGTH:
        raise _Invalid(
            f"longer than {_MAX_SOURCE_ID_LENGTH} characters ({len(source.id)})", f"[{index}].id"
        )
    if not isinstance(source.enabled, bool):
        raise _Invalid(f"expected true or false, got {_kind(source.enabled)}", f"[{index}].enabled")


def _api_key_list(value: object) -> tuple[ApiKey, ...]:
    if not isinstance(value, list | tuple):
        raise _Invalid(f"expected an array of tables ([[api_keys]]), got {_kind(value)}")
    first_index: dict[str, int] = {}
    checked = []
    for index, key in enumerate(value):
        if not isinstance(key, ApiKey):
            raise _Invalid(f"expected an ApiKey, got {_kind(key)}", f"[{index}]")
        checked.append(_check_api_key(key, index))
        digest = checked[-1].sha256
        if digest in first_index:
            raise _Invalid(
                f"duplicate sha256 (also api_keys[{first_index[digest]}])", f"[{index}].sha256"
            )
        first_index[digest] = index
    return tuple(checked)


def _check_api_key(key: ApiKey, index: int) -> ApiKey:
    if not isinstance(key.sha256, str) or not _SHA256_HEX.fullmatch(key.sha256.lower()):
        # Never echo the value: someone may have pasted the key itself here.
        raise _Invalid(
            "expected the 64 hex digits of the key's SHA-256 digest "
            "(`journey keys new` prints it), not the key itself",
            f"[{index}].sha256",
        )
    if not isinstance(key.roles, list | tuple | frozenset) or not key.roles:
        raise _Invalid(
            f"expected a non-empty array of roles ({', '.join(ROLES)})", f"[{index}].roles"
        )
    for role in key.roles:
        if role not in ROLES:
            raise _Invalid(f"unknown role {role!r} (known: {', '.join(ROLES)})", f"[{index}].roles")
    return ApiKey(sha256=key.sha256.lower(), roles=frozenset(key.roles))


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_kind(value)}")
    return value


def _optional_file(value: object) -> str:
    # Empty means "not set"; whether the file can be read is checked at start.
    return _string(value)


def _message_size(value: object) -> int:
    size = _positive_int(value)
    if size > _MAX_MESSAGE_SIZE:
        raise _Invalid(f"must be at most {_MAX_MESSAGE_SIZE} (2 GiB - 1), got {size}")
    return size


# Decoders: turn a value as TOML gives it into the typed value that a normalizer checks.


def _same(value: object) -> object:
    return value


def _duration(value: object) -> timedelta:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _decode_system_events(value: object) -> object:
    if not isinstance(value, dict):
        return value  # the normalizer names the wrong type
    decoded: dict[object, object] = {}
    for slug, enabled in value.items():
        try:
            decoded[SystemEventType.from_slug(slug)] = enabled
        except ValueError:
            known = ", ".join(event_type.slug for event_type in SystemEventType)
            raise _Invalid(f"unknown system event type (known: {known})", f".{slug}") from None
    return decoded


def _table_list(decode_one: Callable[[dict[str, Any], int], object]) -> Callable[[object], object]:
    """A decoder for an array of tables that decodes each table with `decode_one`."""

    def decode(value: object) -> object:
        if not isinstance(value, list):
            return value  # the normalizer names the wrong type
        return [decode_one(entry, index) for index, entry in enumerate(value)]

    return decode


def _table(
    entry: object, index: int, allowed: tuple[str, ...], required: tuple[str, ...], wanted: str
) -> None:
    """Check that an array entry is a table with only `allowed` keys and all `required` ones."""
    if not isinstance(entry, dict):
        raise _Invalid(f"expected a table with {wanted}, got {_kind(entry)}", f"[{index}]")
    for key in entry:
        if key not in allowed:
            raise _Invalid(f"unknown key (allowed: {', '.join(allowed)})", f"[{index}].{key}")
    for key in required:
        if key not in entry:
            raise _Invalid("missing", f"[{index}].{key}")


def _decode_source(entry: dict[str, Any], index: int) -> Source:
    _table(entry, index, _SOURCE_KEYS, ("id",), "an id")
    return Source(id=entry["id"], enabled=entry.get("enabled", True))


def _decode_api_key(entry: dict[str, Any], index: int) -> ApiKey:
    _table(entry, index, _API_KEY_KEYS, _API_KEY_KEYS, "sha256 and roles")
    roles = entry["roles"]
    if not isinstance(roles, list):
        raise _Invalid(
            f"expected an array of roles ({', '.join(ROLES)}), got {_kind(roles)}",
            f"[{index}].roles",
        )
    for role in roles:
        if not isinstance(role, str):
            raise _Invalid(f"expected role names, got {_kind(role)}", f"[{index}].roles")
    return ApiKey(sha256=entry["sha256"], roles=frozenset(roles))


# Environment readers: turn a variable's text into a value as TOML would give it.


def _env_int(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        raise _Invalid(f"expected an integer, got {text!r}") from None


def _env_toml(text: str) -> object:
    try:
        document = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError as exc:
        raise _Invalid(f"not a TOML inline value ({exc}): {text!r}") from None
    # A newline in the variable could otherwise smuggle in further keys.
    if list(document) != ["v"]:
        raise _Invalid(f"expected a single TOML inline value, got {text!r}")
    return document["v"]


@dataclass(frozen=True)
class _Field:
    """How one top-level key is read from TOML or from its variable, and checked."""

    normalize: Callable[[object], object]
    decode: Callable[[object], object] = _same
    from_env: Callable[[str], object] = _same

    def load(self, value: object) -> object:
        return self.normalize(self.decode(value))

    def load_env(self, text: str) -> object:
        return self.load(self.from_env(text))


def _all_enabled() -> Mapping[SystemEventType, bool]:
    return MappingProxyType(dict.fromkeys(SystemEventType, True))


@dataclass(frozen=True)
class Source:
    """A system that sends tracked events, named by `id`; a disabled one is turned away."""

    id: str
    enabled: bool = True


@dataclass(frozen=True)
class ApiKey:
    """A client key, known only by the SHA-256 hex digest of its text, and the roles it has."""

    sha256: str
    roles: frozenset[str]


@dataclass(frozen=True)
class Settings:
    """The effective configuration; constructing one checks it, so every instance is valid."""

    listen: str = "127.0.0.1:50051"
    database_url: str = "sqlite+aiosqlite:///journey.db"
    visit_timeout: timedelta = timedelta(minutes=30)
    session_timeout: timedelta = timedelta(hours=24)
    heartbeat_interval: timedelta = timedelta(seconds=5)
    # Left out of the hash: a mapping proxy is unhashable, and the other fields suffice.
    system_events: Mapping[SystemEventType, bool] = field(default_factory=_all_enabled, hash=False)
    sources: tuple[Source, ...] = ()
    # How many events a live subscriber may fall behind before it is cut off.
    live_buffer_size: int = 10000
    shutdown_grace: timedelta = timedelta(seconds=5)
    log_level: str = "INFO"
    # text for people, json (one object per line) for log collectors.
    log_format: str = "text"
    # With none, the server runs open (and warns at start).
    api_keys: tuple[ApiKey, ...] = ()
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    max_subscribers: int = 1000
    # grpc's own defaults: 4 MiB in; out, room for a full page of large events.
    max_receive_message_size: int = 4 * 1024 * 1024
    max_send_message_size: int = 128 * 1024 * 1024
    keepalive_time: timedelta = timedelta(hours=2)
    keepalive_timeout: timedelta = timedelta(seconds=20)
    # Clients may ping this often, with or without calls; grpc's own default (5 minutes, and
    # none without a call) sends a 10 s keepalive client GOAWAY "too_many_pings". 0: any rate.
    keepalive_min_ping_interval: timedelta = timedelta(seconds=10)
    # 0 turns each off.
    max_connection_age: timedelta = timedelta(0)
    max_connection_age_grace: timedelta = timedelta(0)
    # SQLite's PRAGMA synchronous in WAL mode: FULL syncs every commit; NORMAL loses nothing
    # acknowledged when the process crashes, only the last commits on a power loss. NORMAL
    # measured no faster here (README, Performance), so the safe one is the default.
    sqlite_synchronous: str = "FULL"
    # Where /metrics is served (HOST:PORT, port 0 picks a free one); empty: no metrics at all.
    metrics_listen: str = ""
    # Server processes sharing the listen port (`journey serve --workers`); more than one
    # needs PostgreSQL.
    workers: int = 1
    # OpenTelemetry spans, exported as the OTEL_* variables say; needs journey[otel].
    tracing: bool = False

    def __post_init__(self) -> None:
        for key, spec in _FIELDS.items():
            object.__setattr__(self, key, _checked(spec.normalize, getattr(self, key), key))
        if self.visit_timeout > self.session_timeout:
            raise ConfigError(
                f"visit_timeout: {_format_duration(self.visit_timeout)} is longer than "
                f"session_timeout {_format_duration(self.session_timeout)}; "
                "a visit cannot outlast its session"
            )
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError(
                "tls_cert_file, tls_key_file: set both to serve TLS, or neither for plaintext"
            )
        if self.workers > 1 and self.database_url.startswith("sqlite"):
            raise ConfigError(
                f"workers: {self.workers} processes cannot share an SQLite database, which "
                "allows one process; use PostgreSQL (database_url) to run several"
            )
        if self.tls_client_ca_file and not self.tls_cert_file:
            raise ConfigError(
                "tls_client_ca_file: client certificates need TLS; set tls_cert_file and "
                "tls_key_file as well"
            )

    @property
    def enabled_types(self) -> frozenset[SystemEventType]:
        """The system-event types that are switched on."""
        return frozenset(event_type for event_type, on in self.system_events.items() if on)

    def policy(self) -> Policy:
        """The part of the settings that the domain rules use."""
        return Policy(
            visit_timeout=self.visit_timeout,
            session_timeout=self.session_timeout,
            enabled_types=self.enabled_types,
        )

    def describe(self) -> dict[str, object]:
        """The effective configuration as JSON-friendly values, for the startup log line."""
        return {
            "listen": self.listen,
            "database_url": _mask_password(self.database_url),
            "visit_timeout": _format_duration(self.visit_timeout),
            "session_timeout": _format_duration(self.session_timeout),
            "heartbeat_interval": _format_duration(self.heartbeat_interval),
            "system_events": {
                event_type.slug: enabled for event_type, enabled in self.system_events.items()
            },
            "sources": [{"id": source.id, "enabled": source.enabled} for source in self.sources],
            "live_buffer_size": self.live_buffer_size,
            "shutdown_grace": _format_duration(self.shutdown_grace),
            "log_level": self.log_level,
            "log_format": self.log_format,
            # The digests are not secret, but they are noise; roles say what is allowed.
            "api_keys": [sorted(key.roles) for key in self.api_keys],
            "tls_cert_file": self.tls_cert_file,
            "tls_key_file": self.tls_key_file,
            "tls_client_ca_file": self.tls_client_ca_file,
            "max_subscribers": self.max_subscribers,
            "max_receive_message_size": self.max_receive_message_size,
            "max_send_message_size": self.max_send_message_size,
            "keepalive_time": _format_duration(self.keepalive_time),
            "keepalive_timeout": _format_duration(self.keepalive_timeout),
            "keepalive_min_ping_interval": _format_duration(self.keepalive_min_ping_interval),
            "max_connection_age": _format_duration(self.max_connection_age),
            "max_connection_age_grace": _format_duration(self.max_connection_age_grace),
            "sqlite_synchronous": self.sqlite_synchronous,
            "metrics_listen": self.metrics_listen,
            "workers": self.workers,
            "tracing": self.tracing,
        }


_FIELDS: Mapping[str, _Field] = {
    "listen": _Field(_listen_address),
    "database_url": _Field(_non_empty_string),
    "visit_timeout": _Field(_positive_duration, _duration),
    "session_timeout": _Field(_positive_duration, _duration),
    "heartbeat_interval": _Field(_positive_duration, _duration),
    "system_events": _Field(_system_event_switches, _decode_system_events, _env_toml),
    "sources": _Field(_source_list, _table_list(_decode_source), _env_toml),
    "live_buffer_size": _Field(_positive_int, from_env=_env_int),
    "shutdown_grace": _Field(_non_negative_duration, _duration),
    "log_level": _Field(_log_level),
    "log_format": _Field(_log_format),
    "api_keys": _Field(_api_key_list, _table_list(_decode_api_key), _env_toml),
    "tls_cert_file": _Field(_optional_file),
    "tls_key_file": _Field(_optional_file),
    "tls_client_ca_file": _Field(_optional_file),
    "max_subscribers": _Field(_positive_int, from_env=_env_int),
    "max_receive_message_size": _Field(_message_size, from_env=_env_int),
    "max_send_message_size": _Field(_message_size, from_env=_env_int),
    "keepalive_time": _Field(_positive_duration, _duration),
    "keepalive_timeout": _Field(_positive_duration, _duration),
    "keepalive_min_ping_interval": _Field(_non_negative_duration, _duration),
    "max_connection_age": _Field(_non_negative_duration, _duration),
    "max_connection_age_grace": _Field(_non_negative_duration, _duration),
    "sqlite_synchronous": _Field(_sqlite_synchronous),
    "metrics_listen": _Field(_optional_listen_address),
    "workers": _Field(_positive_int, from_env=_env_int),
    "tracing": _Field(_boolean, from_env=_env_toml),
}


def _checked(check: Callable[[Any], object], value: object, key: str, variable: str = "") -> Any:
    """Run `check`, turning its complaint into a ConfigError that names the key and variable."""
    try:
        return check(value)
    except _Invalid as exc:
        where = key + exc.path
        raise ConfigError(
            f"{variable} ({where}): {exc}" if variable else f"{where}: {exc}"
        ) from None


def load_settings(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Read the TOML file at `path` (if any), then let JOURNEY_<KEY> variables override its keys.

    A variable replaces its key's whole value: JOURNEY_SYSTEM_EVENTS is not merged with the
    file's [system_events]. `environ` defaults to `os.environ`. Raises ConfigError.
    """
    values: dict[str, Any] = {}
    if path is not None:
        for key, value in _read_toml(path).items():
            spec = _FIELDS.get(key)
            if spec is None:
                raise ConfigError(
                    f"{key}: unknown setting in {os.fspath(path)} (known: {', '.join(_FIELDS)})"
                )
            values[key] = _checked(spec.load, value, key)
    env = os.environ if environ is None else environ
    for variable, key in _env_keys(env):
        values[key] = _checked(_FIELDS[key].load_env, env[variable], key, variable)
    return Settings(**values)


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    name = os.fspath(path)
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the config file: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name}: not UTF-8: {exc}") from None


def _env_keys(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """The JOURNEY_* variables and the keys they set; a variable that sets nothing is a typo."""
    keys = {f"{_ENV_PREFIX}{key.upper()}": key for key in _FIELDS}
    found = []
    for variable in sorted(environ):
        if not variable.startswith(_ENV_PREFIX):
            continue
        if variable not in keys:
            raise ConfigError(f"{variable}: names no setting (known: {', '.join(keys)})")
        found.append((variable, keys[variable]))
    return found
