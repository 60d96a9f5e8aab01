"""Tests for journey.config: the TOML file, JOURNEY_* overrides, defaults and validation."""

from __future__ import annotations

import dataclasses
import math
import os
from datetime import timedelta
from pathlib import Path

import pytest

from journey.config import ApiKey, ConfigError, Settings, Source, load_settings, parse_duration
from journey.domain.model import SystemEventType

EXAMPLE = """\
listen = "0.0.0.0:50051"
database_url = "postgresql+asyncpg://127.0.0.1/journey"
visit_timeout = "30m"
session_timeout = "24h"
heartbeat_interval = 5

[system_events]
profile-created = true
visit-ended = false

[[sources]]
id = "web"

[[sources]]
id = "legacy-app"
enabled = false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "journey.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    return load_settings(write(tmp_path, text), environ={} if environ is None else environ)


# Defaults and the documented example.


def test_defaults() -> None:
    settings = load_settings(environ={})

    assert settings == Settings()
    assert settings.listen == "127.0.0.1:50051"
    assert settings.database_url == "sqlite+aiosqlite:///journey.db"
    assert settings.visit_timeout == timedelta(minutes=30)
    assert settings.session_timeout == timedelta(hours=24)
    assert settings.heartbeat_interval == timedelta(seconds=5)
    assert dict(settings.system_events) == dict.fromkeys(SystemEventType, True)
    assert settings.enabled_types == frozenset(SystemEventType)
    assert settings.sources == ()
    assert settings.live_buffer_size == 10000
    assert settings.shutdown_grace == timedelta(seconds=5)
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.keepalive_min_ping_interval == timedelta(seconds=10)
    assert settings.metrics_listen == ""
    assert settings.tracing is False


def test_full_example(tmp_path: Path) -> None:
    settings = load_text(tmp_path, EXAMPLE)

    assert settings.listen == "0.0.0.0:50051"
    assert settings.database_url == "postgresql+asyncpg://127.0.0.1/journey"
    assert settings.visit_timeout == timedelta(minutes=30)
    assert settings.session_timeout == timedelta(hours=24)
    assert settings.heartbeat_interval == timedelta(seconds=5)
    assert settings.system_events[SystemEventType.VISIT_ENDED] is False
    assert settings.enabled_types == frozenset(SystemEventType) - {SystemEventType.VISIT_ENDED}
    assert settings.sources == (Source("web", True), Source("legacy-app", False))
    assert settings.live_buffer_size == 10000


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_text(tmp_path, "") == Settings()


# Durations.


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (2, timedelta(seconds=2)),
        (0, timedelta(0)),
        (0.5, timedelta(milliseconds=500)),
        ("2", timedelta(seconds=2)),
        ("0.5", timedelta(milliseconds=500)),
        (".25", timedelta(milliseconds=250)),
        ("500ms", timedelta(milliseconds=500)),
        ("2s", timedelta(seconds=2)),
        ("1.5s", timedelta(milliseconds=1500)),
        ("30m", timedelta(minutes=30)),
        ("24h", timedelta(hours=24)),
        (" 2 s ", timedelta(seconds=2)),
    ],
)
def test_parse_duration_accepts(value: object, expected: timedelta) -> None:
    assert parse_duration(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (-1, r"bad duration -1: must not be negative"),
        (-0.5, r"must not be negative"),
        ("-2s", r"bad duration '-2s': must not be negative"),
        ("", r"empty duration \(use a number of seconds or 500ms"),
        ("   ", r"empty duration"),
        ("abc", r"bad duration 'abc' \(use a number of seconds or 500ms, 2s, 30m, 24h\)"),
        ("2d", r"unknown unit 'd' \(use ms, s, m or h\)"),
        ("2S", r"unknown unit 'S'"),
        ("1e3", r"bad duration '1e3' \(use"),
        ("2s5", r"bad duration '2s5'"),
        ("s", r"bad duration 's'"),
        (True, r"bad duration boolean True"),
        (None, r"bad duration NoneType"),
        ([1], r"bad duration array"),
        (math.inf, r"must be finite"),
        (math.nan, r"must be finite"),
        (10**20, r"too large"),
        ("99999999999999999h", r"too large"),
    ],
)
def test_parse_duration_rejects(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_duration(value)


def test_bad_duration_in_file_names_the_key(tmp_path: Path) -> None:
    expected = (
        r"^visit_timeout: bad duration 'abc' \(use a number of seconds or 500ms, 2s, 30m, 24h\)$"
    )
    with pytest.raises(ConfigError, match=expected):
        load_text(tmp_path, 'visit_timeout = "abc"')


@pytest.mark.parametrize("key", ["visit_timeout", "session_timeout", "heartbeat_interval"])
def test_timeouts_must_be_positive(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key}: must be greater than 0, got 0s$"):
        load_text(tmp_path, f'{key} = "0ms"')


def test_shutdown_grace_may_be_zero_but_not_negative(tmp_path: Path) -> None:
    assert load_text(tmp_path, "shutdown_grace = 0").shutdown_grace == timedelta(0)
    with pytest.raises(
        ConfigError, match=r"^shutdown_grace: bad duration -1: must not be negative"
    ):
        load_text(tmp_path, "shutdown_grace = -1")


def test_visit_timeout_longer_than_session_timeout_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^visit_timeout: 2h is longer than session_timeout 1h"):
        load_text(tmp_path, 'visit_timeout = "2h"\nsession_timeout = "1h"')


def test_visit_timeout_equal_to_session_timeout_allowed(tmp_path: Path) -> None:
    settings = load_text(tmp_path, 'visit_timeout = "1h"\nsession_timeout = "60m"')
    assert settings.visit_timeout == settings.session_timeout == timedelta(hours=1)


def test_settings_built_by_hand_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"^visit_timeout: 2h is longer than session_timeout 1h"):
        Settings(visit_timeout=timedelta(hours=2), session_timeout=timedelta(hours=1))
    with pytest.raises(ConfigError, match=r"^live_buffer_size: must be at least 1, got 0$"):
        Settings(live_buffer_size=0)


# Environment overrides.


def test_env_overrides_file(tmp_path: Path) -> None:
    environ = {
        "JOURNEY_LISTEN": "[::]:6000",
        "JOURNEY_DATABASE_URL": "sqlite+aiosqlite:///other.db",
        "JOURNEY_VISIT_TIMEOUT": "10m",
        "JOURNEY_SESSION_TIMEOUT": "2h",
        "JOURNEY_HEARTBEAT_INTERVAL": "500ms",
        "JOURNEY_LIVE_BUFFER_SIZE": "42",
        "JOURNEY_SHUTDOWN_GRACE": "0",
        "JOURNEY_LOG_LEVEL": "debug",
        "PATH": "/usr/bin",
    }
    settings = load_text(tmp_path, EXAMPLE, environ)

    assert settings.listen == "[::]:6000"
    assert settings.database_url == "sqlite+aiosqlite:///other.db"
    assert settings.visit_timeout == timedelta(minutes=10)
    assert settings.session_timeout == timedelta(hours=2)
    assert settings.heartbeat_interval == timedelta(milliseconds=500)
    assert settings.live_buffer_size == 42
    assert settings.shutdown_grace == timedelta(0)
    assert settings.log_level == "DEBUG"
    # Keys without a variable keep the file's values.
    assert settings.sources == (Source("web"), Source("legacy-app", enabled=False))


def test_env_works_without_a_file() -> None:
    settings = load_settings(environ={"JOURNEY_LOG_LEVEL": "warning"})
    assert settings.log_level == "WARNING"


def test_environ_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [name for name in os.environ if name.startswith("JOURNEY_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("JOURNEY_LIVE_BUFFER_SIZE", "7")
    assert load_settings().live_buffer_size == 7


def test_env_inline_system_events_replaces_file_table(tmp_path: Path) -> None:
    environ = {"JOURNEY_SYSTEM_EVENTS": '{ "visit-started" = false, session-closed = false }'}
    settings = load_text(tmp_path, EXAMPLE, environ)

    # The variable replaces the whole table, so the file's visit-ended = false is gone.
    assert settings.enabled_types == {
        SystemEventType.PROFILE_CREATED,
        SystemEventType.SESSION_OPENED,
        SystemEventType.VISIT_ENDED,
    }


def test_env_inline_sources(tmp_path: Path) -> None:
    environ = {"JOURNEY_SOURCES": '[{ id = "web" }, { id = "app", enabled = false }]'}
    settings = load_text(tmp_path, EXAMPLE, environ)
    assert settings.sources == (Source("web", True), Source("app", False))


def test_env_empty_sources_clears_file_sources(tmp_path: Path) -> None:
    assert load_text(tmp_path, EXAMPLE, {"JOURNEY_SOURCES": "[]"}).sources == ()


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"JOURNEY_VISIT_TIMEOUT": "abc"},
            r"^JOURNEY_VISIT_TIMEOUT \(visit_timeout\): bad duration 'abc' \(use a number",
        ),
        (
            {"JOURNEY_HEARTBEAT_INTERVAL": "0"},
            r"^JOURNEY_HEARTBEAT_INTERVAL \(heartbeat_interval\): must be greater than 0",
        ),
        (
            {"JOURNEY_LIVE_BUFFER_SIZE": "lots"},
            r"^JOURNEY_LIVE_BUFFER_SIZE \(live_buffer_size\): expected an integer, got 'lots'$",
        ),
        (
            {"JOURNEY_LIVE_BUFFER_SIZE": "0"},
            r"^JOURNEY_LIVE_BUFFER_SIZE \(live_buffer_size\): must be at least 1",
        ),
        ({"JOURNEY_LISTEN": ""}, r"^JOURNEY_LISTEN \(listen\): must not be empty$"),
        ({"JOURNEY_LOG_LEVEL": "loud"}, r"^JOURNEY_LOG_LEVEL \(log_level\): expected one of"),
        (
            {"JOURNEY_SYSTEM_EVENTS": "{ visit-ended = "},
            r"^JOURNEY_SYSTEM_EVENTS \(system_events\): not a TOML inline value",
        ),
        (
            {"JOURNEY_SYSTEM_EVENTS": "{}\nlisten = 'x'"},
            r"^JOURNEY_SYSTEM_EVENTS \(system_events\): expected a single TOML inline value",
        ),
        (
            {"JOURNEY_SYSTEM_EVENTS": "{ visit-ended = 1 }"},
            r"^JOURNEY_SYSTEM_EVENTS \(system_events\.visit-ended\): expected true or false",
        ),
        (
            {"JOURNEY_SOURCES": '[{ id = "web", enabled = "no" }]'},
            r"^JOURNEY_SOURCES \(sources\[0\]\.enabled\): expected true or false",
        ),
        (
            {"JOURNEY_SOURCES": "web"},
            r"^JOURNEY_SOURCES \(sources\): not a TOML inline value",
        ),
    ],
)
def test_bad_env_value_names_variable_and_key(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ=environ)


@pytest.mark.parametrize("name", ["JOURNEY_LISTEN_ADDRESS", "JOURNEY_", "JOURNEY_listen"])
def test_unknown_journey_variable_rejected(name: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name}: names no setting \(known: JOURNEY_LISTEN,"):
        load_settings(environ={name: "x"})


def test_other_variables_ignored() -> None:
    assert load_settings(environ={"JOURNEYMAN": "x", "journey_listen": "y"}) == Settings()


# The file: unknown keys, wrong types, bad values.


def test_unknown_key_in_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^visit_timout: unknown setting in .*journey\.toml"):
        load_text(tmp_path, 'visit_timout = "30m"')


def test_misspelled_table_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^system_event: unknown setting"):
        load_text(tmp_path, "[system_event]\nvisit-ended = false")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("listen = 5", r"^listen: expected a string, got integer 5$"),
        ("database_url = ['a']", r"^database_url: expected a string, got array$"),
        ("visit_timeout = true", r"^visit_timeout: bad duration boolean True"),
        ("session_timeout = 1979-05-27", r"^session_timeout: bad duration date"),
        ("live_buffer_size = '10'", r"^live_buffer_size: expected an integer, got string '10'$"),
        ("live_buffer_size = true", r"^live_buffer_size: expected an integer, got boolean True$"),
        ("live_buffer_size = 1.5", r"^live_buffer_size: expected an integer, got float 1.5$"),
        ("log_level = 1", r"^log_level: expected a string, got integer 1$"),
        ("system_events = 'all'", r"^system_events: expected a table of event type"),
        ("sources = 'web'", r"^sources: expected an array of tables \(\[\[sources\]\]\)"),
        ("sources = { id = 'web' }", r"^sources: expected an array of tables"),
    ],
)
def test_wrong_types_rejected(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_text(tmp_path, toml)


@pytest.mark.parametrize(
    "listen", ["", " ", "localhost", ":50051", "host:", "host:65536", "host:-1", "::1:50051"]
)
def test_bad_listen_rejected(tmp_path: Path, listen: str) -> None:
    with pytest.raises(ConfigError, match=r"^listen: "):
        load_text(tmp_path, f'listen = "{listen}"')


@pytest.mark.parametrize("listen", ["localhost:0", "0.0.0.0:65535", "[::1]:50051"])
def test_good_listen_accepted(tmp_path: Path, listen: str) -> None:
    assert load_text(tmp_path, f'listen = "{listen}"').listen == listen


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    assert load_text(tmp_path, 'log_level = "Warning"').log_level == "WARNING"
    with pytest.raises(ConfigError, match=r"^log_level: expected one of DEBUG, INFO, WARNING"):
        load_text(tmp_path, 'log_level = "TRACE"')


def test_log_format_is_text_or_json(tmp_path: Path) -> None:
    assert load_text(tmp_path, 'log_format = "JSON"').log_format == "json"
    assert load_settings(environ={"JOURNEY_LOG_FORMAT": "text"}).log_format == "text"
    with pytest.raises(ConfigError, match=r"^log_format: expected one of text, json, got 'xml'$"):
        load_text(tmp_path, 'log_format = "xml"')
    with pytest.raises(ConfigError, match=r"^JOURNEY_LOG_FORMAT \(log_format\): expected one of"):
        load_settings(environ={"JOURNEY_LOG_FORMAT": "yaml"})


def test_keepalive_min_ping_interval_is_a_duration(tmp_path: Path) -> None:
    settings = load_text(tmp_path, 'keepalive_min_ping_interval = "30s"')
    assert settings.keepalive_min_ping_interval == timedelta(seconds=30)
    assert settings.describe()["keepalive_min_ping_interval"] == "30s"
    env = {"JOURNEY_KEEPALIVE_MIN_PING_INTERVAL": "0"}
    assert load_settings(environ=env).keepalive_min_ping_interval == timedelta(0)
    with pytest.raises(ConfigError, match=r"^keepalive_min_ping_interval: bad duration"):
        load_text(tmp_path, 'keepalive_min_ping_interval = "-1s"')
    with pytest.raises(ConfigError, match=r"^keepalive_min_ping_interval: bad duration"):
        load_text(tmp_path, 'keepalive_min_ping_interval = "often"')


def test_empty_database_url_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^database_url: must not be empty$"):
        load_text(tmp_path, 'database_url = ""')


def test_system_events_unknown_type_rejected(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^system_events\.visit-end: unknown system event type \(known: profile"
    ):
        load_text(tmp_path, "[system_events]\nvisit-end = false")


def test_system_events_non_boolean_rejected(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"^system_events\.session-opened: expected true or false, got string"
    ):
        load_text(tmp_path, '[system_events]\nsession-opened = "no"')


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[sources]]\nid = "web"\n[[sources]]\nenabled = true', r"^sources\[1\]\.id: missing$"),
        ('[[sources]]\nid = ""', r"^sources\[0\]\.id: must not be empty$"),
        ("[[sources]]\nid = 7", r"^sources\[0\]\.id: expected a string, got integer 7$"),
        (
            f'[[sources]]\nid = "{"x" * 129}"',
            r"^sources\[0\]\.id: longer than 128 characters \(129\)$",
        ),
        (
            '[[sources]]\nid = "web"\n[[sources]]\nid = "app"\nenabled = "yes"',
            r"^sources\[1\]\.enabled: expected true or false, got string 'yes'$",
        ),
        (
            '[[sources]]\nid = "web"\nname = "Web"',
            r"^sources\[0\]\.name: unknown key \(allowed: id, enabled\)$",
        ),
        (
            '[[sources]]\nid = "web"\n[[sources]]\nid = "web"',
            r"^sources\[1\]\.id: duplicate id 'web' \(also sources\[0\]\)$",
        ),
        ('sources = ["web"]', r"^sources\[0\]: expected a table with an id, got string 'web'$"),
    ],
)
def test_sources_validation(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_text(tmp_path, toml)


def test_source_id_of_128_characters_accepted(tmp_path: Path) -> None:
    settings = load_text(tmp_path, f'[[sources]]\nid = "{"x" * 128}"')
    assert settings.sources == (Source("x" * 128),)


# The file itself.


def test_bad_toml_syntax_names_the_file(tmp_path: Path) -> None:
    expected = r"journey\.toml: invalid TOML: Invalid statement \(at line 2, column 1\)$"
    with pytest.raises(ConfigError, match=expected):
        load_text(tmp_path, 'listen = "a"\n= 5\nlog_level = "INFO"\n')


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    with pytest.raises(ConfigError, match=r"absent\.toml: cannot read the config file"):
        load_settings(missing, environ={})


def test_directory_instead_of_file_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=rf"^{tmp_path}: cannot read the config file"):
        load_settings(tmp_path, environ={})


def test_non_utf8_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes('listen = "caf\xe9:1"'.encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.toml: "):
        load_settings(path, environ={})


def test_path_may_be_a_string(tmp_path: Path) -> None:
    path = write(tmp_path, 'log_level = "ERROR"')
    assert load_settings(str(path), environ={}).log_level == "ERROR"


# Immutability, policy() and describe().


def test_settings_are_immutable_and_hashable() -> None:
    settings = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.listen = "0.0.0.0:1"  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.system_events[SystemEventType.VISIT_ENDED] = False  # type: ignore[index]
    assert hash(settings) == hash(Settings())


def test_hand_built_system_events_are_copied_and_completed() -> None:
    switches = {SystemEventType.SESSION_CLOSED: False}
    settings = Settings(system_events=switches)
    switches[SystemEventType.SESSION_CLOSED] = True

    assert settings.system_events[SystemEventType.SESSION_CLOSED] is False
    assert len(settings.system_events) == len(SystemEventType)


def test_policy_reflects_disabled_types(tmp_path: Path) -> None:
    settings = load_text(
        tmp_path,
        'visit_timeout = "10m"\nsession_timeout = "2h"\n'
        "[system_events]\nvisit-started = false\nvisit-ended = false",
    )
    policy = settings.policy()

    assert policy.visit_timeout == timedelta(minutes=10)
    assert policy.session_timeout == timedelta(hours=2)
    assert policy.enabled_types == {
        SystemEventType.PROFILE_CREATED,
        SystemEventType.SESSION_OPENED,
        SystemEventType.SESSION_CLOSED,
    }


def test_describe_example(tmp_path: Path) -> None:
    environ = {"JOURNEY_SHUTDOWN_GRACE": "1.5s", "JOURNEY_HEARTBEAT_INTERVAL": "0.0005"}
    assert load_text(tmp_path, EXAMPLE, environ).describe() == {
        "listen": "0.0.0.0:50051",
        "database_url": "postgresql+asyncpg://127.0.0.1/journey",
        "visit_timeout": "30m",
        "session_timeout": "24h",
        "heartbeat_interval": "0.0005s",
        "system_events": {
            "profile-created": True,
            "session-opened": True,
            "visit-started": True,
            "visit-ended": False,
            "session-closed": True,
        },
        "sources": [{"id": "web", "enabled": True}, {"id": "legacy-app", "enabled": False}],
        "live_buffer_size": 10000,
        "shutdown_grace": "1500ms",
        "log_level": "INFO",
        "log_format": "text",
        "api_keys": [],
        "tls_cert_file": "",
        "tls_key_file": "",
        "tls_client_ca_file": "",
        "max_subscribers": 1000,
        "max_receive_message_size": 4 * 1024 * 1024,
        "max_send_message_size": 128 * 1024 * 1024,
        "keepalive_time": "2h",
        "keepalive_timeout": "20s",
        "keepalive_min_ping_interval": "10s",
        "max_connection_age": "0s",
        "max_connection_age_grace": "0s",
        "sqlite_synchronous": "FULL",
        "metrics_listen": "",
        "workers": 1,
        "tracing": False,
    }


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql+asyncpg://journey:s3cret@db.example:5432/journey",
            "postgresql+asyncpg://journey:***@db.example:5432/journey",
        ),
        ("postgresql://journey:p@ss/w@db/journey", "postgresql://journey:***@db/journey"),
        ("postgresql://:s3cret@db/journey", "postgresql://:***@db/journey"),
        (
            "postgresql://db/journey?user=j&password=s3cret&ssl=true",
            "postgresql://db/journey?user=j&password=***&ssl=true",
        ),
        ("postgresql://journey@db:5432/journey", "postgresql://journey@db:5432/journey"),
        ("postgresql://db:5432/journey", "postgresql://db:5432/journey"),
        ("sqlite+aiosqlite:///journey.db", "sqlite+aiosqlite:///journey.db"),
    ],
)
def test_describe_masks_database_password(url: str, shown: str) -> None:
    described = Settings(database_url=url).describe()
    assert described["database_url"] == shown
    assert "s3cret" not in str(described)


# API keys, TLS files and limits.

DIGEST = "ab" * 32


def test_api_keys_are_read_with_their_roles(tmp_path: Path) -> None:
    settings = load_text(
        tmp_path,
        f'[[api_keys]]\nsha256 = "{DIGEST.upper()}"\nroles = ["tracker", "subscriber"]\n'
        f'[[api_keys]]\nsha256 = "{"cd" * 32}"\nroles = ["admin"]\n',
    )
    assert settings.api_keys == (
        ApiKey(DIGEST, frozenset({"tracker", "subscriber"})),
        ApiKey("cd" * 32, frozenset({"admin"})),
    )
    described = settings.describe()["api_keys"]
    assert described == [["subscriber", "tracker"], ["admin"]]
    assert DIGEST not in str(settings.describe())


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ('sha256 = "my-secret-key"\nroles = ["admin"]', r"api_keys\[0\]\.sha256: expected the 64"),
        (f'sha256 = "{DIGEST}"\nroles = []', r"api_keys\[0\]\.roles: expected a non-empty"),
        (f'sha256 = "{DIGEST}"\nroles = ["root"]', r"api_keys\[0\]\.roles: unknown role 'root'"),
        (f'sha256 = "{DIGEST}"\nroles = "admin"', r"api_keys\[0\]\.roles: expected an array"),
        (f'sha256 = "{DIGEST}"\nroles = [1]', r"api_keys\[0\]\.roles: expected role names"),
        (f'sha256 = "{DIGEST}"', r"api_keys\[0\]\.roles: missing"),
        ('roles = ["admin"]', r"api_keys\[0\]\.sha256: missing"),
        (f'sha256 = "{DIGEST}"\nroles = ["admin"]\nkey = "x"', r"api_keys\[0\]\.key: unknown"),
    ],
)
def test_bad_api_keys_are_named(tmp_path: Path, entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        load_text(tmp_path, f"[[api_keys]]\n{entry}\n")
    assert "my-secret-key" not in str(raised.value)


def test_duplicate_api_key_digests_are_refused(tmp_path: Path) -> None:
    entry = f'[[api_keys]]\nsha256 = "{DIGEST}"\nroles = ["admin"]\n'
    with pytest.raises(ConfigError, match=r"api_keys\[1\]\.sha256: duplicate sha256"):
        load_text(tmp_path, entry * 2)


def test_api_keys_from_the_environment(tmp_path: Path) -> None:
    environ = {"JOURNEY_API_KEYS": f'[{{ sha256 = "{DIGEST}", roles = ["tracker"] }}]'}
    settings = load_text(tmp_path, "", environ)
    assert settings.api_keys == (ApiKey(DIGEST, frozenset({"tracker"})),)


def test_tls_files_must_come_as_cert_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^tls_cert_file, tls_key_file: set both"):
        load_text(tmp_path, 'tls_cert_file = "server.pem"')
    with pytest.raises(ConfigError, match=r"^tls_client_ca_file: client certificates need TLS"):
        load_text(tmp_path, 'tls_client_ca_file = "ca.pem"')
    settings = load_text(
        tmp_path,
        'tls_cert_file = "s.pem"\ntls_key_file = "s.key"\ntls_client_ca_file = "ca.pem"',
    )
    assert (settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file) == (
        "s.pem",
        "s.key",
        "ca.pem",
    )


def test_limits_are_read_and_checked(tmp_path: Path) -> None:
    settings = load_text(
        tmp_path,
        "max_subscribers = 5\nmax_receive_message_size = 1024\nmax_send_message_size = 2048\n"
        'keepalive_time = "1m"\nkeepalive_timeout = "5s"\n'
        'max_connection_age = "1h"\nmax_connection_age_grace = "30s"\n',
        {"JOURNEY_MAX_SUBSCRIBERS": "7"},
    )
    assert settings.max_subscribers == 7
    assert settings.max_receive_message_size == 1024
    assert settings.max_send_message_size == 2048
    assert settings.keepalive_time == timedelta(minutes=1)
    assert settings.keepalive_timeout == timedelta(seconds=5)
    assert settings.max_connection_age == timedelta(hours=1)
    assert settings.max_connection_age_grace == timedelta(seconds=30)
    with pytest.raises(ConfigError, match=r"^max_subscribers: must be at least 1, got 0$"):
        load_text(tmp_path, "max_subscribers = 0")
    with pytest.raises(ConfigError, match=r"^max_send_message_size: must be at most"):
        load_text(tmp_path, f"max_send_message_size = {2**31}")
    with pytest.raises(ConfigError, match=r"^keepalive_time: must be greater than 0"):
        load_text(tmp_path, "keepalive_time = 0")


def test_metrics_listen_is_off_by_default_and_takes_host_and_port(tmp_path: Path) -> None:
    assert load_text(tmp_path, "").metrics_listen == ""
    settings = load_text(tmp_path, 'metrics_listen = "127.0.0.1:9464"')
    assert settings.metrics_listen == "127.0.0.1:9464"
    assert settings.describe()["metrics_listen"] == "127.0.0.1:9464"
    from_env = load_text(tmp_path, "", {"JOURNEY_METRICS_LISTEN": "[::1]:0"})
    assert from_env.metrics_listen == "[::1]:0"
    # An empty variable turns metrics off again.
    off = load_text(tmp_path, 'metrics_listen = "127.0.0.1:9464"', {"JOURNEY_METRICS_LISTEN": ""})
    assert off.metrics_listen == ""


@pytest.mark.parametrize("value", ['"9464"', '"host:"', '"host:70000"', '" "', "9464"])
def test_bad_metrics_listen_is_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match=r"^metrics_listen: "):
        load_text(tmp_path, f"metrics_listen = {value}")


def test_workers_are_read_and_checked(tmp_path: Path) -> None:
    postgres = 'database_url = "postgresql+asyncpg://127.0.0.1/journey"\n'
    assert Settings().workers == 1
    assert load_text(tmp_path, postgres + "workers = 3").workers == 3
    assert load_text(tmp_path, postgres, {"JOURNEY_WORKERS": "4"}).workers == 4
    with pytest.raises(ConfigError, match=r"^workers: must be at least 1, got 0$"):
        load_text(tmp_path, postgres + "workers = 0")
    with pytest.raises(ConfigError, match=r"^workers: expected an integer, got"):
        load_text(tmp_path, postgres + 'workers = "2"')
    with pytest.raises(ConfigError, match=r"^JOURNEY_WORKERS \(workers\): expected an integer"):
        load_text(tmp_path, postgres, {"JOURNEY_WORKERS": "two"})


def test_several_workers_on_sqlite_are_refused_naming_postgresql(tmp_path: Path) -> None:
    assert load_text(tmp_path, "workers = 1").workers == 1
    with pytest.raises(ConfigError, match=r"^workers: 2 processes cannot share an SQLite") as info:
        load_text(tmp_path, "workers = 2")
    assert "use PostgreSQL" in str(info.value)


def test_tracing_is_read_from_file_and_environment(tmp_path: Path) -> None:
    assert load_text(tmp_path, "tracing = true").tracing is True
    assert load_text(tmp_path, "tracing = true", {"JOURNEY_TRACING": "false"}).tracing is False
    assert load_settings(environ={"JOURNEY_TRACING": "true"}).tracing is True
    assert load_settings(environ={"JOURNEY_TRACING": "true"}).describe()["tracing"] is True


@pytest.mark.parametrize(
    ("toml", "environ", "message"),
    [
        ('tracing = "yes"', {}, r"^tracing: expected true or false, got string 'yes'$"),
        ("tracing = 1", {}, r"^tracing: expected true or false, got integer 1$"),
        (
            "",
            {"JOURNEY_TRACING": "1"},
            r"^JOURNEY_TRACING \(tracing\): expected true or false, got integer 1$",
        ),
        (
            "",
            {"JOURNEY_TRACING": "on"},
            r"^JOURNEY_TRACING \(tracing\): not a TOML inline value",
        ),
    ],
)
def test_bad_tracing_value_names_the_key(
    tmp_path: Path, toml: str, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_text(tmp_path, toml, environ)
