"""Synthetic daily drops of the contract-management system (see extracts/SPEC.md).

``generate_drops`` writes one folder ``YYYY-MM-DD/`` per French working day,
holding ``contracts.csv``, ``payments.csv``, ``prescriptions.csv``, sometimes
``envelopes.csv``, and ``control.csv``.  The data is simulated, never looped
per record: every contract, version, payment and prescription is a row of numpy
arrays, and polars formats and writes them.

How the simulation goes (all dates are ``int`` day numbers since 1970-01-01):

1. contracts start on each day of a window reaching three years before
   ``start`` (so the stock in force on day one is realistic) up to ``end``, a
   Poisson number per day following a seasonal profile (September peak, summer
   and Christmas dips), spread over the departments by population;
2. each contract gets its lifecycle: creation (version 1), up to two renewals,
   and an end (early rupture, term) or a cancellation, each a full new version
   carried by the drop of the working day it is keyed;
3. monthly aid payments, recoveries of what was paid after an unreported
   rupture, regularisations, and a few payments sent ahead of their contract;
4. prescriptions (converted into the contracts, or expiring / cancelled);
5. yearly envelopes per 2005 region and measure, some revised in the year;
6. what happened before the first drop is folded into it: the latest version
   of the contracts in force on ``start`` (or paid after it) and the
   prescriptions they need or that are still open;
7. optionally, bad rows (``BAD_ROW_KINDS``), extra rows each breaking one rule
   or re-sent later (conflict, stale, duplicate), their good twin left as it is;
8. each file is a frame of compact typed rows sorted by drop; runs of drops are
   rendered to text together, then each drop's slice is written.

``build_frames`` returns the same rows without writing them, the bad ones tagged
with their kind (for tests).  The same arguments give byte-identical files.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from importlib import resources
from pathlib import Path

import numpy as np
import polars as pl

__all__ = ["generate_drops", "french_holidays", "working_days", "BAD_ROW_KINDS"]

# --------------------------------------------------------------------------- constants

ANNUAL_ENTRIES = 250_000  # national contract entries a year at scale 1
HISTORY_DAYS = 3 * 365  # contracts starting this long before `start` are simulated
BAD_SHARE = 0.002  # share of bad rows per file (spread over that file's kinds)
HELD_SHARE = 0.0005  # share of payments sent a few drops before their contract
CANCEL_SHARE = 0.02
REGULARISATION_SHARE = 0.02
OVERPAYMENT_SHARE = 0.005  # aid payments partly recovered later (besides unreported ruptures)
CONVERTED_SHARE = 0.80  # contracts fulfilling a prescription
UNCONVERTED_RATIO = 0.30  # extra prescriptions that never convert, per contract

MEASURES = ("CAE", "CAV", "CIE", "CIRMA")
MEASURE_SHARE = (0.45, 0.20, 0.25, 0.10)
EMPLOYER_TYPES = ("COMMUNE", "DEPARTEMENT", "REGION", "ETAB_PUBLIC", "ASSOCIATION", "ENTREPRISE", "AUTRE")
CATEGORIES = ("RMI", "ASS", "API", "DELD", "JEUNE", "TH", "AUTRE")
END_REASONS = ("TERME", "RUPTURE_EMPLOYEUR", "RUPTURE_SALARIE", "EMBAUCHE", "AUTRE")
RUPTURE_REASON_P = (0.0, 0.32, 0.30, 0.28, 0.10)
CONTRACT_STATUSES = ("ACTIVE", "ENDED", "CANCELLED")
PRESCRIPTION_STATUSES = ("ISSUED", "CONVERTED", "EXPIRED", "CANCELLED")
PAYMENT_KINDS = ("AID", "REGULARISATION", "RECOVERY")
ACTIVE, ENDED, CANCELLED = 0, 1, 2
ISSUED, CONVERTED, EXPIRED, P_CANCELLED = 0, 1, 2, 3
AID, REGULARISATION, RECOVERY = 0, 1, 2

# relative intensity of contract starts by month (Jan..Dec) and weekday (Mon..Sun)
MONTH_WEIGHT = np.array([0.95, 0.97, 1.05, 1.00, 0.93, 0.95, 0.72, 0.50, 1.60, 1.22, 1.06, 0.72])
WEEKDAY_WEIGHT = np.array([1.55, 1.10, 1.00, 0.95, 0.90, 0.10, 0.05])
FIRST_OF_MONTH_BOOST = 2.5

# SMIC (hourly minimum wage, cents) by date it took effect
SMIC = ((date(2000, 1, 1), 642), (date(2001, 7, 1), 667), (date(2002, 7, 1), 683),
        (date(2003, 7, 1), 719), (date(2004, 7, 1), 761), (date(2005, 7, 1), 803),
        (date(2006, 7, 1), 827), (date(2007, 7, 1), 844), (date(2008, 5, 1), 863),
        (date(2008, 7, 1), 871), (date(2009, 7, 1), 882), (date(2010, 1, 1), 886))

CONTRACT_COLUMNS = (
    "contract_id", "version", "measure", "department", "employer_id", "employer_type",
    "prescriber_id", "prescription_id", "beneficiary_sex", "beneficiary_birth_year",
    "beneficiary_category", "signed_date", "start_date", "planned_end_date",
    "actual_end_date", "end_reason", "weekly_hours", "subsidy_rate", "monthly_aid_eur", "status",
)
PAYMENT_COLUMNS = ("payment_id", "contract_id", "period_month", "paid_date", "amount_eur", "kind")
PRESCRIPTION_COLUMNS = (
    "prescription_id", "version", "measure", "department", "prescriber_id",
    "prescribed_date", "status", "contract_id",
)
ENVELOPE_COLUMNS = (
    "year", "region_code", "measure", "version", "physical_envelope",
    "financial_envelope_eur", "decided_date",
)
FILES = (
    ("contracts.csv", CONTRACT_COLUMNS, True),
    ("payments.csv", PAYMENT_COLUMNS, True),
    ("prescriptions.csv", PRESCRIPTION_COLUMNS, True),
    ("envelopes.csv", ENVELOPE_COLUMNS, False),
)


@dataclass(frozen=True)
class _Profile:
    """How the contracts of one measure look."""

    employer_p: tuple[float, ...]  # over EMPLOYER_TYPES
    category_p: tuple[float, ...]  # over CATEGORIES
    half_hours: tuple[int, ...]  # weekly hours x 2
    half_hours_p: tuple[float, ...]
    rate_range: tuple[int, int]  # subsidy rate in hundredths, multiples of 5
    months: tuple[int, ...]  # initial duration
    months_p: tuple[float, ...]
    renew_p: float
    renew_months: int
    max_months: int
    rupture_p: float
    female_p: float


PROFILES = (
    _Profile(  # CAE: non-market sector, part time
        (0.30, 0.04, 0.01, 0.25, 0.36, 0.0, 0.04), (0.05, 0.05, 0.02, 0.40, 0.25, 0.10, 0.13),
        (40, 44, 45, 48, 52), (0.45, 0.05, 0.05, 0.15, 0.30), (60, 95),
        (6, 9, 12, 18, 24), (0.45, 0.05, 0.35, 0.05, 0.10), 0.40, 6, 24, 0.19, 0.62),
    _Profile(  # CAV: minimum-income beneficiaries, 26 h, two years
        (0.35, 0.08, 0.0, 0.17, 0.38, 0.0, 0.02), (0.65, 0.25, 0.10, 0.0, 0.0, 0.0, 0.0),
        (52, 48, 40), (0.90, 0.05, 0.05), (75, 95),
        (12, 18, 24), (0.20, 0.10, 0.70), 0.30, 12, 36, 0.17, 0.56),
    _Profile(  # CIE: market sector, full time
        (0.0, 0.0, 0.0, 0.0, 0.05, 0.92, 0.03), (0.05, 0.05, 0.0, 0.50, 0.20, 0.10, 0.10),
        (70, 60, 56, 48), (0.85, 0.07, 0.04, 0.04), (20, 50),
        (12, 18, 24), (0.45, 0.15, 0.40), 0.10, 6, 24, 0.16, 0.40),
    _Profile(  # CIRMA: market sector, minimum-income beneficiaries
        (0.0, 0.0, 0.0, 0.0, 0.07, 0.90, 0.03), (0.80, 0.15, 0.05, 0.0, 0.0, 0.0, 0.0),
        (70, 52, 40), (0.70, 0.15, 0.15), (20, 50),
        (12, 18, 24), (0.60, 0.25, 0.15), 0.15, 6, 24, 0.21, 0.45),
)

# age range at start by category (over CATEGORIES)
AGE_RANGE = ((22, 60), (25, 62), (18, 45), (25, 62), (17, 25), (20, 60), (18, 65))

# SIREN prefixes by employer type (communes get 21 + department + commune number)
SIREN_PREFIX = (21, 22, 23, 26, 77, 40, 18)

# main town of each department, used to name the prescribing agencies
TOWNS = dict(item.split(":") for item in """
01:BOURG-EN-BRESSE 02:LAON 03:MOULINS 04:DIGNE-LES-BAINS 05:GAP 06:NICE 07:PRIVAS
08:CHARLEVILLE-MEZIERES 09:FOIX 10:TROYES 11:CARCASSONNE 12:RODEZ 13:MARSEILLE 14:CAEN
15:AURILLAC 16:ANGOULEME 17:LA-ROCHELLE 18:BOURGES 19:TULLE 2A:AJACCIO 2B:BASTIA 21:DIJON
22:SAINT-BRIEUC 23:GUERET 24:PERIGUEUX 25:BESANCON 26:VALENCE 27:EVREUX 28:CHARTRES
29:QUIMPER 30:NIMES 31:TOULOUSE 32:AUCH 33:BORDEAUX 34:MONTPELLIER 35:RENNES 36:CHATEAUROUX
37:TOURS 38:GRENOBLE 39:LONS-LE-SAUNIER 40:MONT-DE-MARSAN 41:BLOIS 42:SAINT-ETIENNE
43:LE-PUY-EN-VELAY 44:NANTES 45:ORLEANS 46:CAHORS 47:AGEN 48:MENDE 49:ANGERS 50:SAINT-LO
51:CHALONS-EN-CHAMPAGNE 52:CHAUMONT 53:LAVAL 54:NANCY 55:BAR-LE-DUC 56:VANNES 57:METZ
58:NEVERS 59:LILLE 60:BEAUVAIS 61:ALENCON 62:ARRAS 63:CLERMONT-FERRAND 64:PAU 65:TARBES
66:PERPIGNAN 67:STRASBOURG 68:COLMAR 69:LYON 70:VESOUL 71:MACON 72:LE-MANS 73:CHAMBERY
74:ANNECY 75:PARIS 76:ROUEN 77:MELUN 78:VERSAILLES 79:NIORT 80:AMIENS 81:ALBI 82:MONTAUBAN
83:TOULON 84:AVIGNON 85:LA-ROCHE-SUR-YON 86:POITIERS 87:LIMOGES 88:EPINAL 89:AUXERRE
90:BELFORT 91:EVRY 92:NANTERRE 93:BOBIGNY 94:CRETEIL 95:CERGY 971:BASSE-TERRE
972:FORT-DE-FRANCE 973:CAYENNE 974:SAINT-DENIS 976:MAMOUDZOU
""".split())

# free-text prescriber names that need CSV quoting (department, name)
QUOTED_PRESCRIBERS = (
    ("50", 'ALE "Cherbourg"; Nord'),
    ("13", 'ALE "Vieux-Port"; Marseille'),
    ("76", '"Mission locale" Rouen; Elbeuf'),
    ("59", 'PLIE "Lille Métropole"'),
)
QUOTED_PRESCRIBER_P = 0.05  # within those departments
WRITE_BATCH_ROWS = 400_000  # rows rendered to text at once when writing

# Bad-row kinds per file.  Each bad row is an extra row breaking exactly one rule
# (or, for conflict / stale / duplicate, re-sending a row in a later drop).
BAD_ROW_KINDS: dict[str, tuple[str, ...]] = {
    "contracts.csv": (
        "empty_required", "id_too_long", "unknown_measure", "unknown_employer_type",
        "unknown_sex", "unknown_category", "unknown_status", "bad_department", "bad_siret",
        "bad_date", "decimal_comma", "bad_weekly_hours", "bad_subsidy_rate", "negative_aid",
        "age_out_of_range", "signed_after_start", "planned_end_before_start",
        "actual_end_before_start", "end_reason_without_actual_end",
        "actual_end_without_end_reason", "ended_without_actual_end", "active_with_actual_end",
        "version_zero", "conflict", "stale", "duplicate",
    ),
    "payments.csv": (
        "empty_required", "id_too_long", "unknown_kind", "bad_date", "decimal_comma",
        "zero_amount", "negative_aid", "bad_period_month", "conflict", "duplicate",
    ),
    "prescriptions.csv": (
        "empty_required", "id_too_long", "unknown_measure", "bad_department", "unknown_status",
        "bad_date", "version_zero", "converted_without_contract", "issued_with_contract",
        "conflict", "stale", "duplicate",
    ),
    "envelopes.csv": ("unknown_region", "negative_envelope", "version_zero", "conflict", "duplicate"),
}


# --------------------------------------------------------------------------- calendar

def _easter(year: int) -> date:
    """Gregorian Easter Sunday (anonymous algorithm)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    g = (b - (b + 8) // 25 + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


def french_holidays(year: int) -> list[date]:
    """The eleven French public holidays of a year, sorted."""
    easter = _easter(year)
    fixed = [date(year, m, d) for m, d in ((1, 1), (5, 1), (5, 8), (7, 14), (8, 15), (11, 1), (11, 11), (12, 25))]
    moving = [easter + timedelta(days=n) for n in (1, 39, 50)]  # Easter Monday, Ascension, Whit Monday
    return sorted(set(fixed + moving))  # (Ascension can fall on May 1)


def working_days(start: date, end: date) -> list[date]:
    """Monday-to-Friday days of [start, end] that are not public holidays."""
    days = np.arange(_day(start), _day(end) + 1)
    return [_date(d) for d in days[_is_working(days)]]


def _day(d: date) -> int:
    return (d - date(1970, 1, 1)).days


def _date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=int(day))


