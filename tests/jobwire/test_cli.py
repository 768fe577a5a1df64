"""The `jobwire` command's own surface: its version, its help texts, and command lines it
refuses in one line (a gateway URL without a scheme, a bound that is not a number of seconds)."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from jobwire.cli import DEFAULT_GIVE_UP_AFTER_S, main
from jobwire.client.target import API_KEY_ENV, DEFAULT_URL, URL_ENV
from tests.support import scaled
from tests.up_support import clean_env

JOBWIRE = Path(sys.executable).parent / "jobwire"


def _jobwire(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(JOBWIRE), *args],
        env=clean_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=scaled(20),
        check=False,
    )


def test_version_is_the_installed_distributions() -> None:
    done = _jobwire("--version")

    assert done.returncode == 0, done.stderr
    assert done.stdout == f"jobwire {version('jobwire')}\n"


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["submit", "demo.countdown", "--url", "127.0.0.1:8000"], {}),
        (["watch", "0123abcd", "--url", "127.0.0.1:8000"], {}),
        (["watch", "0123abcd"], {URL_ENV: "127.0.0.1:8000"}),
    ],
)
def test_a_gateway_url_without_a_scheme_is_a_one_line_usage_error(
    args: list[str], env: dict[str, str]
) -> None:
    done = _jobwire(*args, **env)

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("jobwire: the gateway URL must start with http://")
    assert "did you mean http://127.0.0.1:8000?" in done.stderr


@pytest.mark.parametrize("command", ["submit", "watch"])
def test_the_help_names_the_client_settings_and_the_bound_on_waiting(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])

    assert exited.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps its lines
    assert f"${URL_ENV}, else {DEFAULT_URL}" in help_text
    assert f"${API_KEY_ENV}" in help_text
    assert "--give-up-after SECONDS" in help_text
    assert f"(default: {DEFAULT_GIVE_UP_AFTER_S:g}; 0: never)" in help_text


@pytest.mark.parametrize("value", ["-1", "soon", "nan", "inf"])
def test_a_bound_on_waiting_must_be_a_number_of_seconds(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["watch", "0123abcd", "--give-up-after", value])

    assert exited.value.code == 2
    assert f"not a number of seconds: {value!r}" in capsys.readouterr().err
