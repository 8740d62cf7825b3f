"""The cube layer: model, query compiler (SQL via sqlglot), scopes.

Names are imported on first use, so that `pilotage.measures` can use the
cube model without importing the compiler (which uses the measures).
"""

from __future__ import annotations

from pilotage.lazy import lazy_getattr

__all__ = ["Cube", "QueryError", "Scope", "ScopeError"]

_HOME = {"Cube": "pilotage.cubes.cube", "QueryError": "pilotage.cubes.compiler",
         "Scope": "pilotage.cubes.scope", "ScopeError": "pilotage.cubes.scope"}

__getattr__ = lazy_getattr(__name__, _HOME)