def _is_working(days: np.ndarray) -> np.ndarray:
    if len(days) == 0:
        return np.zeros(0, dtype=bool)
    years = range(_date(days.min()).year, _date(days.max()).year + 1)
    holidays = np.array([_day(h) for y in years for h in french_holidays(y)])
    return ((days + 3) % 7 < 5) & ~np.isin(days, holidays)


def _month(days: np.ndarray) -> np.ndarray:
    """Month number (months since 1970-01) of day numbers."""
    return np.asarray(days).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64)


def _month_first(months: np.ndarray) -> np.ndarray:
    return np.asarray(months).astype("datetime64[M]").astype("datetime64[D]").astype(np.int64)


def _add_months(days: np.ndarray, months: np.ndarray) -> np.ndarray:
    """Same day of month `months` later (clipped to the month's last day)."""
    m0 = _month(days)
    day_of_month = days - _month_first(m0)
    target = m0 + months
    length = _month_first(target + 1) - _month_first(target)
    return _month_first(target) + np.minimum(day_of_month, length - 1)


class _Calendar:
    """Working-day lookups over a window of day numbers."""

    def __init__(self, lo: int, hi: int, drops: np.ndarray):
        self.lo, self.hi = lo, hi
        days = np.arange(lo, hi + 1)
        position = np.where(_is_working(days), np.arange(len(days)), len(days))
        following = np.minimum.accumulate(position[::-1])[::-1]
        self._next = np.where(following < len(days), lo + following, hi + 1)
        self.drops = drops  # working days of [start, end]: one drop each

    def next_working(self, days: np.ndarray) -> np.ndarray:
        """First working day on or after each day."""
        days = np.asarray(days, dtype=np.int64)
        found = self._next[np.clip(days - self.lo, 0, len(self._next) - 1)]
        return np.where(days > self.hi, days, found)

    def drop_index(self, days: np.ndarray) -> np.ndarray:
        return np.searchsorted(self.drops, days)


# --------------------------------------------------------------------------- reference

@dataclass(frozen=True)
class _Geo:
    codes: tuple[str, ...]  # department codes
    weight: np.ndarray  # population share
    region: np.ndarray  # index into region_codes
    region_codes: tuple[str, ...]
    numeric: np.ndarray  # two digits used in commune SIRENs


def _read_csv(package: str, name: str) -> pl.DataFrame:
    text = resources.files(package).joinpath(name).read_bytes()
    return pl.read_csv(io.BytesIO(text), separator=";", infer_schema=False)


def _geography() -> _Geo:
    ref = _read_csv("pilotage.warehouse", "reference/departments.csv")
    pop = _read_csv("pilotage.etl", "data/department_population.csv")
    ref = ref.join(pop, on="department_code", how="left", maintain_order="left")
    codes = tuple(ref["department_code"].to_list())
    population = ref["population"].cast(pl.Float64).fill_null(100_000).to_numpy()
    region_codes = tuple(sorted(set(ref["region_2005_code"].to_list())))
    region = np.array([region_codes.index(r) for r in ref["region_2005_code"].to_list()])
    numeric = np.array([int(c) if c.isdigit() and len(c) == 2 else (20 if c[0] == "2" else 97) for c in codes])
    return _Geo(codes, population / population.sum(), region, region_codes, numeric)


@dataclass(frozen=True)
class _Prescribers:
    names: tuple[str, ...]
    ale_first: np.ndarray  # per department: index of its first employment agency
    ale_count: np.ndarray
    ml_first: np.ndarray  # youth "missions locales"
    ml_count: np.ndarray
    cg: np.ndarray  # the departmental council (minimum-income beneficiaries)
    cap: np.ndarray  # Cap emploi (disabled workers)
    quoted: np.ndarray  # a free-text name needing quotes, or -1


