from __future__ import annotations

import pytest

from shared.environ import SettingsError, UnknownSettingWarning, env_name, read_env


def test_only_prefixed_names_of_known_settings_are_read() -> None:
    environ = {"JOBWIRE_PORT": "9", "PORT": "1", "JOBWIRE_URL": "http://gateway:8000"}

    assert read_env(environ, {"port": int}) == {"port": 9}


def test_string_annotations_convert_like_the_types_they_name() -> None:
    environ = {"JOBWIRE_ON": " Yes ", "JOBWIRE_RATE": "0.5", "JOBWIRE_NAME": "x"}
    types: dict[str, object] = {"on": "bool", "rate": "float", "name": "str"}

    assert read_env(environ, types) == {"on": True, "rate": 0.5, "name": "x"}


def test_an_unknown_name_is_warned_about_with_the_known_ones() -> None:
    with pytest.warns(UnknownSettingWarning, match="known: JOBWIRE_PORT, JOBWIRE_HOST$"):
        values = read_env({"JOBWIRE_PROT": "9"}, {"port": int, "host": str})

    assert values == {}


@pytest.mark.parametrize(
    ("type_name", "raw"),
    [(bool, "maybe"), (int, "1.5"), (float, "nan"), (float, "-inf"), (int, "")],
)
def test_a_value_its_type_cannot_take_names_the_variable(type_name: type, raw: str) -> None:
    with pytest.raises(SettingsError, match="JOBWIRE_VALUE="):
        read_env({"JOBWIRE_VALUE": raw}, {"value": type_name})


def test_env_name() -> None:
    assert env_name("hub_ring_size") == "JOBWIRE_HUB_RING_SIZE"
