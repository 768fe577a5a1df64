"""The uvicorn and Starlette internals the gateway relies on are still there.

pyproject.toml bounds both at the next minor release; this test is what to run when raising a
bound. Each contact point is listed in docs/architecture.md ("Where we rely on uvicorn and
Starlette internals"); a failure names the one that moved and the module of ours that uses it.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from importlib.metadata import version

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from tests.test_compose import PYPROJECT


@dataclass(frozen=True)
class Contact:
    user: str  # our module
    owner: str  # "module:Class" or "module:function" of theirs
    methods: tuple[str, ...] = ()  # defined on the class (ours override or call them)
    instance_attributes: tuple[str, ...] = ()  # set by its methods (`self.name = …`)

    def __str__(self) -> str:
        return f"{self.user} relies on {self.owner}"


CONTACTS = [
    Contact(
        "gateway/processes/protocol.py",
        "uvicorn.protocols.http.httptools_impl:HttpToolsProtocol",
        methods=(
            "on_message_begin",
            "on_url",
            "on_header",
            "on_headers_complete",
            "on_body",
            "on_message_complete",
            "on_response_complete",
            "data_received",
            "connection_made",
            "connection_lost",
            "send_400_response",
        ),
        instance_attributes=(
            "scope",
            "flow",
            "transport",
            "cycle",
            "server_state",
            "pipeline",
            "url",
            "headers",
            "parser",
            "loop",
            "logger",
            "access_log",
            "access_logger",
            "limit_concurrency",
            "root_path",
            "tasks",
        ),
    ),
    Contact("gateway/processes/protocol.py", "uvicorn.protocols.http.httptools_impl:STATUS_LINE"),
    Contact("gateway/processes/protocol.py", "uvicorn.protocols.utils:get_path_with_query_string"),
    Contact("gateway/processes/protocol.py", "uvicorn.protocols.utils:get_client_addr"),
    Contact(
        "gateway/processes/protocol.py",
        "uvicorn.middleware.proxy_headers:ProxyHeadersMiddleware",
        methods=("__call__",),
    ),
    Contact(
        "gateway/processes/server.py",
        "uvicorn.config:Config",
        instance_attributes=("proxy_headers", "forwarded_allow_ips"),
    ),
    Contact(
        "gateway/processes/protocol.py",
        "uvicorn.protocols.http.flow_control:FlowControl",
        methods=("drain", "pause_reading", "resume_reading", "pause_writing", "resume_writing"),
        instance_attributes=("_transport", "read_paused", "write_paused"),
    ),
    Contact("gateway/processes/protocol.py", "uvicorn.config:Config", methods=("load",)),
    Contact(
        "gateway/processes/protocol.py",
        "uvicorn.server:ServerState",
        instance_attributes=("connections", "tasks", "default_headers"),
    ),
    Contact(
        "gateway/processes/wsprotocol.py",
        "uvicorn.protocols.websockets.websockets_sansio_impl:WebSocketsSansIOProtocol",
        methods=(
            "connection_made",
            "connection_lost",
            "handle_connect",
            "pause_writing",
            "resume_writing",
            "send_receive_event_to_app",
            "send",
        ),
        instance_attributes=(
            "transport",
            "response",
            "scope",
            "frames",
            "handshake_complete",
            "connections",
        ),
    ),
    Contact(
        "gateway/processes/wsprotocol.py",
        "uvicorn.protocols.http.flow_control:FlowControl",
        methods=("pause_writing", "resume_writing"),
    ),
    Contact(
        "gateway/engine/connection.py",
        "uvicorn.protocols.http.flow_control:FlowControl",
        methods=("drain",),
        instance_attributes=("write_paused",),
    ),
    Contact(
        "gateway/processes/server.py",
        "uvicorn.server:Server",
        methods=("startup", "shutdown", "serve", "run"),
        instance_attributes=("server_state", "should_exit", "started"),
    ),
    Contact("gateway/processes/server.py", "uvicorn.config:LOGGING_CONFIG"),
    Contact(
        "gateway/endpoints/dispatch.py",
        "starlette.applications:Starlette",
        methods=("__call__",),
        instance_attributes=("exception_handlers",),
    ),
    Contact(
        "gateway/app.py",
        "starlette.middleware.cors:CORSMiddleware",
        methods=("preflight_response",),
    ),
]


def _resolve(owner: str) -> object:
    module_name, _, name = owner.partition(":")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise AssertionError(f"{owner} is gone ({exc})") from None


@pytest.mark.parametrize("contact", CONTACTS, ids=str)
def test_the_internals_we_rely_on_are_there(contact: Contact) -> None:
    found = _resolve(contact.owner)
    missing = [m for m in contact.methods if not callable(getattr(found, m, None))]
    assert missing == [], f"{contact}: its methods {missing} are gone"
    if contact.instance_attributes:
        assert inspect.isclass(found)
        source = "".join(inspect.getsource(cls) for cls in found.__mro__ if cls is not object)
        unset = [a for a in contact.instance_attributes if f"self.{a} =" not in source]
        unset = [a for a in unset if f"self.{a}: " not in source]
        assert unset == [], f"{contact}: it no longer sets {unset}"


@pytest.mark.parametrize("distribution", ["starlette", "uvicorn"])
def test_the_installed_release_is_within_the_bound_this_test_was_written_for(
    distribution: str,
) -> None:
    """A release past the bound is allowed only once the contacts above were checked on it."""
    requirements = [Requirement(text) for text in PYPROJECT["project"]["dependencies"]]
    (requirement,) = [r for r in requirements if r.name == distribution]
    installed = Version(version(distribution))

    assert any(spec.operator == "<" for spec in requirement.specifier), requirement
    assert installed in requirement.specifier, (
        f"{distribution} {installed} is outside {requirement}: check the contacts of "
        "tests/gateway/processes/test_internals.py and docs/architecture.md, then raise the bound"
    )
