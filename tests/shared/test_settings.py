from __future__ import annotations

import dataclasses
import os

import hypothesis
import pytest
from hypothesis import strategies as st

from shared.environ import ENV_PREFIX, UnknownSettingWarning
from shared.settings import DEFAULT_REDIS_URL, Settings, SettingsError, describe, env_names


def test_empty_environment_gives_the_defaults() -> None:
    settings = Settings.from_env({})

    assert settings == Settings()
    assert settings.redis_url == ""
    assert settings.events_redis_url == DEFAULT_REDIS_URL
    assert settings.arq_redis_url == DEFAULT_REDIS_URL
    assert settings.key_prefix == "jobwire"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.stream_maxlen == 10_000
    assert settings.retention_s == 86_400


def test_variables_without_the_prefix_are_ignored() -> None:
    settings = Settings.from_env(
        {"PATH": "/usr/bin", "REDIS_URL": "redis://elsewhere", "jobwire_port": "9", "PORT": "1"}
    )

    assert settings == Settings()


def test_values_are_converted_to_the_setting_type() -> None:
    settings = Settings.from_env(
        {
            "JOBWIRE_PORT": "9000",
            "JOBWIRE_HEARTBEAT_S": "2.5",
            "JOBWIRE_PING_S": "3",
            "JOBWIRE_STREAM_MAXLEN": " 42 ",
            "JOBWIRE_RETRY_DELAY_S": "0",
            "JOBWIRE_HOST": "0.0.0.0",
            "JOBWIRE_LOG_LEVEL": "DEBUG",
        }
    )

    assert settings.port == 9000
    assert type(settings.port) is int
    assert settings.heartbeat_s == 2.5
    assert settings.ping_s == 3.0
    assert type(settings.ping_s) is float
    assert settings.stream_maxlen == 42
    assert settings.retry_delay_s == 0.0
    assert settings.host == "0.0.0.0"
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JOBWIRE_PORT", "eighty"),
        ("JOBWIRE_PORT", "80.5"),
        ("JOBWIRE_PORT", ""),
        ("JOBWIRE_PORT", "70000"),
        ("JOBWIRE_PORT", "-1"),
        ("JOBWIRE_STREAM_MAXLEN", "0"),
        ("JOBWIRE_RETENTION_S", "-5"),
        ("JOBWIRE_HEARTBEAT_S", "soon"),
        ("JOBWIRE_HEARTBEAT_S", "0"),
        ("JOBWIRE_HEARTBEAT_S", "nan"),
        ("JOBWIRE_JOB_TIMEOUT_S", "inf"),
        ("JOBWIRE_WORKER_POLL_S", "-0.1"),
        ("JOBWIRE_MAX_TRIES", "0"),
        ("JOBWIRE_RETRY_DELAY_S", "-0.5"),
        ("JOBWIRE_SSE_RETRY_MS", "-1"),
        ("JOBWIRE_KEY_PREFIX", ""),
        ("JOBWIRE_KEY_PREFIX", "a{b}"),
        ("JOBWIRE_MAX_EVENT_BYTES", "0"),
        # Less than a `completed` event with the largest result allowed takes.
        ("JOBWIRE_MAX_EVENT_BYTES", "65536"),
    ],
)
def test_invalid_value_names_its_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_unknown_prefixed_variable_is_warned_about_and_ignored() -> None:
    with pytest.warns(UnknownSettingWarning, match="JOBWIRE_PROT") as caught:
        settings = Settings.from_env({"JOBWIRE_PROT": "9000", "JOBWIRE_HOST": "0.0.0.0"})

    assert len(caught) == 1
    assert settings.port == 8000
    assert settings.host == "0.0.0.0"


def test_queue_redis_defaults_to_the_events_redis() -> None:
    same = Settings.from_env({"JOBWIRE_REDIS_URL": "redis://events:6379/1"})
    split = Settings.from_env(
        {
            "JOBWIRE_REDIS_URL": "redis://events:6379/1",
            "JOBWIRE_QUEUE_REDIS_URL": "redis://queue:6379/2",
        }
    )

    assert same.events_redis_url == "redis://events:6379/1"
    assert same.arq_redis_url == "redis://events:6379/1"
    assert split.events_redis_url == "redis://events:6379/1"
    assert split.arq_redis_url == "redis://queue:6379/2"


def test_to_env_of_defaults_is_empty() -> None:
    assert Settings().to_env() == {}


def test_to_env_rebuilds_the_same_settings() -> None:
    settings = Settings.from_env(
        {
            "JOBWIRE_REDIS_URL": "redis://events:6379/1",
            "JOBWIRE_KEY_PREFIX": "jw-test",
            "JOBWIRE_PORT": "9001",
            "JOBWIRE_HEARTBEAT_S": "0.3",
            "JOBWIRE_SSE_RETRY_MS": "0",
        }
    )

    env = settings.to_env()

    assert env == {
        "JOBWIRE_REDIS_URL": "redis://events:6379/1",
        "JOBWIRE_KEY_PREFIX": "jw-test",
        "JOBWIRE_PORT": "9001",
        "JOBWIRE_HEARTBEAT_S": "0.3",
        "JOBWIRE_SSE_RETRY_MS": "0",
    }
    assert Settings.from_env(env) == settings


_positive_float = st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False)


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    stream_maxlen=st.integers(1, 2**40),
    port=st.integers(0, 65_535),
    heartbeat_s=_positive_float,
    retry_delay_s=st.floats(0, 1e6, allow_nan=False),
    key_prefix=st.text(
        st.characters(codec="utf-8", exclude_characters="{}", exclude_categories=["Cs", "Z", "C"]),
        min_size=1,
        max_size=20,
    ),
)
def test_to_env_round_trips_any_valid_settings(
    stream_maxlen: int, port: int, heartbeat_s: float, retry_delay_s: float, key_prefix: str
) -> None:
    settings = Settings().replace(
        stream_maxlen=stream_maxlen,
        port=port,
        heartbeat_s=heartbeat_s,
        retry_delay_s=retry_delay_s,
        key_prefix=key_prefix,
    )

    assert Settings.from_env(settings.to_env()) == settings


def test_settings_are_frozen() -> None:
    settings = Settings()

    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.port = 1  # type: ignore[misc]


def test_replace_validates_the_new_values() -> None:
    settings = Settings()

    assert settings.replace(port=9002).port == 9002
    assert settings.port == 8000
    with pytest.raises(SettingsError, match="JOBWIRE_STREAM_MAXLEN"):
        settings.replace(stream_maxlen=0)


def test_from_env_without_a_mapping_reads_the_process_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv("JOBWIRE_PORT", "9123")

    assert Settings.from_env().port == 9123


def test_every_setting_has_an_env_name_and_a_doc() -> None:
    names = env_names()
    fields = dataclasses.fields(Settings)

    assert names == [ENV_PREFIX + field.name.upper() for field in fields]
    assert "JOBWIRE_REDIS_URL" in names
    assert "JOBWIRE_QUEUE_REDIS_URL" in names
    assert [name for name, _, _ in describe()] == names
    assert all(doc.strip() for _, _, doc in describe())
