"""`jobwire` and `jobwire.client` export their names lazily: importing either loads neither
arq nor httpx, and every exported name resolves to the object its home module defines."""

from __future__ import annotations

import subprocess
import sys

import pytest

import jobwire
import jobwire.client


def test_importing_jobwire_loads_neither_the_worker_nor_the_http_client() -> None:
    probe = (
        "import sys, jobwire, jobwire.client; print('arq' in sys.modules, 'httpx' in sys.modules)"
    )

    out = subprocess.run(
        [sys.executable, "-c", probe], check=True, capture_output=True, text=True
    ).stdout

    assert out.split() == ["False", "False"]


@pytest.mark.parametrize("package", [jobwire, jobwire.client])
def test_every_exported_name_resolves(package: object) -> None:
    names: list[str] = package.__all__  # type: ignore[attr-defined]

    resolved = {name: getattr(package, name) for name in names}

    assert sorted(resolved) == sorted(names) == dir(package)
    assert all(value is not None for value in resolved.values())


def test_the_client_is_the_same_object_through_either_root() -> None:
    from jobwire.client.client import Client

    assert jobwire.Client is jobwire.client.Client is Client


def test_an_unknown_name_is_an_attribute_error_naming_the_package() -> None:
    with pytest.raises(AttributeError, match="module 'jobwire' has no attribute 'Nope'"):
        _ = jobwire.Nope
