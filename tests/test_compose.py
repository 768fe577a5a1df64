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
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from bench import balancer as balancer_config
from gateway.endpoints.tokens import Access
from jobwire import cli
from shared.catalog import ALIVE_WITHIN_S, count_alive, mark_alive
from shared.events import now_ms
from shared.keys import Keys
from shared.settings import Settings, env_names
from tests.conftest import RunWorker, StartGateway
from tests.support import free_port, scaled, wait_until

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


# Services running this repository's image (the others run Redis, HAProxy, Prometheus...).
_JOBWIRE_SERVICES = sorted(name for name, svc in SERVICES.items() if svc.get("build") == ".")


def test_compose_has_the_three_services() -> None:
    assert set(CORE) == {"redis", "gateway", "worker"}
    assert SERVICES["gateway"]["command"] == ["jobwire", "gateway"]
    assert SERVICES["worker"]["command"] == ["jobwire", "worker"]


@pytest.mark.parametrize("name", _JOBWIRE_SERVICES)
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


@pytest.mark.parametrize("name", ["gateway", "cluster-gateway"])
def test_gateway_checks_keys_from_the_environment_and_refuses_to_start_without_them(
    name: str,
) -> None:
    gateway = SERVICES[name]
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


# `docker compose --profile cluster up`: the events on a Redis Cluster, the queue on one Redis,
# gateway replicas behind HAProxy (balancer/).
CLUSTER = sorted(
    name for name, service in SERVICES.items() if "cluster" in service.get("profiles", [])
)
_NODES = [f"redis-node-{index}" for index in range(1, 7)]
_REDIS_URLS = ("JOBWIRE_REDIS_URL", "JOBWIRE_QUEUE_REDIS_URL")


def test_the_cluster_profile_runs_its_own_stack_only_when_asked() -> None:
    assert set(CLUSTER) == {
        *_NODES,
        "redis-cluster-init",
        "queue-redis",
        "cluster-gateway",
        "cluster-worker",
        "balancer",
    }
    assert all(SERVICES[name]["profiles"] == ["cluster"] for name in CLUSTER)
    # Only the balancer is published; the gateways are reached through it.
    published = [name for name in CLUSTER if "ports" in SERVICES[name]]
    assert published == ["balancer"]


@pytest.mark.parametrize("name", ["cluster-gateway", "cluster-worker"])
def test_cluster_services_keep_the_events_on_the_cluster_and_the_queue_on_one_redis(
    name: str,
) -> None:
    service = SERVICES[name]
    single = SERVICES[name.removeprefix("cluster-")]
    env = _environment(service)
    settings = Settings.from_env(env)

    assert settings.events_redis_url == "redis+cluster://redis-node-1:6379"
    assert settings.arq_redis_url == "redis://queue-redis:6379/0"
    # Otherwise what the single-Redis service runs, with the same settings and checks.
    assert (service["build"], service["command"]) == (single["build"], single["command"])
    assert service["healthcheck"] == single["healthcheck"]
    without_redis = {key: value for key, value in env.items() if key not in _REDIS_URLS}
    assert without_redis == {k: v for k, v in _environment(single).items() if k not in _REDIS_URLS}
    assert service["deploy"]["replicas"] >= 2
    assert "ports" not in service
    assert "container_name" not in service
    assert service["depends_on"] == {
        "redis-cluster-init": {"condition": "service_completed_successfully"},
        "queue-redis": {"condition": "service_healthy"},
    }


def test_the_cluster_init_waits_for_every_node() -> None:
    init = SERVICES["redis-cluster-init"]

    assert init["depends_on"] == {node: {"condition": "service_healthy"} for node in _NODES}
    assert init["restart"] == "no"
    for node in _NODES:
        argv = _argv(SERVICES[node]["command"])
        assert argv[argv.index("--cluster-enabled") + 1] == "yes"
        assert SERVICES[node]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def _compose_node_command(port: int, data_dir: Path) -> list[str]:
    """A cluster node's compose command, on a loopback port with its files in `data_dir`."""
    binary = shutil.which("redis-server")
    assert binary is not None
    argv = _argv(SERVICES["redis-node-1"]["command"])
    assert argv[0] == "redis-server"
    # A bus port of its own: the default, port + 10000, is past 65535 for half the free ports.
    return [binary, *argv[1:], "--port", str(port), "--cluster-port", str(free_port()),
            "--bind", "127.0.0.1", "--dir", str(data_dir), "--save", ""]  # fmt: skip


@pytest.fixture
async def compose_cluster_nodes(tmp_path: Path) -> AsyncIterator[list[int]]:
    """Six Redis nodes started with the compose file's command, not yet joined."""
    ports = [free_port() for _ in _NODES]
    nodes = []
    for port in ports:
        (tmp_path / str(port)).mkdir()
        command = _compose_node_command(port, tmp_path / str(port))
        nodes.append(
            await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.DEVNULL)
        )
    clients = [Redis(port=port) for port in ports]
    try:
        for client in clients:
            await wait_until(_answers(client), message="a cluster node up")
        yield ports
    finally:
        for client in clients:
            await client.aclose()
        for node in nodes:
            node.terminate()
        await asyncio.wait_for(asyncio.gather(*(node.wait() for node in nodes)), scaled(10))


def _answers(client: Redis) -> Callable[[], Awaitable[bool]]:
    async def ping() -> bool:
        try:
            return bool(await client.ping())
        except RedisConnectionError:
            return False

    return ping


