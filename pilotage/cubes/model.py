"""The cube model: the facts indicators are computed on, and the dimensions
they are broken down by.

A fact says which columns a declaration may use and which dimensions it can
be broken down or filtered by: envelopes are held per 2005 region × measure ×
year, so they have no department, and prescriptions know nothing of the
beneficiary.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pilotage.etl.spec import (CATEGORIES, CONTRACTS, EMPLOYER_TYPES, ENVELOPES, PAYMENTS, PRESCRIPTIONS)
from pilotage.warehouse.reference import MEASURES, departments

GEOGRAPHY = ("department", "region_2005", "region_2016")
MEASURE_DIMS = ("measure", "sector")
CONTRACT_ATTRIBUTES = ("beneficiary_category", "beneficiary_sex", "age_band", "employer_type")
TIME = ("day", "week", "month", "quarter", "year")


@dataclass(frozen=True)
class Fact:
    name: str
    columns: frozenset[str]
    dimensions: frozenset[str]  # non-time dimensions it can be broken down and filtered by
    grain: str  # the finest geography it is held at


FACTS: dict[str, Fact] = {
    "contracts": Fact(
        "contracts",
        frozenset(CONTRACTS.column_names) | {"end_date"},
        frozenset(GEOGRAPHY + MEASURE_DIMS + CONTRACT_ATTRIBUTES),
        "department",
    ),
    "payments": Fact(
        "payments",
        frozenset(PAYMENTS.column_names),
        frozenset(GEOGRAPHY + MEASURE_DIMS + CONTRACT_ATTRIBUTES),
        "department",
    ),
    "prescriptions": Fact(
        "prescriptions",
        frozenset(PRESCRIPTIONS.column_names),
        frozenset(GEOGRAPHY + MEASURE_DIMS),
        "department",
    ),
    "envelopes": Fact(
        "envelopes",
        frozenset(ENVELOPES.column_names),
        frozenset(("region_2005", "region_2016") + MEASURE_DIMS),
        "region_2005",
    ),
}


@dataclass(frozen=True)
class Dimension:
    name: str
    label: str  # French, for reports
    kind: str  # geography | measure | attribute | time

    @property
    def is_time(self) -> bool:
        return self.kind == "time"


DIMENSIONS: dict[str, Dimension] = {
    d.name: d
    for d in (
        Dimension("department", "Département", "geography"),
        Dimension("region_2005", "Région", "geography"),
        Dimension("region_2016", "Région (2016)", "geography"),
        Dimension("measure", "Mesure", "measure"),
        Dimension("sector", "Secteur", "measure"),
        Dimension("beneficiary_category", "Public", "attribute"),
        Dimension("beneficiary_sex", "Sexe", "attribute"),
        Dimension("age_band", "Âge à l'entrée", "attribute"),
        Dimension("employer_type", "Employeur", "attribute"),
        Dimension("day", "Jour", "time"),
        Dimension("week", "Semaine", "time"),
        Dimension("month", "Mois", "time"),
        Dimension("quarter", "Trimestre", "time"),
        Dimension("year", "Année", "time"),
    )
}

# Age at start = year(start_date) - birth year, in the bands of employment statistics.
AGE_BANDS = (("<26", "Moins de 26 ans", 0, 25), ("26-49", "26 à 49 ans", 26, 49), ("50+", "50 ans et plus", 50, 200))

CATEGORY_NAMES = {
    "RMI": "Allocataires du RMI", "ASS": "Allocataires de l'ASS", "API": "Allocataires de l'API",
    "DELD": "Demandeurs d'emploi de longue durée", "JEUNE": "Jeunes", "TH": "Travailleurs handicapés",
    "AUTRE": "Autres publics",
}
EMPLOYER_NAMES = {
    "COMMUNE": "Commune", "DEPARTEMENT": "Département", "REGION": "Région", "ETAB_PUBLIC": "Établissement public",
    "ASSOCIATION": "Association", "ENTREPRISE": "Entreprise", "AUTRE": "Autre employeur",
}
SEX_NAMES = {"F": "Femmes", "M": "Hommes"}


@cache
def members(dimension: str) -> tuple[tuple[str, str], ...]:
    """(code, French name) of every member of a non-time dimension, in display order."""
    if dimension == "department":
        return tuple((d.code, d.name) for d in departments())
    if dimension in ("region_2005", "region_2016"):
        pairs = {(getattr(d, f"{dimension}_code"), getattr(d, f"{dimension}_name")) for d in departments()}
        return tuple(sorted(pairs))
    if dimension == "measure":
        return tuple((m.code, m.label) for m in MEASURES)
    if dimension == "sector":
        return tuple(dict.fromkeys((m.sector_code, m.sector_label) for m in MEASURES))
    if dimension == "beneficiary_category":
        return tuple((c, CATEGORY_NAMES[c]) for c in CATEGORIES)
    if dimension == "beneficiary_sex":
        return tuple(SEX_NAMES.items())
    if dimension == "age_band":
        return tuple((code, name) for code, name, _, _ in AGE_BANDS)
    if dimension == "employer_type":
        return tuple((c, EMPLOYER_NAMES[c]) for c in EMPLOYER_TYPES)
    raise KeyError(dimension)
