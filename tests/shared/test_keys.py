from __future__ import annotations

import string

import hypothesis
import pytest
from hypothesis import strategies as st
from redis.crc import key_slot

from shared.keys import JOB_ID_PATTERN, InvalidJobId, Keys, validate_job_id

_job_ids = st.from_regex(JOB_ID_PATTERN, fullmatch=True)


def test_key_names() -> None:
    keys = Keys()

    assert keys.events("job-1") == "jobwire:{job-1}:events"
    assert keys.state("job-1") == "jobwire:{job-1}:state"
    assert keys.live("job-1") == "jobwire:{job-1}:live"
    assert keys.catalog() == "jobwire:catalog"
    assert keys.workers() == "jobwire:workers"


def test_key_names_carry_the_prefix() -> None:
    keys = Keys("t42")

    assert keys.events("a") == "t42:{a}:events"
    assert keys.state("a") == "t42:{a}:state"
    assert keys.live("a") == "t42:{a}:live"
    assert keys.catalog() == "t42:catalog"
    assert keys.workers() == "t42:workers"


@hypothesis.given(job_id=_job_ids, prefix=st.sampled_from(["jobwire", "t1", "a:b"]))
def test_keys_of_one_job_share_a_cluster_slot(job_id: str, prefix: str) -> None:
    keys = Keys(prefix)
    names = [keys.events(job_id), keys.state(job_id), keys.live(job_id)]

    assert len(set(names)) == 3
    assert all(f"{{{job_id}}}" in name for name in names)
    assert {key_slot(name.encode()) for name in names} == {key_slot(job_id.encode())}


def test_keys_of_different_jobs_differ() -> None:
    keys = Keys()

    assert keys.events("a") != keys.events("b")
    assert keys.state("a") != keys.state("b")
    assert key_slot(keys.events("a").encode()) != key_slot(keys.events("b").encode())


@pytest.mark.parametrize(
    "job_id",
    [
        "a",
        "0",
        "job-1",
        "A_b.c-9",
        "a..",
        "3f2b9c0e6d8a4f1b9e7c5a3d1f0b2c4e",
        "x" * 128,
    ],
)
def test_valid_job_ids_are_returned_unchanged(job_id: str) -> None:
    assert validate_job_id(job_id) == job_id


@pytest.mark.parametrize(
    "job_id",
    [
        "",
        "..",
        "../etc",
        "a/../b",
        "a/b",
        "a\\b",
        ".hidden",
        "-a",
        "_a",
        "{a}",
        "a{b",
        "a}b",
        "a b",
        " a",
        "a ",
        "a\n",
        "a\r",
        "a\t",
        "a\x00",
        "a:b",
        "a?b",
        "a#b",
        "a%2F",
        "a*",
        "é",
        "jobé",
        "\uff41",  # fullwidth a
        "\u0661",  # Arabic-Indic one
        "x" * 129,
    ],
)
def test_invalid_job_ids_are_refused(job_id: str) -> None:
    with pytest.raises(InvalidJobId):
        validate_job_id(job_id)


_ALNUM = set(string.ascii_letters + string.digits)
_ALLOWED = _ALNUM | set("_.-")


@hypothesis.given(
    st.text(
        st.one_of(st.sampled_from(sorted(_ALLOWED | set("/{} \n"))), st.characters()),
        max_size=140,
    )
)
def test_job_id_validation_matches_the_documented_rule(job_id: str) -> None:
    expected = (
        1 <= len(job_id) <= 128 and job_id[0] in _ALNUM and all(c in _ALLOWED for c in job_id)
    )
    try:
        validate_job_id(job_id)
    except InvalidJobId:
        accepted = False
    else:
        accepted = True

    assert accepted is expected


def test_invalid_job_id_is_a_value_error() -> None:
    assert issubclass(InvalidJobId, ValueError)
