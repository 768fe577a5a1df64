"""Names a package exports but imports only on first use (PEP 562), so that importing the
package loads none of what the name's home module needs (`jobwire` and `jobwire.client`)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, names: Sequence[str], homes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, exporting `names`, each imported from its
    module in `homes` when first asked for."""

    def get(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(home), name)

    def listing() -> list[str]:
        return sorted(names)

    return get, listing
