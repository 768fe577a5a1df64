from __future__ import annotations

import pytest

from shared.apikeys import MIN_API_KEY_CHARS, parse_api_keys
from shared.environ import SettingsError

KEY = "k" * MIN_API_KEY_CHARS
OTHER = "o" * MIN_API_KEY_CHARS


def test_empty_entries_and_the_spaces_around_entries_are_skipped() -> None:
    assert parse_api_keys(f" , a:{KEY} ,, ") == {"a": KEY}


def test_a_named_key_may_contain_a_colon() -> None:
    assert parse_api_keys(f"a:{KEY}:x") == {"a": f"{KEY}:x"}


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("short:secret-123", "secret-123"),
        ("secret-12345678", "secret-12345678"),
        ("secret with spaces inside", "secret with spaces inside"),
        (f"bad name:{KEY}", KEY),
        (f"a:{KEY},a:{OTHER}", OTHER),
        (f"a:{KEY},b:{KEY}", KEY),
    ],
)
def test_a_refused_entry_names_the_variable_never_the_key(raw: str, key: str) -> None:
    with pytest.raises(SettingsError, match="JOBWIRE_API_KEYS") as refused:
        parse_api_keys(raw)

    assert key not in str(refused.value)
