"""docker-compose.yml, the Dockerfile and .ci/run name commands and settings that exist.

No Docker engine is needed: the files are parsed, every command they run is checked against
the real entry points, and the healthcheck scripts are run here against a real Redis and a
real gateway.
"""

from __future__ import annotations

import asyncio
import fnmatch
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from redis.asyncio import Redis

from gateway.endpoints.tokens import Access
from jobwire import cli
from shared.catalog import ALIVE_WITHIN_S, count_alive, mark_alive
from shared.keys import Keys
from shared.settings import Settings, env_names
from tests.conftest import RunWorker, StartGateway
from tests.support import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# What `docker compose up` runs; the `monitoring` profile's are tests/test_monitoring.py's.
CORE = sorted(name for name, service in SERVICES.items() if "profiles" not in service)
PYPROJECT: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(arg) for arg in command]


# What an operator exports before `docker compose up` (the compose file demands both).
DEPLOY_ENV = {
    "JOBWIRE_API_KEYS": "app:" + "k" * 32,
    "JOBWIRE_TOKEN_SECRET": "s" * 48,
}
_VARIABLE = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[?-])(?P<arg>[^}]*))?\}")


class MissingVariable(LookupError):
    """A `${NAME:?message}` whose NAME is unset: compose refuses to start with the message."""


def _interpolate(value: str, env: dict[str, str]) -> str:
    """`value` as compose substitutes `${NAME}`, `${NAME:-default}` and `${NAME:?error}`."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        found = env.get(name)
        unset = found is None or (found == "" and op is not None and op.startswith(":"))
        if unset and op is not None and op.endswith("?"):
            raise MissingVariable(f"{name}: {arg}")
        if unset and op is not None:
            return arg
        return found or ""

    return _VARIABLE.sub(substitute, value.replace("$$", "\x00")).replace("\x00", "$")


def _environment(
    service: dict[str, Any], deploy_env: dict[str, str] | None = None
) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    outer = DEPLOY_ENV if deploy_env is None else deploy_env
    return {name: _interpolate(str(value), outer) for name, value in env.items()}


def _assert_entry_point(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`argv` starts a program this project installs, with a subcommand it accepts."""
    if argv[:2] == ["python", "-m"]:
        assert importlib.util.find_spec(f"{argv[2]}.__main__") is not None, argv
        return
    assert argv[0] in PYPROJECT["project"]["scripts"], argv
    assert PYPROJECT["project"]["scripts"][argv[0]] == "jobwire.cli:main"
    assert argv[1] in cli.COMMANDS, argv
    with pytest.raises(SystemExit) as exited:
        cli.main([*argv[1:], "--help"])
    assert exited.value.code == 0
    assert f"jobwire {argv[1]}" in capsys.readouterr().out


def _dockerfile_instructions(path: Path = ROOT / "Dockerfile") -> list[tuple[str, str]]:
    text = path.read_text().replace("\\\n", " ")
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


_SERVICES_WITH_COMMAND = sorted(name for name, svc in SERVICES.items() if "command" in svc)


def test_compose_has_the_three_services() -> None:
    assert set(CORE) == {"redis", "gateway", "worker"}
    assert SERVICES["gateway"]["command"] == ["jobwire", "gateway"]
    assert SERVICES["worker"]["command"] == ["jobwire", "worker"]


