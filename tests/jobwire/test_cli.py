"""The `jobwire` command's own surface: its help texts, and command lines it refuses in one
line (a gateway URL without a scheme)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobwire.cli import main
from jobwire.client.target import API_KEY_ENV, DEFAULT_URL, URL_ENV
from tests.support import scaled

JOBWIRE = Path(sys.executable).parent / "jobwire"


def _jobwire(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("JOBWIRE_")}
    return subprocess.run(
        [str(JOBWIRE), *args],
        env=clean | env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=scaled(20),
        check=False,
    )


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
def test_the_help_names_the_client_settings(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])

    assert exited.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps its lines
    assert f"${URL_ENV}, else {DEFAULT_URL}" in help_text
    assert f"${API_KEY_ENV}" in help_text
