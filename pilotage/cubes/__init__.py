"""The cube layer: model, query compiler (SQL via sqlglot), scopes.

Names are imported on first use, so that `pilotage.measures` can use the
cube model without importing the compiler (which uses the measures).
"""

from __future__ import annotations

from importlib import import_module

__all__ = ["Cube", "QueryError", "Scope", "ScopeError"]

_HOME = {"Cube": "pilotage.cubes.cube", "QueryError": "pilotage.cubes.compiler",
         "Scope": "pilotage.cubes.scope", "ScopeError": "pilotage.cubes.scope"}


def __getattr__(name: str):
    if name in _HOME:
        return getattr(import_module(_HOME[name]), name)
    raise AttributeError(f"module 'pilotage.cubes' has no attribute {name!r}")