@pytest.mark.parametrize("name", [n for n in _SERVICES_WITH_COMMAND if n != "redis"])
def test_service_command_is_a_real_entry_point(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _assert_entry_point(_argv(SERVICES[name]["command"]), capsys)


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_service_settings_exist_and_are_valid(name: str) -> None:
    env = _environment(SERVICES[name])
    jobwire = {key: value for key, value in env.items() if key.startswith("JOBWIRE_")}

    assert set(jobwire) <= set(env_names())
    Settings.from_env(jobwire)


@pytest.mark.parametrize("name", ["gateway", "worker"])
def test_jobwire_services_use_the_compose_redis(name: str) -> None:
    service = SERVICES[name]
    settings = Settings.from_env(_environment(service))

    assert settings.events_redis_url == "redis://redis:6379/0"
    assert settings.arq_redis_url == "redis://redis:6379/0"
    assert service["build"] == "."
    assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_gateway_checks_keys_from_the_environment_and_refuses_to_start_without_them() -> None:
    gateway = SERVICES["gateway"]
    settings = Settings.from_env(_environment(gateway))

    assert settings.auth_enabled
    assert settings.api_keys == DEPLOY_ENV["JOBWIRE_API_KEYS"]
    assert settings.token_secret == DEPLOY_ENV["JOBWIRE_TOKEN_SECRET"]
    Access.from_settings(settings)  # the gateway starts with them
    for name in DEPLOY_ENV:
        without = {other: value for other, value in DEPLOY_ENV.items() if other != name}
        with pytest.raises(MissingVariable, match=name):
            _environment(gateway, without)
        with pytest.raises(MissingVariable, match=name):
            _environment(gateway, {**without, name: ""})


def test_no_secret_is_written_in_the_compose_file() -> None:
    for service in SERVICES.values():
        for name, value in service.get("environment", {}).items():
            if name in DEPLOY_ENV:
                assert str(value).startswith(f"${{{name}:?"), (name, value)


def test_gateway_listens_on_all_interfaces_on_its_published_port() -> None:
    gateway = SERVICES["gateway"]
    settings = Settings.from_env(_environment(gateway))

    assert settings.host == "0.0.0.0"
    assert gateway["ports"] == [f"{settings.port}:{settings.port}"]


def test_worker_can_be_scaled() -> None:
    worker = SERVICES["worker"]

    assert "container_name" not in worker
    assert "ports" not in worker
    assert "hostname" not in worker


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = SERVICES["redis"]
    argv = _argv(redis["command"])

    assert redis["image"].startswith("redis:7")
    assert argv[0] == "redis-server"
    assert argv[argv.index("--appendonly") + 1] == "yes"
    volume = redis["volumes"][0].split(":")
    assert volume[1] == "/data"
    assert volume[0] in COMPOSE["volumes"]
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


@pytest.mark.parametrize("name", CORE)
def test_every_service_has_a_healthcheck(name: str) -> None:
    test = SERVICES[name]["healthcheck"]["test"]

    assert test[0] == "CMD"
    assert len(test) > 1


def _healthcheck_script(name: str) -> str:
    test = SERVICES[name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    script: str = test[3]
    return script


def _child_env(**jobwire: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBWIRE_")}
    return env | jobwire


async def _run_python(script: str, env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        script,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), timeout=30)


async def test_gateway_healthcheck_passes_against_a_running_gateway(
    start_gateway: StartGateway,
) -> None:
    script = _healthcheck_script("gateway")
    assert "http://127.0.0.1:8000/healthz" in script
    gateway = await start_gateway()

    running = script.replace("http://127.0.0.1:8000", gateway.url)
    nothing = script.replace("http://127.0.0.1:8000", f"http://127.0.0.1:{free_port()}")

    assert await _run_python(running, _child_env()) == 0
    assert await _run_python(nothing, _child_env()) != 0


async def test_worker_healthcheck_passes_once_a_worker_on_this_host_is_alive(
    redis: Redis, settings: Settings, start_worker: RunWorker
) -> None:
    script = _healthcheck_script("worker")
    keys = Keys(settings.key_prefix)
    env = _child_env(
        JOBWIRE_REDIS_URL=settings.events_redis_url, JOBWIRE_KEY_PREFIX=settings.key_prefix
    )

    assert await _run_python(script, env) != 0
    await mark_alive(redis, keys, "some-other-host-1-abcdef")
    assert await _run_python(script, env) != 0

    await start_worker()

    async def this_worker_is_alive() -> bool:
        return await count_alive(redis, keys, ALIVE_WITHIN_S) == 2

    await wait_until(this_worker_is_alive, message="the worker marks itself alive")
    assert await _run_python(script, env) == 0


def test_dockerfile_runs_a_real_entry_point_as_a_non_root_user(
    capsys: pytest.CaptureFixture[str],
) -> None:
    instructions = _dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    last = dict(instructions)

    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert "ENTRYPOINT" not in keywords
    _assert_entry_point(json.loads(last["CMD"]), capsys)
    assert "EXPOSE" not in keywords  # one image runs workers too: compose exposes the gateway
    assert last["USER"] not in ("root", "0")
    assert keywords.index("USER") < keywords.index("CMD")
    installs = [
        rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest
    ]
    assert len(installs) == 1
    assert re.search(r"pip install \.(\s|$)", installs[0]), installs[0]
    assert "pip install --require-hashes -r requirements.lock" in installs[0]
    assert "[dev]" not in installs[0]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_an_init_and_rotated_logs(name: str) -> None:
    service = SERVICES[name]

    assert service["init"] is True
    assert service["logging"] == {
        "driver": "json-file",
        "options": {"max-size": "10m", "max-file": "3"},
    }


def test_only_the_gateway_exposes_its_port() -> None:
    assert SERVICES["gateway"]["expose"] == ["8000"]
    assert "expose" not in SERVICES["worker"]
    assert "ports" not in SERVICES["worker"]


def test_the_image_installs_the_locked_releases_of_every_dependency() -> None:
    """requirements.lock (pip-compile, hashed) pins every dependency pyproject.toml names, at a
    release its bounds allow: regenerate it with the command in its header when they change."""
    lock = (ROOT / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, re.MULTILINE))
    pinned = {canonicalize_name(name): Version(release) for name, release in pinned.items()}
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} is not in requirements.lock"
        assert pinned[name] in requirement.specifier, f"requirements.lock: {name} {pinned[name]}"
    assert lock.count("--hash=sha256:") >= len(pinned)
    assert ("COPY", "pyproject.toml README.md requirements.lock ./") in _dockerfile_instructions()


