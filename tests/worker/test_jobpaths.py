"""Job paths: `module:attribute` names a JobRegistry for `jobwire worker`, `jobwire up`,
`JOBWIRE_JOBS` and arq's own CLI; a wrong one is one line on stderr, not a traceback."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from redis.asyncio import Redis

from shared.catalog import load_catalog
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import StartGateway
from tests.support import collect_events, event_types, free_port, scaled, submit, wait_until
from tests.up_support import clean_env, running
from worker import demo
from worker.jobpaths import JobImportError, JobPathError, load_registries, load_registry

pytestmark = pytest.mark.timeout(60)

BIN = Path(sys.executable).parent
JOB_NAME = "mine.greet"
USER_MODULE = f"""
from jobwire import JobRegistry, Progress

jobs = JobRegistry()
also = JobRegistry()
number = 3


class Holder:
    inner = jobs


def helper() -> None:
    pass


@jobs.job("{JOB_NAME}")
async def greet(progress: Progress, who: str, times: int = 2) -> dict[str, str]:
    for done in range(1, times + 1):
        await progress.update(current=done, total=times)
    return {{"greeting": f"hello {{who}}"}}


@also.job("{JOB_NAME}")
async def greet_again(progress: Progress) -> None:
    pass
"""


@dataclass(frozen=True)
class UserProject:
    """A folder holding a job module of its own, named for this test alone."""

    folder: Path
    module: str


@pytest.fixture
def project(tmp_path: Path) -> UserProject:
    module = f"userjobs_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(USER_MODULE)
    (tmp_path / f"broken_{module}.py").write_text("import no_such_dependency_zz\n")
    # A project's own `worker.py` beside its jobs must not take the place of Jobwire's worker.
    (tmp_path / "worker.py").write_text("raise RuntimeError('the folder's worker.py ran')\n")
    return UserProject(tmp_path, module)


@pytest.fixture
def importable(project: UserProject, monkeypatch: pytest.MonkeyPatch) -> Iterator[UserProject]:
    monkeypatch.syspath_prepend(str(project.folder))
    yield project
    for name in (project.module, f"broken_{project.module}"):
        sys.modules.pop(name, None)


def test_a_path_names_a_registry_in_a_module(importable: UserProject) -> None:
    registry = load_registry(f"{importable.module}:jobs")

    assert [spec["name"] for spec in registry.specs()] == [JOB_NAME]
    assert load_registry(f"{importable.module}:Holder.inner") is registry


def test_each_registry_is_loaded_once_and_no_path_means_the_demo_jobs(
    importable: UserProject,
) -> None:
    path = f"{importable.module}:jobs"

    assert load_registries([]) == [demo.jobs]
    registries = load_registries([path, "worker.demo:jobs", f"{importable.module}:Holder.inner"])
    assert registries == [load_registry(path), demo.jobs]


def test_one_job_name_in_two_registries_is_refused(importable: UserProject) -> None:
    module = importable.module

    with pytest.raises(JobPathError) as refused:
        load_registries([f"{module}:jobs", f"{module}:also"])

    assert str(refused.value) == (
        f"job {JOB_NAME!r} is registered by both '{module}:jobs' and '{module}:also'"
    )


def test_an_import_failing_inside_the_module_is_not_a_missing_module(
    importable: UserProject,
) -> None:
    with pytest.raises(JobImportError) as failed:
        load_registry(f"broken_{importable.module}:jobs")

    assert str(failed.value) == (
        f"importing 'broken_{importable.module}' failed: ModuleNotFoundError: "
        "No module named 'no_such_dependency_zz'"
    )


def _wrong_paths(module: str) -> list[tuple[str, str]]:
    """(path, what `jobwire` says about it) for each way a path can name no registry."""
    not_a_path = "is not module:attribute (such as myapp.jobs:jobs, a JobRegistry named `jobs`"
    return [
        (module, f"job path {module!r} {not_a_path}"),
        (f"{module}:", f"job path '{module}:' {not_a_path}"),
        ("nosuch_module_zz:jobs", "job path 'nosuch_module_zz:jobs': module 'nosuch_module_zz'"
         " not found (looked in the working directory and the installed packages)"),
        (f"{module}.sub:jobs", f"job path '{module}.sub:jobs': module '{module}.sub' not found"),
        (f"{module}:nope", f"job path '{module}:nope': module {module!r} has no attribute 'nope'"),
        (f"{module}:number", f"job path '{module}:number': 'number' is of type int,"
         " not a JobRegistry"),
        (f"{module}:helper", f"job path '{module}:helper': 'helper' is of type function,"
         " not a JobRegistry"),
        (f"{module}:Holder", f"job path '{module}:Holder': 'Holder' is the class Holder,"
         " not a JobRegistry"),
    ]  # fmt: skip


def test_every_wrong_path_says_what_was_not_found(importable: UserProject) -> None:
    for path, message in _wrong_paths(importable.module):
        with pytest.raises(JobPathError) as refused:
            load_registry(path)
        assert str(refused.value).startswith(message), path


def _jobwire(
    project: UserProject, *args: str, **jobwire_env: str
) -> subprocess.CompletedProcess[str]:
    # Nothing listens there: a path taken by mistake fails fast instead of serving jobs.
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    return subprocess.run(
        [str(BIN / "jobwire"), *args],
        cwd=project.folder,
        env=clean_env(JOBWIRE_REDIS_URL=nowhere, **jobwire_env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=scaled(30),
        check=False,
    )


def test_a_wrong_path_is_one_line_and_exit_code_2_before_anything_starts(
    project: UserProject,
) -> None:
    for path, message in _wrong_paths(project.module)[:5]:
        for command in ("worker", "up"):
            done = _jobwire(project, command, f"{project.module}:jobs", path)
            assert (done.returncode, done.stdout) == (2, ""), (command, path, done.stderr)
            assert done.stderr.startswith(f"jobwire: {message}"), (command, path)
            assert done.stderr.count("\n") == 1, done.stderr


def test_the_settings_wrong_path_and_a_failing_import_are_one_line_each(
    project: UserProject,
) -> None:
    from_setting = _jobwire(project, "worker", JOBWIRE_JOBS=f"{project.module}:nope")
    broken = _jobwire(project, "worker", f"broken_{project.module}:jobs")

    assert (from_setting.returncode, from_setting.stdout) == (2, "")
    assert from_setting.stderr == (
        f"jobwire: JOBWIRE_JOBS: job path '{project.module}:nope': module"
        f" {project.module!r} has no attribute 'nope'\n"
    )
    # The path is right, the module's code is not: said as such, and no usage error.
    assert (broken.returncode, broken.stdout) == (1, "")
    assert broken.stderr == (
        f"jobwire: importing 'broken_{project.module}' failed: ModuleNotFoundError:"
        " No module named 'no_such_dependency_zz'\n"
    )


@pytest.mark.parametrize(
    "how", ["jobwire worker PATH", "jobwire worker + JOBWIRE_JOBS", "arq + JOBWIRE_JOBS"]
)
async def test_a_worker_process_runs_the_jobs_of_a_module_in_its_working_directory(
    how: str,
    project: UserProject,
    settings: Settings,
    redis: Redis,
    start_gateway: StartGateway,
) -> None:
    path = f"{project.module}:jobs"
    env = clean_env(**settings.to_env())
    argv = {
        # The command line's paths win over the setting's.
        "jobwire worker PATH": [str(BIN / "jobwire"), "worker", path],
        "jobwire worker + JOBWIRE_JOBS": [str(BIN / "jobwire"), "worker"],
        "arq + JOBWIRE_JOBS": [str(BIN / "arq"), "worker.main.WorkerSettings"],
    }[how]
    env["JOBWIRE_JOBS"] = "nosuch_module_zz:jobs" if how == "jobwire worker PATH" else path
    gateway = await start_gateway()
    keys = Keys(settings.key_prefix)

    if how.startswith("arq"):
        # arq's CLI appends the folder to the path: in an editable install (this one), whose
        # finder comes after the path's, a `worker.py` there would be found before ours.
        (project.folder / "worker.py").unlink()

    async with running(argv, env, project.folder) as process:

        async def advertised() -> bool:
            if process.returncode is not None:
                assert process.stdout is not None
                raise AssertionError((await process.stdout.read()).decode())
            return list(await load_catalog(redis, keys)) == [JOB_NAME]

        await wait_until(advertised, timeout=scaled(20), message="the worker's jobs advertised")
        async with gateway.client() as client:
            job_id = await submit(client, JOB_NAME, who="you", times=2)
            events = await collect_events(client, job_id)

    assert event_types(events) == ["queued", "started", "progress", "progress", "completed"]
    assert events[-1].json()["data"]["result"] == {"greeting": "hello you"}
