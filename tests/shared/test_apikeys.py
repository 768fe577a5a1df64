from __future__ import annotations

import hashlib
import re

import pytest

from shared.apikeys import MIN_API_KEY_CHARS, parse_api_keys, unnamed_key_id
from shared.environ import SettingsError

KEY = "k" * MIN_API_KEY_CHARS
OTHER = "o" * MIN_API_KEY_CHARS
SECRET = "s" * 32


def test_empty_entries_and_the_spaces_around_entries_are_skipped() -> None:
    assert parse_api_keys(f" , a:{KEY} ,, ", id_secret=SECRET) == {"a": KEY}


def test_a_named_key_may_contain_a_colon() -> None:
    assert parse_api_keys(f"a:{KEY}:x", id_secret=SECRET) == {"a": f"{KEY}:x"}


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
        parse_api_keys(raw, id_secret=SECRET)

    assert key not in str(refused.value)


def test_a_named_key_is_known_by_its_name() -> None:
    assert parse_api_keys(f"alice:{KEY}", id_secret=SECRET) == {"alice": KEY}


def test_an_unnamed_keys_id_is_no_hash_of_the_key_that_guesses_could_be_checked_against() -> None:
    (key_id,) = parse_api_keys(KEY, id_secret=SECRET)

    digits = key_id.removeprefix("key-")
    assert re.fullmatch(r"[0-9a-f]{32}", digits), key_id
    for algorithm in ("md5", "sha1", "sha256", "sha512", "sha3_256", "blake2b"):
        assert digits[:8] not in hashlib.new(algorithm, KEY.encode()).hexdigest(), algorithm
    # It takes the secret: the same key has one id per secret, and that one every time.
    assert key_id == unnamed_key_id(KEY, SECRET)
    assert key_id not in (unnamed_key_id(KEY, "t" * 32), unnamed_key_id(KEY, ""))