def _prescribers(geo: _Geo) -> _Prescribers:
    names: list[str] = []
    keys = ("ale_first", "ale_count", "ml_first", "ml_count", "cg", "cap", "quoted")
    cols: dict[str, list[int]] = {k: [] for k in keys}
    special = dict(QUOTED_PRESCRIBERS)
    for code, share in zip(geo.codes, geo.weight):
        town = TOWNS.get(code, code)
        n_ale = max(1, round(share * 63_000_000 / 120_000))
        n_ml = max(1, n_ale // 3)
        for key, prefix, count in (("ale", "ALE", n_ale), ("ml", "ML", n_ml)):
            cols[f"{key}_first"].append(len(names))
            cols[f"{key}_count"].append(count)
            names += [f"{prefix}-{code}-{town}" + (f"-{k + 1}" if k else "") for k in range(count)]
        for key, name in (("cg", f"CG-{code}"), ("cap", f"CAPEMPLOI-{code}")):
            cols[key].append(len(names))
            names.append(name)
        cols["quoted"].append(len(names) if code in special else -1)
        if code in special:
            names.append(special[code])
    return _Prescribers(tuple(names), **{k: np.array(v) for k, v in cols.items()})


def _draw_prescriber(rng, pr: _Prescribers, dept, measure, category) -> np.ndarray:
    """An index into pr.names for each row, depending on who the beneficiary is."""
    n = len(dept)
    u, pick = rng.random(n), rng.random(n)
    result = pr.ale_first[dept] + (pick * pr.ale_count[dept]).astype(np.int64)
    youth = (category == CATEGORIES.index("JEUNE")) & (u < 0.5)
    result = np.where(youth, pr.ml_first[dept] + (pick * pr.ml_count[dept]).astype(np.int64), result)
    disabled = (category == CATEGORIES.index("TH")) & (u < 0.5)
    result = np.where(disabled, pr.cap[dept], result)
    minimum_income = np.isin(measure, [MEASURES.index("CAV"), MEASURES.index("CIRMA")]) & (u < 0.6)
    result = np.where(minimum_income, pr.cg[dept], result)
    quoted = (pr.quoted[dept] >= 0) & (rng.random(n) < QUOTED_PRESCRIBER_P)
    return np.where(quoted, pr.quoted[dept], result)


# --------------------------------------------------------------------------- contracts

@dataclass
class _Contracts:
    """One entry per simulated contract (numpy arrays, day numbers)."""

    measure: np.ndarray
    dept: np.ndarray
    signed: np.ndarray
    start: np.ndarray
    created: np.ndarray  # drop day of version 1
    employer_type: np.ndarray
    siret: np.ndarray
    prescriber: np.ndarray  # index into prescriber names, -1 = null
    female: np.ndarray
    birth_year: np.ndarray
    category: np.ndarray
    half_hours: np.ndarray
    rate: np.ndarray  # hundredths
    aid: np.ndarray  # monthly aid, cents
    cancelled: np.ndarray
    ruptured: np.ndarray
    end: np.ndarray  # last day in force (actual end or final planned end)
    planned_final: np.ndarray  # planned end in force when the contract ended
    end_event: np.ndarray  # day the end (or cancellation) was keyed
    ids: pl.Series | None = None  # contract ids, set once all contracts are known


def _choice_by_group(rng, group: np.ndarray, probabilities: list[tuple[float, ...]]) -> np.ndarray:
    """Draw an index per row from the distribution of its group."""
    cumulative = np.cumsum(np.array(probabilities, dtype=float), axis=1)
    cumulative /= cumulative[:, -1:]
    u = rng.random(len(group))
    return (u[:, None] > cumulative[group]).sum(axis=1)


def _profile_values(rng, measure, values: str, weights: str) -> np.ndarray:
    table = [getattr(p, values) for p in PROFILES]
    width = max(len(t) for t in table)
    padded = np.array([t + (t[-1],) * (width - len(t)) for t in table])
    probabilities = [getattr(p, weights) + (0.0,) * (width - len(getattr(p, weights))) for p in PROFILES]
    return padded[measure, _choice_by_group(rng, measure, probabilities)]


def _start_days(rng, lo: int, hi: int, scale: float) -> np.ndarray:
    """Start dates of all contracts of [lo, hi], sorted, with the seasonal profile."""
    def intensity(days):
        d = days.astype("datetime64[D]")
        month = d.astype("datetime64[M]").astype(np.int64) % 12
        first = (d - d.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) == 0
        return MONTH_WEIGHT[month] * WEEKDAY_WEIGHT[(days + 3) % 7] * np.where(first, FIRST_OF_MONTH_BOOST, 1.0)

    reference = intensity(np.arange(_day(date(2004, 1, 1)), _day(date(2008, 1, 1))))
    days = np.arange(lo, hi + 1)
    lam = ANNUAL_ENTRIES * scale / 365.25 * intensity(days) / reference.mean()
    return np.repeat(days, rng.poisson(lam))


def _siret(rng, geo: _Geo, dept, employer_type) -> np.ndarray:
    """14-digit SIRETs (valid Luhn keys), employers re-used within a department."""
    n = len(dept)
    pool = np.maximum(5, (geo.weight[dept] * 4000).astype(np.int64))
    number = (rng.random(n) ** 2 * pool).astype(np.int64)
    scrambled = (dept * 7919 + employer_type * 104_729 + number) * 2_654_435_761 % 1_000_000
    commune = 21_000_000 + geo.numeric[dept] * 10_000 + number % 1000 * 10 + number // 1000 % 10
    other = np.array(SIREN_PREFIX)[employer_type] * 1_000_000 + scrambled
    siren = _luhn_append(np.where(employer_type == 0, commune, other))
    nic = 1 + scrambled % 37
    return _luhn_append(siren * 10_000 + nic)


def _luhn_append(x: np.ndarray) -> np.ndarray:
    """Append the Luhn check digit to each number."""
    total = np.zeros_like(x)
    rest, double = x.copy(), True
    while rest.any():
        digit = rest % 10
        if double:
            digit = np.where(digit * 2 > 9, digit * 2 - 9, digit * 2)
        total += digit
        rest //= 10
        double = not double
    return x * 10 + (10 - total % 10) % 10


def _monthly_aid(start, half_hours, rate) -> np.ndarray:
    """State aid a month, in cents: rate x SMIC x hours x 52/12."""
    effective = np.array([_day(d) for d, _ in SMIC])
    smic = np.array([c for _, c in SMIC])[np.searchsorted(effective, start, side="right") - 1]
    return np.rint(rate / 100 * smic * half_hours / 2 * 52 / 12).astype(np.int64)


def _simulate_contracts(rng, cal: _Calendar, geo: _Geo, pr: _Prescribers, scale: float,
                        lo: int, hi: int) -> _Contracts:
    """Contracts starting in [lo, hi], with their attributes (lifecycle left to `_lifecycle`)."""
    start = _start_days(rng, lo, hi, scale)
    n = len(start)
    signed = start - _lead_days(rng, n)
    order = np.argsort(signed, kind="stable")
    start, signed = start[order], signed[order]
    measure = rng.choice(4, size=n, p=MEASURE_SHARE)
    dept = rng.choice(len(geo.codes), size=n, p=geo.weight)
    employer_type = _choice_by_group(rng, measure, [p.employer_p for p in PROFILES])
    category = _choice_by_group(rng, measure, [p.category_p for p in PROFILES])
    female = rng.random(n) < np.array([p.female_p for p in PROFILES])[measure]
    age_lo, age_hi = np.array(AGE_RANGE).T
    age = age_lo[category] + (rng.beta(2.0, 2.6, n) * (age_hi[category] - age_lo[category] + 1)).astype(np.int64)
    birth_year = start.astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970 - age
    half_hours = _profile_values(rng, measure, "half_hours", "half_hours_p")
    rate_lo, rate_hi = np.array([p.rate_range for p in PROFILES]).T
    rate = rate_lo[measure] + 5 * rng.integers(0, (rate_hi[measure] - rate_lo[measure]) // 5 + 1)
    contracts = _Contracts(
        measure=measure, dept=dept, signed=signed, start=start, created=cal.next_working(signed),
        employer_type=employer_type, siret=_siret(rng, geo, dept, employer_type),
        prescriber=_draw_prescriber(rng, pr, dept, measure, category), female=female,
        birth_year=birth_year, category=category, half_hours=half_hours, rate=rate,
        aid=_monthly_aid(start, half_hours, rate), cancelled=rng.random(n) < CANCEL_SHARE,
        ruptured=np.zeros(n, bool), end=start, planned_final=start, end_event=start,  # set by _lifecycle
    )
    return contracts


def _lead_days(rng, n: int) -> np.ndarray:
    """Days between signing and start: 0..10, mostly a few days."""
    return np.minimum(10, rng.poisson(3.0, n))


@dataclass
class _Versions:
    """One entry per contract version (sorted by contract, version)."""

    contract: np.ndarray
    version: np.ndarray
    drop: np.ndarray  # day the version is keyed (a working day)
    planned_end: np.ndarray
    actual_end: np.ndarray  # -1 = null
    end_reason: np.ndarray  # -1 = null
    status: np.ndarray


def _lifecycle(rng, cal: _Calendar, c: _Contracts) -> _Versions:
    """Renewals, ends and cancellations; fills c.end, c.ruptured... and returns the versions."""
    n = len(c.start)
    m = c.measure
    renew_p, renew_months, max_months, rupture_p = (
        np.array([getattr(p, f) for p in PROFILES]) for f in ("renew_p", "renew_months", "max_months", "rupture_p"))
    months0 = _profile_values(rng, m, "months", "months_p")
    ext = renew_months[m]
    ren1 = ~c.cancelled & (rng.random(n) < renew_p[m]) & (months0 + ext <= max_months[m])
    ren2 = ren1 & (rng.random(n) < 0.35) & (months0 + 2 * ext <= max_months[m])
    planned = [_add_months(c.start, months0 + k * ext) - 1 for k in range(3)]
    ren_day = [planned[k] - rng.integers(7, 46, n) for k in range(2)]
    final = np.where(ren2, planned[2], np.where(ren1, planned[1], planned[0]))

    ruptured = ~c.cancelled & (rng.random(n) < rupture_p[m])
    fraction = 0.02 + 0.9 * rng.beta(1.1, 1.8, n)
    rupture_day = c.start + np.maximum(7, (fraction * (final - c.start)).astype(np.int64))
    ren1 &= ~(ruptured & (ren_day[0] >= rupture_day))
    ren2 &= ren1 & ~(ruptured & (ren_day[1] >= rupture_day))
    final = np.where(ren2, planned[2], np.where(ren1, planned[1], planned[0]))
    late = rng.random(n) < 0.4  # ruptures declared weeks later (paid meanwhile, then recovered)
    declare_lag = np.where(late, rng.integers(11, 61, n), rng.integers(0, 11, n))
    reason = rng.choice(len(END_REASONS), size=n, p=RUPTURE_REASON_P)

    c.ruptured = ruptured
    c.planned_final = final
    c.end = np.where(ruptured, rupture_day, final)
    c.end_event = np.where(
        c.cancelled, c.created + rng.integers(1, 11, n),
        np.where(ruptured, rupture_day + declare_lag, final + rng.integers(0, 6, n)))

    idx = np.arange(n)
    none = np.full(n, -1)
    parts = [  # (mask, version, event day, planned end, actual end, reason, status)
        (np.ones(n, bool), 1, c.created, planned[0], none, none, ACTIVE),
        (ren1, 2, ren_day[0], planned[1], none, none, ACTIVE),
        (ren2, 3, ren_day[1], planned[2], none, none, ACTIVE),
        (c.cancelled, 2, c.end_event, planned[0], none, none, CANCELLED),
        (~c.cancelled, 2 + ren1 + ren2, c.end_event, final, c.end,
         np.where(ruptured, reason, 0), ENDED),
    ]
    cols = [np.concatenate([np.broadcast_to(p[k], n)[p[0]] for p in parts]) for k in range(1, 7)]
    contract = np.concatenate([idx[p[0]] for p in parts])
    order = np.lexsort((cols[0], contract))
    version, event, planned_end, actual, reason_, status = (col[order] for col in cols)
    return _Versions(contract[order], version, cal.next_working(event), planned_end, actual, reason_, status)


# --------------------------------------------------------------------------- payments

PAYMENT_BLOCK = 200_000  # contracts per block when exploding payments (bounds memory)
_PAYMENT_FIELDS = ("contract", "month", "drop", "cents", "kind")


@dataclass
class _Payments:
    contract: np.ndarray
    month: np.ndarray  # period month (months since 1970-01)
    drop: np.ndarray  # paid day
    cents: np.ndarray
    kind: np.ndarray

    def subset(self, rows: np.ndarray) -> _Payments:
        return _Payments(*(getattr(self, f)[rows] for f in _PAYMENT_FIELDS))

    @staticmethod
    def concat(parts: list[_Payments]) -> _Payments:
        return _Payments(*(np.concatenate([getattr(p, f) for p in parts]) for f in _PAYMENT_FIELDS))


def _prorated(aid, start, end, month) -> np.ndarray:
    """Aid for `month` of a contract in force from start to end (0 outside)."""
    first, next_first = _month_first(month), _month_first(month + 1)
    days = np.minimum(end, next_first - 1) - np.maximum(start, first) + 1
    return np.maximum(0, aid * days * 2 + (next_first - first)) // (2 * (next_first - first)) * (days > 0)


def _payment_block(rng, cal: _Calendar, c: _Contracts, block: slice) -> _Payments:
    """Payments of the contracts of one block that are paid inside the drops."""
    first, last = cal.drops[0], cal.drops[-1]
    start, end, aid = c.start[block], c.end[block], c.aid[block]
    ruptured, planned, end_event = c.ruptured[block], c.planned_final[block], c.end_event[block]
    end_drop = cal.next_working(end_event)
    # months paid: to the end, or beyond it until an unreported rupture is keyed
    paid_until = np.where(ruptured, np.maximum(end, np.minimum(planned, end_event)), end)
    m_lo = np.maximum(_month(start), _month(first) - 4)
    m_hi = np.minimum(_month(paid_until), _month(last))
    count = np.where(c.cancelled[block], 0, np.maximum(0, m_hi - m_lo + 1))
    local = np.repeat(np.arange(len(count)), count)
    month = m_lo[local] + np.arange(len(local)) - np.repeat(np.cumsum(count) - count, count)
    day = cal.next_working(_month_first(month + 1) + rng.integers(0, 7, len(month)))

    known_end = np.where(ruptured[local] & (day < end_drop[local]), planned[local], end[local])
    keep = month <= _month(known_end)
    local, month, day, known_end = local[keep], month[keep], day[keep], known_end[keep]
    cents = _prorated(aid[local], start[local], known_end, month)
    over = cents - _prorated(aid[local], start[local], end[local], month)
    # recoveries: aid paid after an unreported rupture, and a few other overpayments (absences...)
    other = (rng.random(len(cents)) < OVERPAYMENT_SHARE) & (over == 0)
    over = np.where(other, (cents * rng.uniform(0.1, 0.6, len(cents))).astype(np.int64), over)
    rec = over > 0
    rec_day = cal.next_working(np.where(other[rec], day[rec], end_drop[local[rec]]) + rng.integers(10, 46, rec.sum()))
    reg = rng.random(len(cents)) < REGULARISATION_SHARE
    reg_day = cal.next_working(day[reg] + rng.integers(20, 76, reg.sum()))
    reg_cents = np.maximum(100, (aid[local[reg]] * rng.uniform(0.03, 0.25, reg.sum())).astype(np.int64))

    p = _Payments(
        contract=np.concatenate([local, local[rec], local[reg]]) + block.start,
        month=np.concatenate([month, month[rec], month[reg]]),
        drop=np.concatenate([day, rec_day, reg_day]),
        cents=np.concatenate([cents, -over[rec], reg_cents]),
        kind=np.concatenate([np.full(len(cents), AID), np.full(rec.sum(), RECOVERY),
                             np.full(reg.sum(), REGULARISATION)]),
    )
    p = p.subset((p.drop >= first) & (p.drop <= last) & (p.cents != 0))
    return _Payments(p.contract.astype(np.int32), p.month.astype(np.int32), p.drop.astype(np.int32),
                     p.cents.astype(np.int32), p.kind.astype(np.int8))


def _payments(rng, cal: _Calendar, c: _Contracts) -> _Payments:
    n = len(c.start)
    blocks = [_payment_block(rng, cal, c, slice(lo, min(lo + PAYMENT_BLOCK, n)))
              for lo in range(0, n, PAYMENT_BLOCK)]
    p = _Payments.concat(blocks) if blocks else _Payments(*(np.zeros(0, np.int32) for _ in _PAYMENT_FIELDS))
    _send_some_ahead(rng, cal, c, p)
    return p.subset(np.lexsort((p.kind, p.month, p.contract, p.drop)))


def _send_some_ahead(rng, cal: _Calendar, c: _Contracts, p: _Payments) -> None:
    """Move the first aid payment of a few contracts a few drops before the contract."""
    aid_rows = np.flatnonzero(p.kind == AID)
    contracts, first_row = np.unique(p.contract[aid_rows], return_index=True)
    rows = aid_rows[first_row]
    created_at = cal.drop_index(c.created[contracts])
    eligible = (c.created[contracts] >= cal.drops[0]) & (created_at >= 4) & (created_at < len(cal.drops))
    rows, created_at = rows[eligible], created_at[eligible]
    n = min(len(rows), round(HELD_SHARE * len(p.drop)))
    chosen = np.sort(rng.choice(len(rows), size=n, replace=False)) if n else np.zeros(0, np.int64)
    p.drop[rows[chosen]] = cal.drops[created_at[chosen] - rng.integers(1, 4, n)]


# --------------------------------------------------------------------------- prescriptions

@dataclass
class _Prescriptions:
    """One entry per prescription, by prescribed day; versions are v1 ISSUED and v2 (final)."""

    contract: np.ndarray  # -1 when it never converted
    measure: np.ndarray
    dept: np.ndarray
    prescriber: np.ndarray
    day: np.ndarray  # prescribed (= keyed) working day
    final_status: np.ndarray
    final_drop: np.ndarray
    ids: pl.Series | None = None


def _prescriptions(rng, cal: _Calendar, pr: _Prescribers, c: _Contracts) -> _Prescriptions:
    n = len(c.start)
    converted = np.flatnonzero(rng.random(n) < CONVERTED_SHARE)
    n_other = round(UNCONVERTED_RATIO * n)
    template = rng.integers(0, max(n, 1), n_other)
    day = cal.next_working(np.concatenate([
        c.signed[converted] - rng.integers(7, 43, len(converted)),
        c.signed[template] - rng.integers(7, 61, n_other)]))
    cancel = rng.random(n_other) < 0.1
    other_day = day[len(converted):]
    final_day = np.where(cancel, other_day + rng.integers(3, 31, n_other), other_day + rng.integers(85, 96, n_other))
    measure, dept = c.measure[template], c.dept[template]
    prescriber = _draw_prescriber(rng, pr, dept, measure, c.category[template])
    # contracts keep the prescriber of their prescription; half of the others have none
    unprescribed = np.ones(n, bool)
    unprescribed[converted] = False
    c.prescriber = np.where(unprescribed & (rng.random(n) < 0.5), -1, c.prescriber)
    fields = dict(
        contract=np.concatenate([converted, np.full(n_other, -1)]),
        measure=np.concatenate([c.measure[converted], measure]),
        dept=np.concatenate([c.dept[converted], dept]),
        prescriber=np.concatenate([c.prescriber[converted], prescriber]),
        day=day,
        final_status=np.concatenate([np.full(len(converted), CONVERTED), np.where(cancel, P_CANCELLED, EXPIRED)]),
        final_drop=np.concatenate([c.created[converted], cal.next_working(final_day)]),
    )
    order = np.argsort(day, kind="stable")
    p = _Prescriptions(**{k: v[order] for k, v in fields.items()})
    p.ids = _numbered("PR-", _year(p.day), np.zeros(len(p.day), np.int64), ("",), 6)
    return p


# --------------------------------------------------------------------------- envelopes

@dataclass
class _Envelopes:
    year: np.ndarray
    region: np.ndarray
    measure: np.ndarray
    version: np.ndarray
    physical: np.ndarray
    cents: np.ndarray
    drop: np.ndarray  # decided (= keyed) day


def _envelopes(rng, cal: _Calendar, geo: _Geo, c: _Contracts, scale: float) -> _Envelopes:
    """Version 1 in the first drop of each year; a quarter revised once or twice from March to November."""
    in_force = ~c.cancelled
    cost = np.array([  # cents paid per entry, by measure, from the simulated contracts
        (c.aid * (c.end - c.start + 1) / 30.4375)[in_force & (c.measure == k)].mean()
        if (in_force & (c.measure == k)).any() else 0.0 for k in range(4)])
    region_share = np.bincount(geo.region, weights=geo.weight, minlength=len(geo.region_codes))
    rows = []
    for year in np.unique(_year(cal.drops)):
        drops = cal.drops[_year(cal.drops) == year]
        march, december = _day(date(int(year), 3, 1)), _day(date(int(year), 12, 1))
        for region in range(len(geo.region_codes)):
            for k in range(4):
                expected = ANNUAL_ENTRIES * scale * MEASURE_SHARE[k] * region_share[region]
                physical = expected * rng.uniform(0.9, 1.1)
                money = expected * cost[k] * rng.uniform(0.9, 1.1)
                day = drops[0]
                for version in (1, 2, 3):
                    rows.append((year, region, k, version, round(physical), round(money / 10_000) * 10_000, day))
                    later = drops[(drops >= max(day + 20, march)) & (drops < december)]  # mid-year
                    if len(later) == 0 or rng.random() > (0.25 if version == 1 else 0.3):
                        break
                    day = later[rng.integers(0, len(later))]
                    physical *= rng.uniform(0.95, 1.15)
                    money *= rng.uniform(0.95, 1.15)
    return _Envelopes(*np.array(rows, dtype=np.int64).reshape(-1, 7).T)


# --------------------------------------------------------------------------- text

def _year(days: np.ndarray) -> np.ndarray:
    return np.asarray(days).astype("datetime64[D]").astype("datetime64[Y]").astype(np.int64) + 1970


def _numbered(prefix: str, year: np.ndarray, group: np.ndarray, group_names: tuple[str, ...],
              width: int) -> pl.Series:
    """Ids `<prefix><group><year>-<n>`, n counting from 1 per (group, year) in row order."""
    return _ids(prefix, year, _sequence(group * 10_000 + year), _codes(group_names, group), width)


def _sequence(key: np.ndarray) -> np.ndarray:
    """1, 2, 3... within each key, in row order."""
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_key)) + 1] if len(key) else np.zeros(0, np.int64)
    rank = np.arange(len(key)) - np.repeat(starts, np.diff(np.r_[starts, len(key)]))
    seq = np.empty(len(key), np.int64)
    seq[order] = rank + 1
    return seq


