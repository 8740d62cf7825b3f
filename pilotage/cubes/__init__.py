"""The cube layer: model, query compiler (SQL via sqlglot), scopes."""

from pilotage.cubes.compiler import QueryError
from pilotage.cubes.cube import Cube
from pilotage.cubes.scope import Scope, ScopeError

__all__ = ["Cube", "QueryError", "Scope", "ScopeError"]
