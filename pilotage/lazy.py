"""Package names imported on first use (PEP 562), for packages whose modules import each other
or are heavy: `pilotage.cubes`, `pilotage.reports.delivery`, `pilotage.reports.alerts`."""

from __future__ import annotations

from importlib import import_module
from typing import Callable


def lazy_getattr(package: str, homes: dict[str, str]) -> Callable[[str], object]:
    """A module `__getattr__` giving each name of `homes` ({name: module it lives in}) from its
    module, imported when the name is first asked for."""

    def __getattr__(name: str):
        if name in homes:
            return getattr(import_module(homes[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