async def _run_sh(script: str) -> int:
    process = await asyncio.create_subprocess_exec(
        "sh", "-c", script, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(process.wait(), timeout=scaled(60))


async def _roles(ports: list[int]) -> list[str]:
    """What each node says it is: `master` or `slave`."""
    roles = []
    for port in ports:
        client = Redis(port=port)
        try:
            replication = await client.info("replication")
        finally:
            await client.aclose()
        roles.append(str(replication["role"]))
    return roles


async def _cluster_id(port: int) -> str:
    client = Redis(port=port)
    try:
        node_id = await client.cluster("MYID")
    finally:
        await client.aclose()
    assert isinstance(node_id, bytes)
    return node_id.decode()


async def test_the_cluster_init_joins_three_masters_with_a_replica_each_once(
    compose_cluster_nodes: list[int], settings: Settings
) -> None:
    """The init script as compose runs it, node names swapped for loopback ports; then the
    worker healthcheck against the cluster it made."""
    ports = compose_cluster_nodes
    script = SERVICES["redis-cluster-init"]["command"][2]
    for node, port in zip(_NODES, ports, strict=True):
        script = script.replace(f"{node}:6379", f"127.0.0.1:{port}")
    script = script.replace("-h redis-node-1", f"-h 127.0.0.1 -p {ports[0]}")
    assert "redis-node" not in script

    assert await _run_sh(script) == 0
    roles = await _roles(ports)
    assert sorted(roles) == ["master"] * 3 + ["slave"] * 3
    ids = [await _cluster_id(port) for port in ports]
    # Run again (a restarted stack): the cluster is left as it is.
    assert await _run_sh(script) == 0
    assert await _roles(ports) == roles
    assert [await _cluster_id(port) for port in ports] == ids

    worker_check = _healthcheck_script("cluster-worker")
    env = _child_env(
        JOBWIRE_REDIS_URL=f"redis+cluster://127.0.0.1:{ports[0]}",
        JOBWIRE_QUEUE_REDIS_URL=settings.arq_redis_url,
        JOBWIRE_KEY_PREFIX=settings.key_prefix,
    )
    assert await _run_python(worker_check, env) != 0
    cluster = RedisCluster(host="127.0.0.1", port=ports[0])
    try:
        worker_id = f"{socket.gethostname()}-1-abcdef"
        await cluster.zadd(Keys(settings.key_prefix).workers(), {worker_id: now_ms()})
    finally:
        await cluster.aclose()
    assert await _run_python(worker_check, env) == 0


def _haproxy_seconds(value: str) -> float:
    """An HAProxy time (`500ms`, `2s`, `1m`, `1h`; bare numbers are milliseconds)."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 0.001}[unit]


def _balancer_files() -> list[Path]:
    """The files the balancer service loads (`-f`), as they are in this repository."""
    balancer = SERVICES["balancer"]
    mounts = {}
    for volume in balancer["volumes"]:
        source, target = volume.split(":")[:2]
        mounts[target] = ROOT / source
    argv = _argv(balancer["command"])
    loaded = [Path(argv[index + 1]) for index, arg in enumerate(argv) if arg == "-f"]
    return [mounts[str(path.parent)] / path.name for path in loaded]


def test_the_balancer_runs_the_tested_config_in_front_of_every_cluster_gateway() -> None:
    balancer = SERVICES["balancer"]
    shared, gateways = _balancer_files()
    # The file tests/faults/test_balancer.py and the bench run HAProxy with.
    assert shared == balancer_config.CONFIG
    template = [line.split() for line in gateways.read_text().splitlines()]
    (servers,) = [line for line in template if line[:1] == ["server-template"]]
    count, address = int(servers[2]), servers[3]
    gateway = SERVICES["cluster-gateway"]
    assert address == f"cluster-gateway:{_environment(gateway)['JOBWIRE_PORT']}"
    assert count >= gateway["deploy"]["replicas"]
    bind = balancer["environment"]["BALANCER_BIND"]
    assert balancer["ports"] == [f"{bind.rsplit(':')[1]}:{bind.rsplit(':')[1]}"]
    assert balancer["depends_on"] == ["cluster-gateway"]


def test_the_balancer_config_is_valid_for_the_haproxy_release_compose_runs() -> None:
    haproxy = balancer_config.find_haproxy()
    release = re.search(
        r"version (\d+\.\d+)",
        subprocess.run([haproxy, "-v"], capture_output=True, text=True, check=True).stdout,
    )
    assert release is not None
    assert SERVICES["balancer"]["image"] == f"haproxy:{release[1]}"
    command = [haproxy, "-c", "-q"]
    for path in _balancer_files():
        command += ["-f", str(path)]
    env = {**os.environ, **SERVICES["balancer"]["environment"]}
    checked = subprocess.run(command, env=env, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_the_balancer_keeps_quiet_event_streams_open_and_checks_readiness() -> None:
    lines = [line.split() for line in balancer_config.CONFIG.read_text().splitlines()]
    options = {tuple(line[:2]): line[2:] for line in lines if line}
    ping_s = Settings().ping_s
    # A stream carries a ping every JOBWIRE_PING_S at least: twice that is never cut.
    for side in ("client", "server"):
        assert _haproxy_seconds(options[("timeout", side)][0]) >= 2 * ping_s
    assert options[("option", "httpchk")] == ["GET", "/readyz"]
    assert ("option", "redispatch") in options
    assert ("option", "forwardfor") in options
    assert options[("balance", "leastconn")] == []
