"""Scopes: the part of the country a user or a recipient may see.

A scope is a set of members at one geographic level (departments, 2005
regions or 2016 regions), or the nation. The cube applies it to every fact
before aggregation, as one more condition ANDed with the user's filters: a
filter can narrow a scope, never widen it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pilotage.cubes.model import GEOGRAPHY, members
from pilotage.warehouse.reference import departments


class ScopeError(ValueError):
    pass


@dataclass(frozen=True)
class Scope:
    level: str  # nation | department | region_2005 | region_2016
    codes: frozenset[str] = frozenset()

    def __post_init__(self):
        if self.level == "nation":
            if self.codes:
                raise ScopeError("a national scope has no members")
            return
        if self.level not in GEOGRAPHY:
            raise ScopeError(f"unknown scope level {self.level!r}; valid: nation, {', '.join(GEOGRAPHY)}")
        if not self.codes:
            raise ScopeError(f"a {self.level} scope needs at least one member")
        valid = {code for code, _ in members(self.level)}
        unknown = sorted(set(self.codes) - valid)
        if unknown:
            raise ScopeError(f"unknown {self.level} member(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")

    @classmethod
    def nation(cls) -> "Scope":
        return cls("nation")

    @classmethod
    def of(cls, level: str, *codes: str) -> "Scope":
        return cls(level, frozenset(codes))

    @classmethod
    def parse(cls, text: str) -> "Scope":
        """'nation', 'region_2005:25,23', 'department:14,50,61'."""
        text = text.strip()
        if text in ("nation", "national", ""):
            return cls.nation()
        level, _, codes = text.partition(":")
        return cls(level.strip(), frozenset(c.strip() for c in codes.split(",") if c.strip()))

    @property
    def is_national(self) -> bool:
        return self.level == "nation"

    def departments(self) -> frozenset[str]:
        """The departments the scope covers."""
        if self.is_national:
            return frozenset(d.code for d in departments())
        attribute = "code" if self.level == "department" else f"{self.level}_code"
        return frozenset(d.code for d in departments() if getattr(d, attribute) in self.codes)

    def __str__(self) -> str:
        return "nation" if self.is_national else f"{self.level}:{','.join(sorted(self.codes))}"
