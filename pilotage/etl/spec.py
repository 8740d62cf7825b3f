"""The interface contract (shared/extracts/SPEC.md) as data.

Each file of a drop is a `FileSpec`: its columns with their type and the
format rules that follow from it, and the rules that tie columns together.
The validator compiles these into one vectorised SQL pass per file; nothing
here runs per row.

A rule's `violated` SQL is written over the *typed* columns (named as in the
file) and must be TRUE exactly when the row breaks the rule. A NULL typed
value (empty, or already rejected by its format rule) never breaks a
cross-column rule: each row is reported for what is really wrong with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pilotage.warehouse.reference import MEASURE_CODES, department_codes, region_2005_codes

EMPLOYER_TYPES = ("COMMUNE", "DEPARTEMENT", "REGION", "ETAB_PUBLIC", "ASSOCIATION", "ENTREPRISE", "AUTRE")
CATEGORIES = ("RMI", "ASS", "API", "DELD", "JEUNE", "TH", "AUTRE")
END_REASONS = ("TERME", "RUPTURE_EMPLOYEUR", "RUPTURE_SALARIE", "EMBAUCHE", "AUTRE")
CONTRACT_STATUSES = ("ACTIVE", "ENDED", "CANCELLED")
PRESCRIPTION_STATUSES = ("ISSUED", "CONVERTED", "EXPIRED", "CANCELLED")
PAYMENT_KINDS = ("AID", "REGULARISATION", "RECOVERY")


@dataclass(frozen=True)
class Column:
    """A column of a drop file and its format.

    kind: text | code | integer | decimal | date | month.
    """

    name: str
    kind: str
    nullable: bool = False
    max_length: int | None = None
    codes: tuple[str, ...] = ()
    digits: int = 9  # integer part of a decimal, or digits of an integer
    scale: int = 0  # decimals allowed after the point

    @property
    def sql_type(self) -> str:
        return {
            "integer": "BIGINT",
            "decimal": f"DECIMAL({self.digits + self.scale},{self.scale})",
            "date": "DATE",
        }.get(self.kind, "VARCHAR")


@dataclass(frozen=True)
class Rule:
    """A rule tying columns together; `column` is the one blamed."""

    name: str
    column: str
    violated: str
    message: str


@dataclass(frozen=True)
class FileSpec:
    name: str  # contracts | payments | prescriptions | envelopes
    required: bool
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    versioned: bool
    rules: tuple[Rule, ...] = field(default=())

    @property
    def filename(self) -> str:
        return f"{self.name}.csv"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _text(name: str, nullable: bool = False, max_length: int | None = None) -> Column:
    return Column(name, "text", nullable=nullable, max_length=max_length)


def _code(name: str, codes: tuple[str, ...]) -> Column:
    return Column(name, "code", codes=codes)


def _version() -> Column:
    return Column("version", "integer")


def _version_rule() -> Rule:
    return Rule("version_at_least_1", "version", "version < 1", "version must be 1 or more")


CONTRACTS = FileSpec(
    name="contracts",
    required=True,
    key=("contract_id",),
    versioned=True,
    columns=(
        _text("contract_id", max_length=32),
        _version(),
        _code("measure", MEASURE_CODES),
        _code("department", department_codes()),
        _text("employer_id"),
        _code("employer_type", EMPLOYER_TYPES),
        _text("prescriber_id", nullable=True),
        _text("prescription_id", nullable=True),
        _code("beneficiary_sex", ("F", "M")),
        Column("beneficiary_birth_year", "integer", digits=4),
        _code("beneficiary_category", CATEGORIES),
        Column("signed_date", "date"),
        Column("start_date", "date"),
        Column("planned_end_date", "date"),
        Column("actual_end_date", "date", nullable=True),
        Column("end_reason", "code", nullable=True, codes=END_REASONS),
        Column("weekly_hours", "decimal", digits=4, scale=2),
        Column("subsidy_rate", "decimal", digits=2, scale=6),
        Column("monthly_aid_eur", "decimal", digits=12, scale=2),
        _code("status", CONTRACT_STATUSES),
    ),
    rules=(
        _version_rule(),
        Rule("siret_14_digits", "employer_id", "NOT regexp_full_match(employer_id, '[0-9]{14}')",
             "employer_id must be a SIRET of exactly 14 digits"),
        Rule("age_at_start_16_to_70", "beneficiary_birth_year",
             "year(start_date) - beneficiary_birth_year NOT BETWEEN 16 AND 70",
             "the beneficiary must be 16 to 70 in the year of start_date"),
        Rule("signed_not_after_start", "signed_date", "signed_date > start_date",
             "signed_date must be on or before start_date"),
        Rule("planned_end_not_before_start", "planned_end_date", "planned_end_date < start_date",
             "planned_end_date must be on or after start_date"),
        Rule("actual_end_not_before_start", "actual_end_date", "actual_end_date < start_date",
             "actual_end_date must be on or after start_date"),
        Rule("end_reason_iff_actual_end", "end_reason",
             "(end_reason IS NULL) <> (actual_end_date IS NULL)",
             "end_reason is set exactly when actual_end_date is set"),
        Rule("weekly_hours_0_to_48", "weekly_hours", "NOT (weekly_hours > 0 AND weekly_hours <= 48)",
             "weekly_hours must be more than 0 and at most 48"),
        Rule("subsidy_rate_0_to_1", "subsidy_rate", "NOT (subsidy_rate > 0 AND subsidy_rate <= 1)",
             "subsidy_rate must be more than 0 and at most 1"),
        Rule("monthly_aid_not_negative", "monthly_aid_eur", "monthly_aid_eur < 0",
             "monthly_aid_eur must not be negative"),
        Rule("ended_iff_actual_end", "status", "(status = 'ENDED') <> (actual_end_date IS NOT NULL)",
             "status is ENDED exactly when actual_end_date is set"),
    ),
)

PAYMENTS = FileSpec(
    name="payments",
    required=True,
    key=("payment_id",),
    versioned=False,
    columns=(
        _text("payment_id", max_length=32),
        _text("contract_id"),
        Column("period_month", "month"),
        Column("paid_date", "date"),
        Column("amount_eur", "decimal", digits=12, scale=2),
        _code("kind", PAYMENT_KINDS),
    ),
    rules=(
        Rule("amount_not_zero", "amount_eur", "amount_eur = 0", "amount_eur must not be zero"),
        Rule("negative_only_for_recovery", "amount_eur", "amount_eur < 0 AND kind <> 'RECOVERY'",
             "amount_eur may be negative only when kind is RECOVERY"),
    ),
)

PRESCRIPTIONS = FileSpec(
    name="prescriptions",
    required=True,
    key=("prescription_id",),
    versioned=True,
    columns=(
        _text("prescription_id", max_length=32),
        _version(),
        _code("measure", MEASURE_CODES),
        _code("department", department_codes()),
        _text("prescriber_id"),
        Column("prescribed_date", "date"),
        _code("status", PRESCRIPTION_STATUSES),
        _text("contract_id", nullable=True),
    ),
    rules=(
        _version_rule(),
        Rule("contract_id_iff_converted", "contract_id",
             "(status = 'CONVERTED') <> (contract_id IS NOT NULL)",
             "contract_id is set exactly when status is CONVERTED"),
    ),
)

ENVELOPES = FileSpec(
    name="envelopes",
    required=False,
    key=("year", "region_code", "measure"),
    versioned=True,
    columns=(
        Column("year", "integer", digits=4),
        _code("region_code", region_2005_codes()),
        _code("measure", MEASURE_CODES),
        _version(),
        Column("physical_envelope", "integer", digits=12),
        Column("financial_envelope_eur", "decimal", digits=14, scale=2),
        Column("decided_date", "date"),
    ),
    rules=(
        _version_rule(),
        Rule("physical_envelope_not_negative", "physical_envelope", "physical_envelope < 0",
             "physical_envelope must not be negative"),
        Rule("financial_envelope_not_negative", "financial_envelope_eur", "financial_envelope_eur < 0",
             "financial_envelope_eur must not be negative"),
    ),
)

FILES: tuple[FileSpec, ...] = (CONTRACTS, PAYMENTS, PRESCRIPTIONS, ENVELOPES)
FILES_BY_NAME = {spec.filename: spec for spec in FILES}
CONTROL_FILE = "control.csv"

# Rules decided outside the per-row SQL (structure, versions, immutability).
FIELD_COUNT = Rule("field_count", "", "", "the line does not have as many fields as the header")
VERSION_CONFLICT = Rule(
    "version_conflict", "version", "",
    "this key and version were already loaded with other content; the loaded one stands",
)
PAYMENT_CONFLICT = Rule(
    "payment_conflict", "payment_id", "",
    "this payment was already loaded with other fields; payments are immutable",
)


def format_rules(column: Column) -> list[tuple[str, str]]:
    """(rule name, message) of the format rules a column carries, in check order."""
    rules = []
    if not column.nullable:
        rules.append(("not_empty", "must not be empty"))
    if column.kind == "integer":
        rules.append(("integer", "must be a whole number"))
    elif column.kind == "decimal":
        rules.append(("decimal", f"must be a number with a point and at most {column.scale} decimals"))
    elif column.kind == "date":
        rules.append(("date", "must be a real date written YYYY-MM-DD"))
    elif column.kind == "month":
        rules.append(("year_month", "must be a month written YYYY-MM"))
    elif column.kind == "code":
        rules.append(("code", "must be one of " + ", ".join(column.codes)))
    if column.max_length:
        rules.append((f"max_{column.max_length}_chars", f"must be at most {column.max_length} characters"))
    return rules


def rule_messages() -> dict[str, str]:
    """Every rule name the loader can report, with its explanation."""
    messages = {}
    for spec in FILES:
        for column in spec.columns:
            messages.update(format_rules(column))
        messages.update({rule.name: rule.message for rule in spec.rules})
    for rule in (FIELD_COUNT, VERSION_CONFLICT, PAYMENT_CONFLICT):
        messages[rule.name] = rule.message
    messages["code"] = "must be one of the codes SPEC.md lists for this column"
    return messages