def _ids(prefix: str, year: np.ndarray, seq: np.ndarray, group: pl.Series | None, width: int) -> pl.Series:
    frame = pl.DataFrame({"y": year, "n": seq})
    parts = [pl.lit(group)] if group is not None else []
    text = pl.concat_str([pl.lit(prefix), *parts, pl.col("y").cast(pl.Utf8), pl.lit("-"),
                          pl.col("n").cast(pl.Utf8).str.zfill(width)])
    return frame.select(text.alias("id"))["id"]


def _padded(series: pl.Series) -> pl.Series:
    """The series with a trailing null, for `_take`."""
    return pl.concat([series, pl.Series([None], dtype=series.dtype)], rechunk=True)


def _take(padded: pl.Series, index: np.ndarray) -> pl.Series:
    """padded[index] (see `_padded`), null where index < 0."""
    index = np.asarray(index)
    return padded.gather(np.where(index < 0, len(padded) - 1, index))


@functools.lru_cache(maxsize=64)
def _code_table(names: tuple[str | None, ...]) -> pl.Series:
    return _padded(pl.Series(list(names), dtype=pl.Utf8))


def _codes(names: tuple[str | None, ...], index: np.ndarray) -> pl.Series:
    """Codes by index; a negative index gives null."""
    return _take(_code_table(names), index)