def test_local_secrets_and_clutter_stay_out_of_git_and_the_image() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    context = (ROOT / ".dockerignore").read_text().splitlines()

    assert ".env" in ignored
    assert {".env", ".venv", ".git", "test-artifacts", "tests"} <= set(context)


def test_dockerfile_copies_every_package() -> None:
    copied = {
        source
        for keyword, rest in _dockerfile_instructions()
        if keyword == "COPY"
        for source in rest.split()[:-1]
    }
    packages = {
        pattern.rstrip("*")
        for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }

    assert packages <= copied
    assert {"pyproject.toml", "README.md"} <= copied


def test_package_data_covers_every_non_python_file() -> None:
    """`pip install .` (the image) ships only .py files and the declared package data."""
    package_data: dict[str, list[str]] = PYPROJECT["tool"]["setuptools"]["package-data"]
    missing = []
    for package in ("jobwire", "shared", "worker", "gateway"):
        for path in (ROOT / package).rglob("*"):
            if not path.is_file() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            relative = path.relative_to(ROOT / package).as_posix()
            patterns = package_data.get(package, [])
            if not any(fnmatch.fnmatch(relative, pattern) for pattern in patterns):
                missing.append(f"{package}/{relative}")

    assert missing == []


def test_readme_shows_the_ci_test_command() -> None:
    match = re.search(r'^TEST_COMMAND="([^"]+)"$', (ROOT / ".ci/run").read_text(), re.MULTILINE)

    assert match is not None
    assert match[1] == ".venv/bin/pytest"
    assert match[1] in (ROOT / "README.md").read_text().splitlines()


def test_ci_script_is_executable_bash() -> None:
    script = ROOT / ".ci/run"

    assert os.access(script, os.X_OK)
    assert script.read_text().startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in script.read_text()
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in env_names() if f"`{name}`" not in readme]
    assert missing == []


