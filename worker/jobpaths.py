"""Job paths: the `module:attribute` strings naming the `JobRegistry` objects a worker runs,
as `uvicorn app:app` names its app (`jobwire worker myapp.jobs:jobs`, `JOBWIRE_JOBS`).

A path that names nothing raises `JobPathError`, whose message is the one line to show: the
module was not found, it has no such attribute, the attribute is not a `JobRegistry`, or the
path is not `module:attribute`. A module that is found but fails to import because of an
import of its own raises `JobImportError`, naming the module and its error: the path is
right, the code behind it is not. Any other exception from the user's module is theirs, and
propagates with its traceback (it points at their line).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from worker import demo
from worker.registry import JobRegistry

__all__ = [
    "JobImportError",
    "JobPathError",
    "import_from_working_directory",
    "load_registries",
    "load_registry",
]

_EXAMPLE = "myapp.jobs:jobs"


class JobPathError(ValueError):
    """A job path that names no `JobRegistry`."""


class JobImportError(ImportError):
    """A job path's module exists, but importing it failed on an import of its own."""


def import_from_working_directory() -> None:
    """Makes the modules of the working directory importable, ahead of installed ones, as
    uvicorn does with its `--app-dir` (default `.`): a user runs `jobwire worker myjobs:jobs`
    from the folder holding `myjobs.py`."""
    here = os.getcwd()
    if here not in sys.path:
        sys.path.insert(0, here)


def load_registries(paths: Sequence[str]) -> list[JobRegistry]:
    """The registries `paths` name, each once; no path at all: the demo jobs."""
    if not paths:
        return [demo.jobs]
    registries: list[JobRegistry] = []
    owners: dict[str, str] = {}
    for path in paths:
        registry = load_registry(path)
        if any(registry is seen for seen in registries):
            continue
        for spec in registry.specs():
            if spec["name"] in owners:
                raise JobPathError(
                    f"job {spec['name']!r} is registered by both {owners[spec['name']]!r}"
                    f" and {path!r}"
                )
            owners[spec["name"]] = path
        registries.append(registry)
    return registries


def load_registry(path: str) -> JobRegistry:
    """The `JobRegistry` that `path` (`module:attribute`, the attribute possibly dotted)
    names."""
    module_name, _, attribute = path.partition(":")
    if not (_is_dotted_name(module_name) and _is_dotted_name(attribute)):
        raise JobPathError(
            f"job path {path!r} is not module:attribute (such as {_EXAMPLE}, a JobRegistry"
            " named `jobs` in the module myapp.jobs)"
        )
    found: object = _import(module_name, path)
    for name in attribute.split("."):
        try:
            found = getattr(found, name)
        except AttributeError:
            raise JobPathError(
                f"job path {path!r}: module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not isinstance(found, JobRegistry):
        raise JobPathError(f"job path {path!r}: {attribute!r} is {_kind(found)}, not a JobRegistry")
    return found


def _import(module_name: str, path: str) -> object:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and _names_the_module(exc.name, module_name):
            raise JobPathError(
                f"job path {path!r}: module {exc.name!r} not found (looked in the working"
                " directory and the installed packages)"
            ) from None
        raise _import_failed(module_name, exc) from None
    except ImportError as exc:
        raise _import_failed(module_name, exc) from None


def _names_the_module(missing: str, module_name: str) -> bool:
    """Whether the module found missing is the path's module or a package above it."""
    return module_name == missing or module_name.startswith(missing + ".")


def _import_failed(module_name: str, exc: ImportError) -> JobImportError:
    return JobImportError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}")


def _is_dotted_name(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def _kind(value: object) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    return f"of type {type(value).__name__}"