def _money(col: str) -> pl.Expr:
    """Integer cents -> `-1234.56`."""
    cents = pl.col(col).cast(pl.Int64)
    return pl.concat_str([pl.when(cents < 0).then(pl.lit("-")).otherwise(pl.lit("")),
                          (cents.abs() // 100).cast(pl.Utf8), pl.lit("."),
                          (cents.abs() % 100).cast(pl.Utf8).str.zfill(2)])


def _half_units(col: str) -> pl.Expr:
    """Integer halves -> `26` or `22.5`."""
    whole = (pl.col(col) // 2).cast(pl.Utf8)
    return pl.when(pl.col(col) % 2 == 0).then(whole).otherwise(whole + ".5")


class _Text:
    """Turns typed rows (numbers, indexes) into the text columns of each file."""

    def __init__(self, cal: _Calendar, geo: _Geo, pr: _Prescribers, c: _Contracts, p: _Prescriptions):
        self.geo, self.pr, self.c, self.p = geo, pr, c, p
        self.day_lo = cal.lo
        days = np.arange(cal.lo, cal.hi + 1).astype("datetime64[D]")
        self.day_names = _padded(pl.Series(np.datetime_as_string(days).tolist(), dtype=pl.Utf8))
        self.contract_ids, self.prescription_ids = _padded(c.ids), _padded(p.ids)
        self.month_lo = _month(cal.lo)
        months = np.arange(self.month_lo, _month(cal.hi) + 1).astype("datetime64[M]")
        self.month_names = pl.Series(np.datetime_as_string(months).tolist(), dtype=pl.Utf8)
        self.prescription_of = np.full(len(c.start), -1)
        linked = np.flatnonzero(p.contract >= 0)
        self.prescription_of[p.contract[linked]] = linked

    def days(self, days: np.ndarray) -> pl.Series:
        days = np.asarray(days, dtype=np.int64)
        return _take(self.day_names, np.where(days < 0, -1, days - self.day_lo))

    def contracts(self, rows: pl.DataFrame) -> pl.DataFrame:
        c, k = self.c, rows["_key"].to_numpy()
        text = pl.DataFrame({
            "contract_id": self.contract_ids.gather(k),
            "version": rows["_ver"].cast(pl.Utf8),
            "measure": _codes(MEASURES, c.measure[k]),
            "department": _codes(self.geo.codes, c.dept[k]),
            "employer_id": pl.Series(c.siret[k]).cast(pl.Utf8),
            "employer_type": _codes(EMPLOYER_TYPES, c.employer_type[k]),
            "prescriber_id": _codes(self.pr.names, c.prescriber[k]),
            "prescription_id": _take(self.prescription_ids, self.prescription_of[k]),
            "beneficiary_sex": _codes(("M", "F"), c.female[k].astype(np.int64)),
            "beneficiary_birth_year": pl.Series(c.birth_year[k]).cast(pl.Utf8),
            "beneficiary_category": _codes(CATEGORIES, c.category[k]),
            "signed_date": self.days(c.signed[k]),
            "start_date": self.days(c.start[k]),
            "planned_end_date": self.days(rows["planned"].to_numpy()),
            "actual_end_date": self.days(rows["actual"].to_numpy()),
            "end_reason": _codes(END_REASONS, rows["reason"].to_numpy()),
            "weekly_hours": c.half_hours[k],
            "subsidy_rate": c.rate[k],
            "monthly_aid_eur": c.aid[k],
            "status": _codes(CONTRACT_STATUSES, rows["status"].to_numpy()),
        })
        return text.with_columns(
            _half_units("weekly_hours").alias("weekly_hours"), _money("subsidy_rate").alias("subsidy_rate"),
            _money("monthly_aid_eur").alias("monthly_aid_eur"), rows["_drop"], rows["_ord"])

    def payments(self, rows: pl.DataFrame) -> pl.DataFrame:
        drop = rows["_drop"].to_numpy()
        text = pl.DataFrame({
            "payment_id": _ids("PAY-", _year(drop), rows["seq"].to_numpy(), None, 7),
            "contract_id": self.contract_ids.gather(rows["contract"].to_numpy()),
            "period_month": self.month_names.gather(rows["month"].to_numpy() - self.month_lo),
            "paid_date": self.days(drop),
            "amount_eur": rows["cents"],
            "kind": _codes(PAYMENT_KINDS, rows["kind"].to_numpy()),
        })
        return text.with_columns(_money("amount_eur").alias("amount_eur"), rows["_drop"], rows["_ord"])

    def prescriptions(self, rows: pl.DataFrame) -> pl.DataFrame:
        p, k = self.p, rows["_key"].to_numpy()
        status = rows["status"].to_numpy()
        return pl.DataFrame({
            "prescription_id": self.prescription_ids.gather(k),
            "version": rows["_ver"].cast(pl.Utf8),
            "measure": _codes(MEASURES, p.measure[k]),
            "department": _codes(self.geo.codes, p.dept[k]),
            "prescriber_id": _codes(self.pr.names, p.prescriber[k]),
            "prescribed_date": self.days(p.day[k]),
            "status": _codes(PRESCRIPTION_STATUSES, status),
            "contract_id": _take(self.contract_ids, np.where(status == CONVERTED, p.contract[k], -1)),
        }).with_columns(rows["_drop"], rows["_ord"])

    def envelopes(self, rows: pl.DataFrame) -> pl.DataFrame:
        return pl.DataFrame({
            "year": rows["year"].cast(pl.Utf8),
            "region_code": _codes(self.geo.region_codes, rows["region"].to_numpy()),
            "measure": _codes(MEASURES, rows["measure"].to_numpy()),
            "version": rows["_ver"].cast(pl.Utf8),
            "physical_envelope": rows["physical"].cast(pl.Utf8),
            "financial_envelope_eur": rows["cents"],
            "decided_date": self.days(rows["decided"].to_numpy()),
        }).with_columns(_money("financial_envelope_eur").alias("financial_envelope_eur"), rows["_drop"], rows["_ord"])


# --------------------------------------------------------------------------- rows of the drops

def _latest_before(entity: np.ndarray, drop: np.ndarray, first: int) -> np.ndarray:
    """Rows (sorted by entity, version) that are the latest of their entity keyed before `first`."""
    before = np.flatnonzero(drop < first)
    last_of_entity = np.r_[entity[before][1:] != entity[before][:-1], True] if len(before) else before
    return before[last_of_entity.astype(bool)]


def _next_drop(key: np.ndarray, version: np.ndarray, drop: np.ndarray) -> np.ndarray:
    """Drop of the next version sent of the same entity (-1 if none)."""
    order = np.lexsort((version, key))
    nxt = np.full(len(key), -1, dtype=np.int64)
    same = key[order[1:]] == key[order[:-1]]
    nxt[order[:-1][same]] = drop[order[1:]][same]
    return nxt


def _typed(columns: dict[str, np.ndarray]) -> pl.DataFrame:
    """A frame of typed rows sorted by drop then order within the drop."""
    drop, order = columns.pop("_drop").astype(np.int32), columns.pop("_ord").astype(np.int64)
    frame = pl.DataFrame({"_drop": drop, "_ord": order, **columns})
    return frame.sort("_drop", "_ord", maintain_order=True)


def _contract_rows(cal: _Calendar, v: _Versions, c: _Contracts, pay: _Payments,
                   start: int) -> tuple[pl.DataFrame, np.ndarray]:
    """Versions keyed in the drops, plus the latest earlier version of the contracts in force
    on `start` (or paid after it), all in the first drop; and the latter contracts."""
    first, last = cal.drops[0], cal.drops[-1]
    inside = np.flatnonzero((v.drop >= first) & (v.drop <= last))
    prior = _latest_before(v.contract, v.drop, first)
    end = np.where(v.actual_end[prior] >= 0, v.actual_end[prior], v.planned_end[prior])
    paid = np.zeros(len(c.start), bool)
    paid[pay.contract] = True
    prior = prior[(v.status[prior] != CANCELLED) & ((end >= start) | paid[v.contract[prior]])]
    rows = np.concatenate([prior, inside])
    drop = np.concatenate([np.full(len(prior), first), v.drop[inside]])
    key, version = v.contract[rows], v.version[rows]
    return _typed({
        "_drop": drop, "_ord": key * 8 + version, "_key": key.astype(np.int32), "_ver": version.astype(np.int32),
        "_next": _next_drop(key, version, drop).astype(np.int32),
        "planned": v.planned_end[rows].astype(np.int32), "actual": v.actual_end[rows].astype(np.int32),
        "reason": v.end_reason[rows].astype(np.int8), "status": v.status[rows].astype(np.int8),
    }), np.unique(v.contract[prior])


def _prescription_rows(cal: _Calendar, p: _Prescriptions, stock: np.ndarray) -> pl.DataFrame:
    """Versions keyed in the drops, plus the latest earlier version of the prescriptions still
    open on the first drop or converted into a contract of the initial stock, in the first drop."""
    first, last = cal.drops[0], cal.drops[-1]
    n = len(p.day)
    key = np.repeat(np.arange(n), 2)
    version = np.tile([1, 2], n)
    drop = np.where(version == 1, p.day[key], p.final_drop[key])
    status = np.where(version == 1, ISSUED, p.final_status[key])
    prior = _latest_before(key, drop, first)
    in_stock = np.isin(p.contract[key[prior]], stock)
    prior = prior[(status[prior] == ISSUED) | ((status[prior] == CONVERTED) & in_stock)]
    rows = np.sort(np.concatenate([prior, np.flatnonzero((drop >= first) & (drop <= last))]))
    drop = np.maximum(drop[rows], first)
    key, version = key[rows], version[rows]
    return _typed({
        "_drop": drop, "_ord": key * 4 + version, "_key": key.astype(np.int32), "_ver": version.astype(np.int32),
        "_next": _next_drop(key, version, drop).astype(np.int32), "status": status[rows].astype(np.int8),
    })


def _payment_rows(pay: _Payments) -> pl.DataFrame:
    """Payments (already sorted by drop), numbered per year of payment."""
    return pl.DataFrame({
        "_drop": pay.drop, "_ord": np.arange(len(pay.drop), dtype=np.int64), "contract": pay.contract,
        "month": pay.month, "cents": pay.cents, "kind": pay.kind, "seq": _sequence(_year(pay.drop)).astype(np.int32),
    })


def _envelope_rows(e: _Envelopes) -> pl.DataFrame:
    key = (e.year * 100 + e.region) * 4 + e.measure
    return _typed({
        "_drop": e.drop, "_ord": key * 4 + e.version, "_key": key, "_ver": e.version,
        "_next": _next_drop(key, e.version, e.drop), "year": e.year, "region": e.region, "measure": e.measure,
        "physical": e.physical, "cents": e.cents, "decided": e.drop,
    })


# --------------------------------------------------------------------------- bad rows

RESENT = ("conflict", "stale", "duplicate")
RESEND_SPAN = 10  # a re-sent row comes back within this many drops


def _choose(rng, n: int, *values) -> pl.Series:
    """n values drawn among `values`."""
    return pl.Series(np.array(values, dtype=object)[rng.integers(0, len(values), n)].tolist(), dtype=pl.Utf8)


def _bad_date(col: str, n: int, rng) -> pl.Expr:
    """`14/03/2006` or an impossible day such as `2006-02-30`."""
    day, month, year = (pl.col(col).str.slice(*at) for at in ((8, 2), (5, 2), (0, 4)))
    swapped = pl.format("{}/{}/{}", day, month, year)
    impossible = pl.col(col).str.slice(0, 4) + pl.lit(_choose(rng, n, "-02-30", "-04-31", "-06-31", "-13-01"))
    return pl.when(pl.lit(pl.Series(rng.random(n) < 0.5))).then(swapped).otherwise(impossible)


def _one_of(rng, n: int, changes: dict[str, pl.Expr]) -> dict[str, pl.Expr]:
    """Apply one of the changes per row (the column chosen at random)."""
    which = pl.lit(pl.Series(rng.integers(0, len(changes), n)))
    return {c: pl.when(which == j).then(e).otherwise(pl.col(c)) for j, (c, e) in enumerate(changes.items())}


def _days_from(col: str, days: np.ndarray) -> pl.Expr:
    shifted = pl.col(col).str.to_date("%Y-%m-%d") + pl.duration(days=pl.lit(pl.Series(days, dtype=pl.Int64)))
    return shifted.dt.strftime("%Y-%m-%d")


def _empty_one(rows: pl.DataFrame, rng, required: tuple[str, ...]) -> pl.DataFrame:
    """Empty one required field per row."""
    which = pl.lit(pl.Series(rng.integers(0, len(required), rows.height)))
    return rows.with_columns(
        pl.when(which == j).then(pl.lit(None, pl.Utf8)).otherwise(pl.col(c)).alias(c)
        for j, c in enumerate(required))


def _contract_change(kind: str, n: int, rng) -> dict[str, pl.Expr]:
    s = pl.col
    changes = {
        "id_too_long": lambda: {"contract_id": s("contract_id") + "-ANNULE-ET-REMPLACE-PAR-AVENANT"},
        "unknown_measure": lambda: {"measure": pl.lit(_choose(rng, n, "CES", "CEC", "CUI", "SIFE"))},
        "unknown_employer_type": lambda: {"employer_type": pl.lit(_choose(rng, n, "MAIRIE", "SCOP", "EPCI", "SA"))},
        "unknown_sex": lambda: {"beneficiary_sex": pl.lit(_choose(rng, n, "H", "X", "U"))},
        "unknown_category": lambda: {"beneficiary_category": pl.lit(_choose(rng, n, "RSA", "SENIOR", "DE", "AAH"))},
        "unknown_status": lambda: {"status": pl.lit(_choose(rng, n, "SUSPENDED", "CLOSED", "EN_COURS"))},
        "bad_department": lambda: {"department": pl.lit(_choose(rng, n, "20", "975", "99"))},
        "bad_siret": lambda: {"employer_id": pl.when(pl.lit(pl.Series(rng.random(n) < 0.5)))
                              .then(s("employer_id").str.slice(0, 13)).otherwise(s("employer_id") + "0")},
        "bad_date": lambda: _one_of(rng, n, {c: _bad_date(c, n, rng)
                                             for c in ("signed_date", "start_date", "planned_end_date")}),
        "decimal_comma": lambda: _one_of(rng, n, {
            "weekly_hours": s("weekly_hours").str.replace(r"\.5$", "") + ",5",
            "subsidy_rate": s("subsidy_rate").str.replace(".", ",", literal=True),
            "monthly_aid_eur": s("monthly_aid_eur").str.replace(".", ",", literal=True)}),
        "bad_weekly_hours": lambda: {"weekly_hours": pl.lit(_choose(rng, n, "0", "50"))},
        "bad_subsidy_rate": lambda: {"subsidy_rate": pl.lit(_choose(rng, n, "0", "1.2"))},
        "negative_aid": lambda: {"monthly_aid_eur": "-" + s("monthly_aid_eur")},
        "age_out_of_range": lambda: {"beneficiary_birth_year": (
            s("start_date").str.slice(0, 4).cast(pl.Int64) - pl.lit(pl.Series(rng.choice([15, 14, 71, 75, 80], n)))
        ).cast(pl.Utf8)},
        "signed_after_start": lambda: {"signed_date": _days_from("start_date", rng.integers(1, 10, n))},
        "planned_end_before_start": lambda: {"planned_end_date": _days_from("start_date", -rng.integers(1, 60, n))},
        "actual_end_before_start": lambda: {
            "actual_end_date": _days_from("start_date", -rng.integers(1, 30, n)),
            "end_reason": s("end_reason").fill_null("RUPTURE_EMPLOYEUR"), "status": pl.lit("ENDED")},
        "end_reason_without_actual_end": lambda: {"end_reason": pl.lit("AUTRE")},
        "actual_end_without_end_reason": lambda: {"actual_end_date": s("start_date"), "status": pl.lit("ENDED")},
        "ended_without_actual_end": lambda: {"status": pl.lit("ENDED")},
        "active_with_actual_end": lambda: {"actual_end_date": s("start_date"),
                                           "end_reason": pl.lit("RUPTURE_SALARIE")},
        "version_zero": lambda: {"version": pl.lit("0")},
        "conflict": lambda: {"employer_type": pl.when(s("employer_type") == "ASSOCIATION")
                             .then(pl.lit("COMMUNE")).otherwise(pl.lit("ASSOCIATION"))},
    }
    return changes[kind]() if kind in changes else {}


def _payment_change(kind: str, n: int, rng) -> dict[str, pl.Expr]:
    s = pl.col
    month = s("period_month")
    changes = {
        "id_too_long": lambda: {"payment_id": s("payment_id") + "-REEMISSION-APRES-REJET-BANQUE"},
        "unknown_kind": lambda: {"kind": pl.lit(_choose(rng, n, "BONUS", "AVANCE", "AIDE"))},
        "bad_date": lambda: {"paid_date": _bad_date("paid_date", n, rng)},
        "decimal_comma": lambda: {"amount_eur": s("amount_eur").str.replace(".", ",", literal=True)},
        "zero_amount": lambda: {"amount_eur": pl.lit(_choose(rng, n, "0.00", "0"))},
        "negative_aid": lambda: {"amount_eur": "-" + s("amount_eur")},
        "bad_period_month": lambda: {"period_month": pl.when(month.str.slice(5, 1) == "0")
                                     .then(month.str.slice(0, 5) + month.str.slice(6, 1))
                                     .otherwise(month.str.slice(0, 5) + "13")},
        "conflict": lambda: {"amount_eur": pl.when(s("amount_eur").str.starts_with("-"))
                             .then("-1" + s("amount_eur").str.slice(1)).otherwise("1" + s("amount_eur"))},
    }
    return changes[kind]() if kind in changes else {}


def _prescription_change(kind: str, n: int, rng, some_contract: str) -> dict[str, pl.Expr]:
    s = pl.col
    changes = {
        "id_too_long": lambda: {"prescription_id": s("prescription_id") + "-RENOUVELLEMENT-DEMANDE-0001"},
        "unknown_measure": lambda: {"measure": pl.lit(_choose(rng, n, "CES", "CEC", "CUI", "SIFE"))},
        "bad_department": lambda: {"department": pl.lit(_choose(rng, n, "20", "975", "99"))},
        "unknown_status": lambda: {"status": pl.lit(_choose(rng, n, "OPEN", "PENDING", "VALIDEE"))},
        "bad_date": lambda: {"prescribed_date": _bad_date("prescribed_date", n, rng)},
        "version_zero": lambda: {"version": pl.lit("0")},
        "converted_without_contract": lambda: {"contract_id": pl.lit(None, pl.Utf8)},
        "issued_with_contract": lambda: {"contract_id": pl.lit(some_contract)},
        "conflict": lambda: {"prescriber_id": pl.when(s("prescriber_id").str.starts_with("CG-"))
                             .then(pl.format("ALE-{}-CENTRE", s("department")))
                             .otherwise(pl.format("CG-{}", s("department")))},
    }
    return changes[kind]() if kind in changes else {}


def _envelope_change(kind: str, n: int, rng) -> dict[str, pl.Expr]:
    s = pl.col
    changes = {
        "unknown_region": lambda: {"region_code": pl.lit("99")},
        "negative_envelope": lambda: _one_of(rng, n, {"physical_envelope": "-" + s("physical_envelope"),
                                                       "financial_envelope_eur": "-" + s("financial_envelope_eur")}),
        "version_zero": lambda: {"version": pl.lit("0")},
        "conflict": lambda: {"physical_envelope": (s("physical_envelope").cast(pl.Int64) + 12).cast(pl.Utf8)},
    }
    return changes[kind]() if kind in changes else {}


OPTIONAL = {  # columns that may be empty (the others are "required")
    "contracts.csv": {"prescriber_id", "prescription_id", "actual_end_date", "end_reason"},
    "prescriptions.csv": {"contract_id"},
}


def _candidates(file: str, kind: str, rows: pl.DataFrame, last_drop: int) -> np.ndarray:
    """Mask of the rows a bad row of this kind can be made from."""
    s = pl.col
    if kind in ("conflict", "duplicate"):
        where = s("_drop") < last_drop
    elif kind == "stale":
        where = s("_next") >= 0
    else:
        where = {
            ("contracts.csv", "end_reason_without_actual_end"): s("status") == ACTIVE,
            ("contracts.csv", "actual_end_without_end_reason"): s("status") == ACTIVE,
            ("contracts.csv", "ended_without_actual_end"): s("status") == ACTIVE,
            ("contracts.csv", "active_with_actual_end"): s("status") == ACTIVE,
            ("contracts.csv", "actual_end_before_start"): s("status") != CANCELLED,
            ("contracts.csv", "unknown_status"): s("actual") < 0,
            ("contracts.csv", "empty_required"): s("status") == ACTIVE,  # (an empty status blurs "ENDED iff")
            ("payments.csv", "negative_aid"): s("kind") == AID,
            ("payments.csv", "unknown_kind"): s("kind") != RECOVERY,  # (negative only when RECOVERY)
            ("payments.csv", "empty_required"): s("kind") != RECOVERY,
            ("prescriptions.csv", "empty_required"): s("status") != CONVERTED,  # (contract_id iff CONVERTED)
            ("prescriptions.csv", "converted_without_contract"): s("status") == CONVERTED,
            ("prescriptions.csv", "issued_with_contract"): s("status") == ISSUED,
            ("prescriptions.csv", "unknown_status"): s("status") != CONVERTED,
        }.get((file, kind), pl.lit(True))
    return rows.with_columns(ok=where)["ok"].to_numpy()  # (with_columns broadcasts a literal)


def _resend_window(cal: _Calendar, drop: np.ndarray, nxt: np.ndarray, stale: bool) -> tuple[np.ndarray, np.ndarray]:
    """Drop positions where a re-sent row is a duplicate or conflict (after the row, before
    its next version) or stale (after its next version); lo > hi when there is none."""
    last = len(cal.drops) - 1
    at = cal.drop_index(drop)
    nxt_at = np.where(nxt >= 0, cal.drop_index(np.maximum(nxt, 0)), last + 1)
    if stale:
        return nxt_at + 1, np.minimum(nxt_at + RESEND_SPAN, last)
    return at + 1, np.minimum(np.minimum(at + RESEND_SPAN, nxt_at - 1), last)


def _pick(rng, cal: _Calendar, rows: pl.DataFrame, kind: str, n: int, mask: np.ndarray) -> pl.DataFrame:
    """n typed rows to derive bad rows from; re-sent ones get their new drop in `_to`."""
    candidates = np.flatnonzero(mask)
    resent = kind in RESENT
    size = min(len(candidates), 3 * n if resent else n)
    chosen = np.sort(rng.choice(candidates, size=size, replace=False)) if size else candidates[:0]
    picked = rows[chosen]
    if not resent:
        return picked
    nxt = picked["_next"].to_numpy() if "_next" in picked.columns else np.full(size, -1)
    lo, hi = _resend_window(cal, picked["_drop"].to_numpy(), nxt, kind == "stale")
    ok = np.flatnonzero(lo <= hi)[:n]
    to = lo[ok] + (rng.random(len(ok)) * (hi[ok] - lo[ok] + 1)).astype(np.int64)
    return picked[ok].with_columns(_to=pl.Series(cal.drops[to], dtype=pl.Int32))


def _bad_rows(rng, cal: _Calendar, f: _File, some_contract: str) -> pl.DataFrame | None:
    """Extra text rows of every bad kind of one file, tagged in `_bad`."""
    kinds = BAD_ROW_KINDS[f.name]
    per_kind = max(1, round(BAD_SHARE * f.rows.height / len(kinds)))
    made = []
    for kind in kinds:
        rows = _pick(rng, cal, f.rows, kind, per_kind, _candidates(f.name, kind, f.rows, cal.drops[-1]))
        if rows.height == 0:
            continue
        text = f.render(rows)
        if kind in RESENT:
            text = text.with_columns(_drop=rows["_to"])
        if kind == "empty_required":
            text = _empty_one(text, rng, tuple(c for c in f.columns if c not in OPTIONAL.get(f.name, ())))
        elif f.name == "prescriptions.csv":
            text = text.with_columns(**_prescription_change(kind, text.height, rng, some_contract))
        else:
            change = {"contracts.csv": _contract_change, "payments.csv": _payment_change,
                      "envelopes.csv": _envelope_change}[f.name]
            text = text.with_columns(**change(kind, text.height, rng))
        made.append(text.with_columns(_bad=pl.lit(kind)))
    if not made:
        return None
    return pl.concat(made).sort("_drop", "_ord", maintain_order=True)


# --------------------------------------------------------------------------- simulation

@dataclass
class _File:
    """The rows of one file over all drops."""

    name: str
    columns: tuple[str, ...]
    rows: pl.DataFrame  # typed good rows, sorted by `_drop` (day number) then `_ord`
    render: Callable[[pl.DataFrame], pl.DataFrame]  # typed rows -> text columns + `_drop`, `_ord`
    bad: pl.DataFrame | None = None  # text bad rows + `_drop`, `_ord`, `_bad` (kind), sorted likewise

    def text(self, rows: slice | None = None, bad: slice | None = None) -> pl.DataFrame:
        """Text of (a slice of) the good rows with (a slice of) the bad ones, in file order."""
        good = self.rows if rows is None else self.rows[rows]
        text = self.render(good).with_columns(_bad=pl.lit(None, pl.Utf8))
        extra = None if self.bad is None else (self.bad if bad is None else self.bad[bad])
        if extra is None or extra.height == 0:
            return text
        return pl.concat([text, extra]).sort("_drop", "_ord", maintain_order=True)


@dataclass
class Frames:
    """Everything the drops hold, before writing.

    `text(file)` gives the rows of a file over all drops: its columns as written,
    plus `_drop` (day number of the drop carrying the row), `_ord` (order in the
    drop) and `_bad` (null for a good row, else its kind from BAD_ROW_KINDS).
    """

    drops: list[date]
    files: dict[str, _File]

    def text(self, name: str) -> pl.DataFrame:
        return self.files[name].text()


def build_frames(start: date, end: date, scale: float = 1.0, seed: int = 42, bad_rows: bool = True) -> Frames:
    """Simulate everything `generate_drops` writes (bad rows tagged, for tests)."""
    drops = np.array([_day(d) for d in working_days(start, end)], dtype=np.int64)
    if len(drops) == 0:
        return Frames([], {})
    rng = np.random.default_rng(seed)
    lo = _day(start) - HISTORY_DAYS
    cal = _Calendar(lo - 400, int(drops[-1]) + 5 * 366, drops)
    geo = _geography()
    pr = _prescribers(geo)
    c = _simulate_contracts(rng, cal, geo, pr, scale, lo, int(drops[-1]) + 10)
    versions = _lifecycle(rng, cal, c)
    p = _prescriptions(rng, cal, pr, c)
    c.ids = _numbered("", _year(c.signed), c.measure, tuple(f"{m}-" for m in MEASURES), 6)
    pay = _payments(rng, cal, c)
    env = _envelopes(rng, cal, geo, c, scale)

    text = _Text(cal, geo, pr, c, p)
    contracts, stock = _contract_rows(cal, versions, c, pay, _day(start))
    del versions
    typed = {
        "contracts.csv": (contracts, text.contracts),
        "payments.csv": (_payment_rows(pay), text.payments),
        "prescriptions.csv": (_prescription_rows(cal, p, stock), text.prescriptions),
        "envelopes.csv": (_envelope_rows(env), text.envelopes),
    }
    files = {name: _File(name, columns, *typed[name]) for name, columns, _ in FILES}
    if bad_rows:
        some_contract = c.ids[0] if len(c.ids) else "CAE-2006-000001"
        for f in files.values():
            f.bad = _bad_rows(rng, cal, f, some_contract)
    return Frames([_date(d) for d in drops], files)


# --------------------------------------------------------------------------- writing

def _csv_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_csv(buffer, separator=";", quote_char='"', quote_style="necessary",
                    null_value="", line_terminator="\n", include_header=True)
    return buffer.getvalue()


def _bounds(frame: pl.DataFrame | None, days: np.ndarray) -> np.ndarray:
    """Row offsets of each drop's slice in a frame sorted by `_drop` (len(days) + 1 values)."""
    if frame is None:
        return np.zeros(len(days) + 1, np.int64)
    return np.searchsorted(frame["_drop"].to_numpy(), np.r_[days, days[-1] + 1])


def _batches(sizes: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Runs [i, j) of consecutive drops holding at most `limit` rows (or a single drop)."""
    runs, i = [], 0
    while i < len(sizes):
        j = i + 1
        while j < len(sizes) and sizes[i:j + 1].sum() <= limit:
            j += 1
        runs.append((i, j))
        i = j
    return runs


def generate_drops(out_dir: Path, start: date, end: date, scale: float = 1.0, seed: int = 42,
                   bad_rows: bool = True, progress: Callable[[int], None] | None = None) -> list[Path]:
    """Write one drop folder out_dir/YYYY-MM-DD/ per working day in [start, end]; return them sorted."""
    frames = build_frames(start, end, scale, seed, bad_rows)
    if not frames.drops:
        return []
    days = np.array([_day(d) for d in frames.drops])
    bounds = {name: (_bounds(f.rows, days), _bounds(f.bad, days)) for name, f in frames.files.items()}
    sizes = sum(np.diff(good) + np.diff(bad) for good, bad in bounds.values())
    written = []
    for i, j in _batches(sizes, WRITE_BATCH_ROWS):
        texts = {}
        for name, (good, bad) in bounds.items():  # text of drops i..j-1, then sliced per drop
            text = frames.files[name].text(slice(good[i], good[j]), slice(bad[i], bad[j]))
            texts[name] = (text, _bounds(text, days[i:j]))
        for k in range(i, j):
            written.append(_write_drop(Path(out_dir) / frames.drops[k].isoformat(),
                                       {name: text[at[k - i]:at[k - i + 1]] for name, (text, at) in texts.items()}))
            if progress is not None:
                progress(1)
    return written


def _write_drop(folder: Path, texts: dict[str, pl.DataFrame]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    control = ["file;rows;sha256"]
    for name, columns, required in FILES:
        text = texts[name]
        if text.height == 0 and not required:
            (folder / name).unlink(missing_ok=True)
            continue
        data = _csv_bytes(text.select(columns))
        (folder / name).write_bytes(data)
        control.append(f"{name};{text.height};{hashlib.sha256(data).hexdigest()}")
    (folder / "control.csv").write_bytes(("\n".join(control) + "\n").encode())
    return folder