# The example's recipe: an image with the job package on top of the Jobwire image, and a compose
# file laid over docker-compose.yml whose workers run it.
EXAMPLE = ROOT / "examples" / "wordcount"
EXAMPLE_COMPOSE: dict[str, Any] = yaml.safe_load((EXAMPLE / "compose.yml").read_text())
EXAMPLE_INSTRUCTIONS = _dockerfile_instructions(EXAMPLE / "Dockerfile")


def _example_image_jobs(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The job paths the example image's CMD runs, checked to be a real entry point."""
    argv = json.loads(dict(EXAMPLE_INSTRUCTIONS)["CMD"])
    _assert_entry_point(argv, capsys)
    assert argv[:2] == ["jobwire", "worker"]
    return [str(path) for path in argv[2:]]


def test_the_example_compose_file_changes_only_the_workers_image_and_jobs() -> None:
    worker = EXAMPLE_COMPOSE["services"]["worker"]

    assert set(EXAMPLE_COMPOSE["services"]) == {"worker"}
    # Paths in a compose file laid over another are read from the first one's folder.
    assert worker["build"] == {"context": ".", "dockerfile": "examples/wordcount/Dockerfile"}
    assert (ROOT / worker["build"]["dockerfile"]).is_file()
    env = _environment(worker)
    assert set(env) <= set(env_names())
    merged = Settings.from_env(_environment(SERVICES["worker"]) | env)
    assert merged.job_paths == ["examples.wordcount.jobs:jobs"]
    assert merged.events_redis_url == "redis://redis:6379/0"


def test_the_example_jobs_load_as_the_image_and_compose_name_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from examples.wordcount import jobs
    from worker.jobpaths import load_registries

    paths = _example_image_jobs(capsys)
    setting = Settings.from_env(_environment(EXAMPLE_COMPOSE["services"]["worker"]))

    assert paths == setting.job_paths
    assert load_registries(paths) == [jobs.jobs]
    # The base file's worker command runs whatever JOBWIRE_JOBS names.
    assert _argv(SERVICES["worker"]["command"]) == ["jobwire", "worker"]


def test_the_example_image_builds_on_the_jobwire_image_the_readme_builds() -> None:
    readme = (ROOT / "README.md").read_text()
    keywords = [keyword for keyword, _ in EXAMPLE_INSTRUCTIONS]

    assert EXAMPLE_INSTRUCTIONS[:2] == [
        ("ARG", "JOBWIRE_IMAGE=jobwire"),
        ("FROM", "${JOBWIRE_IMAGE}"),
    ]
    assert "docker build -t jobwire ." in readme
    assert "docker compose -f docker-compose.yml -f examples/wordcount/compose.yml up --build" in (
        readme
    )
    # The base image's user and working directory stay: no USER, WORKDIR or RUN as root.
    assert not {"USER", "WORKDIR", "RUN", "ENTRYPOINT"} & set(keywords)


def test_the_example_image_holds_the_package_where_its_worker_imports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The COPY instructions replayed into a folder standing for the image's working
    directory: its worker, started there with nothing else of the checkout on its path,
    finds the job package."""
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    for keyword, rest in EXAMPLE_INSTRUCTIONS:
        if keyword != "COPY":
            continue
        *sources, destination = rest.split()
        assert re.fullmatch(r"\./[\w/]+/", destination), destination
        for source in sources:
            assert (ROOT / source).is_file(), source
            assert not any(fnmatch.fnmatch(source, pattern) for pattern in ignored), source
            target = tmp_path / destination / Path(source).name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes((ROOT / source).read_bytes())
    copied = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*.py")}
    package = {path.relative_to(ROOT).as_posix() for path in EXAMPLE.rglob("*.py")}
    assert copied == package | {"examples/__init__.py"}
    check = (
        "from worker.jobpaths import import_from_working_directory, load_registries\n"
        "import_from_working_directory()\n"
        f"load_registries({_example_image_jobs(capsys)!r})\n"
        "import examples\n"
        "print(examples.__file__)\n"
    )
    found = subprocess.run(
        [sys.executable, "-P", "-c", check],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[-1] == str(tmp_path / "examples" / "__init__.py")
