"""The star schema, as an ordered list of migrations.

A warehouse file records the schema version it is at (`schema_migrations`).
Opening a file for writing applies the migrations it lacks, in order, inside
the write session: an existing warehouse is upgraded in place, never rebuilt.
A release that changes the schema appends a migration; it never edits one
that has shipped.

No PRIMARY KEY constraints: DuckDB maintains them with ART indexes that slow
bulk loads and make DELETE+INSERT upserts fragile. Key uniqueness is the
loader's job and is asserted by the tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import duckdb

# Column types shared by the current-state and history tables.
CONTRACT_COLUMNS = """
    contract_id            VARCHAR NOT NULL,
    version                INTEGER NOT NULL,
    measure                VARCHAR NOT NULL,
    department             VARCHAR NOT NULL,
    employer_id            VARCHAR NOT NULL,
    employer_type          VARCHAR NOT NULL,
    prescriber_id          VARCHAR,
    prescription_id        VARCHAR,
    beneficiary_sex        VARCHAR NOT NULL,
    beneficiary_birth_year SMALLINT NOT NULL,
    beneficiary_category   VARCHAR NOT NULL,
    signed_date            DATE NOT NULL,
    start_date             DATE NOT NULL,
    planned_end_date       DATE NOT NULL,
    actual_end_date        DATE,
    end_reason             VARCHAR,
    weekly_hours           DECIMAL(6,2) NOT NULL,
    subsidy_rate           DECIMAL(8,6) NOT NULL,
    monthly_aid_eur        DECIMAL(14,2) NOT NULL,
    status                 VARCHAR NOT NULL,
    end_date               DATE NOT NULL,  -- coalesce(actual_end_date, planned_end_date)
    drop_date              DATE NOT NULL   -- extract date of the first drop that brought this version
"""

PRESCRIPTION_COLUMNS = """
    prescription_id VARCHAR NOT NULL,
    version         INTEGER NOT NULL,
    measure         VARCHAR NOT NULL,
    department      VARCHAR NOT NULL,
    prescriber_id   VARCHAR NOT NULL,
    prescribed_date DATE NOT NULL,
    status          VARCHAR NOT NULL,
    contract_id     VARCHAR,
    drop_date       DATE NOT NULL
"""

ENVELOPE_COLUMNS = """
    year                   INTEGER NOT NULL,
    region_code            VARCHAR NOT NULL,
    measure                VARCHAR NOT NULL,
    version                INTEGER NOT NULL,
    physical_envelope      BIGINT NOT NULL,
    financial_envelope_eur DECIMAL(16,2) NOT NULL,
    decided_date           DATE NOT NULL,
    drop_date              DATE NOT NULL
"""

PAYMENT_COLUMNS = """
    payment_id   VARCHAR NOT NULL,
    contract_id  VARCHAR NOT NULL,
    period_month VARCHAR NOT NULL,
    paid_date    DATE NOT NULL,
    amount_eur   DECIMAL(14,2) NOT NULL,
    kind         VARCHAR NOT NULL,
    drop_date    DATE NOT NULL
"""

V1 = f"""
CREATE TABLE dim_department (
    department_code   VARCHAR NOT NULL,
    department_name   VARCHAR NOT NULL,
    region_2005_code  VARCHAR NOT NULL,
    region_2005_name  VARCHAR NOT NULL,
    region_2016_code  VARCHAR NOT NULL,
    region_2016_name  VARCHAR NOT NULL
);
CREATE TABLE dim_measure (
    measure_code  VARCHAR NOT NULL,
    measure_label VARCHAR NOT NULL,
    sector_code   VARCHAR NOT NULL,
    sector_label  VARCHAR NOT NULL
);
CREATE TABLE dim_calendar (
    day           DATE NOT NULL,
    iso_year      INTEGER NOT NULL,
    iso_week      INTEGER NOT NULL,
    week_label    VARCHAR NOT NULL,   -- 2006-W03
    week_start    DATE NOT NULL,      -- Monday of the ISO week
    month         INTEGER NOT NULL,
    month_label   VARCHAR NOT NULL,   -- 2006-03
    quarter       INTEGER NOT NULL,
    quarter_label VARCHAR NOT NULL,   -- 2006-Q1
    year          INTEGER NOT NULL,
    day_of_week   INTEGER NOT NULL    -- ISO: 1 = Monday
);

CREATE TABLE contracts ({CONTRACT_COLUMNS});
CREATE TABLE contract_versions ({CONTRACT_COLUMNS});
CREATE TABLE prescriptions ({PRESCRIPTION_COLUMNS});
CREATE TABLE prescription_versions ({PRESCRIPTION_COLUMNS});
CREATE TABLE envelopes ({ENVELOPE_COLUMNS});
CREATE TABLE envelope_versions ({ENVELOPE_COLUMNS});

-- Payments carry their contract's department, measure and cancellation (kept
-- in step when the contract changes): payments by geography without a join.
CREATE TABLE payments ({PAYMENT_COLUMNS},
    department         VARCHAR NOT NULL,
    measure            VARCHAR NOT NULL,
    contract_cancelled BOOLEAN NOT NULL
);
-- Valid payments whose contract is not in the warehouse yet.
CREATE TABLE held_payments ({PAYMENT_COLUMNS},
    file VARCHAR NOT NULL,
    line INTEGER NOT NULL
);

CREATE SEQUENCE load_id_seq START 1;
-- One row per drop a load applied or refused (drops already loaded are skipped
-- without a row). drop_date is NULL for a refused folder not named after a date.
CREATE TABLE load_drops (
    load_id     INTEGER NOT NULL,
    drop_date   DATE,
    drop_path   VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,     -- sha256 over the control file's (file, sha256) pairs
    outcome     VARCHAR NOT NULL,     -- loaded | refused
    message     VARCHAR,
    started     TIMESTAMP NOT NULL,
    finished    TIMESTAMP NOT NULL
);
-- One row per data file of a loaded drop (a refused drop has only its load_drops row).
CREATE TABLE load_files (
    load_id        INTEGER NOT NULL,
    drop_date      DATE NOT NULL,
    file           VARCHAR NOT NULL,
    sha256         VARCHAR,
    rows_read      BIGINT NOT NULL DEFAULT 0,
    rows_loaded    BIGINT NOT NULL DEFAULT 0,
    rows_unchanged BIGINT NOT NULL DEFAULT 0,
    rows_stale     BIGINT NOT NULL DEFAULT 0,
    rows_rejected  BIGINT NOT NULL DEFAULT 0,
    rows_held      BIGINT NOT NULL DEFAULT 0,
    started        TIMESTAMP NOT NULL,
    finished       TIMESTAMP NOT NULL,
    outcome        VARCHAR NOT NULL,
    message        VARCHAR
);
-- Rejected rows, whole and as written.
CREATE TABLE rejects (
    load_id   INTEGER NOT NULL,
    drop_date DATE NOT NULL,
    file      VARCHAR NOT NULL,
    line      INTEGER NOT NULL,       -- physical line, the header being line 1
    "column"  VARCHAR,
    rule      VARCHAR NOT NULL,
    raw       VARCHAR
);
"""

# The alerts (pilotage.reports.alerts): the state of each (rule, member,
# threshold, period) at the last evaluation, and every change of state.
V2 = """
CREATE TABLE alert_states (
    rule         VARCHAR NOT NULL,
    member       VARCHAR NOT NULL,    -- 'region_2005=25|measure=CAE'; '' for a rule without breakdown
    member_label VARCHAR NOT NULL,
    threshold    VARCHAR NOT NULL,    -- which limit of the rule: 'above 0.9'
    period       VARCHAR NOT NULL,    -- '2006' for a rule firing once per year, else ''
    state        VARCHAR NOT NULL,    -- OK | FIRING | NO DATA | ERROR
    firing       BOOLEAN NOT NULL,    -- fired and not resolved since (NO DATA and ERROR leave it as it was)
    severity     VARCHAR NOT NULL,
    value        DOUBLE,              -- the value judged at the last evaluation
    limit_value  DOUBLE,
    detail       VARCHAR NOT NULL,    -- French, as shown in the messages
    since        DATE NOT NULL,       -- data date (as_of) the state began
    as_of        DATE NOT NULL,       -- data date of the last evaluation
    evaluated_at TIMESTAMP NOT NULL
);
CREATE TABLE alert_events (
    event_id     BIGINT NOT NULL,     -- in the order of the changes (max + 1, under the write lock)
    happened_at  TIMESTAMP NOT NULL,
    as_of        DATE NOT NULL,
    rule         VARCHAR NOT NULL,
    member       VARCHAR NOT NULL,
    member_label VARCHAR NOT NULL,
    threshold    VARCHAR NOT NULL,
    period       VARCHAR NOT NULL,
    from_state   VARCHAR,             -- NULL: the first evaluation of this member
    to_state     VARCHAR NOT NULL,
    change       VARCHAR,             -- fired | resolved (emailed); NULL: kept for the history only
    severity     VARCHAR NOT NULL,
    value        DOUBLE,
    limit_value  DOUBLE,
    detail       VARCHAR NOT NULL,
    notified_at  TIMESTAMP            -- when every recipient had it; NULL while some are still to be sent
);
"""


# The history of a versioned kind is its current rows plus its superseded ones:
# each version is stored once (a backlog wrote every current row twice, as
# history and as current state, a tenth of its load time). The history keeps
# its name, as a view, for the readers ("as known on date D", the lake).
HISTORIES = (  # (history view, current table, superseded versions, columns, key)
    ("contract_versions", "contracts", "contract_superseded", CONTRACT_COLUMNS, ("contract_id",)),
    ("prescription_versions", "prescriptions", "prescription_superseded", PRESCRIPTION_COLUMNS,
     ("prescription_id",)),
    ("envelope_versions", "envelopes", "envelope_superseded", ENVELOPE_COLUMNS, ("year", "region_code", "measure")),
)


def _split_histories(con: duckdb.DuckDBPyConnection) -> None:
    """Migration 3: keep in each history table only the versions that are not current, as
    `<kind>_superseded`, and make the history a view of current + superseded."""
    for history, current, superseded, columns, key in HISTORIES:
        same = " AND ".join(f"c.{k} = h.{k}" for k in (*key, "version"))
        con.execute(f"CREATE TABLE {superseded} ({columns})")
        con.execute(f"INSERT INTO {superseded} SELECT * FROM {history} h "
                    f"WHERE NOT EXISTS (SELECT 1 FROM {current} c WHERE {same})")
        con.execute(f"DROP TABLE {history}")
        con.execute(f"CREATE VIEW {history} AS SELECT * FROM {current} UNION ALL SELECT * FROM {superseded}")


@dataclass(frozen=True)
class Migration:
    """One step of the schema: SQL text, or a function for data migrations."""

    version: int
    description: str
    apply: str | Callable[[duckdb.DuckDBPyConnection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "star schema, version history, load audit", V1),
    Migration(2, "alert states and their history", V2),
    Migration(3, "version histories stored as current + superseded versions", _split_histories),
)

SCHEMA_VERSION = MIGRATIONS[-1].version


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version recorded in the file (0 for an empty file)."""
    exists = con.sql(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'schema_migrations' AND table_schema = 'main'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    return con.sql("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0]


def migrate(con: duckdb.DuckDBPyConnection) -> list[Migration]:
    """Apply the migrations the file lacks; return those applied.

    Runs inside the caller's transaction (the write session's), so a failed
    migration leaves the file as it was.
    """
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations "
        "(version INTEGER NOT NULL, description VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
    )
    have = current_version(con)
    if have > SCHEMA_VERSION:
        raise RuntimeError(
            f"the warehouse is at schema version {have}, newer than this pilotage "
            f"({SCHEMA_VERSION}): upgrade pilotage"
        )
    applied = []
    for migration in MIGRATIONS:
        if migration.version <= have:
            continue
        if isinstance(migration.apply, str):
            con.execute(migration.apply)
        else:
            migration.apply(con)
        con.execute(
            "INSERT INTO schema_migrations VALUES (?, ?, current_timestamp::TIMESTAMP)",
            [migration.version, migration.description],
        )
        applied.append(migration)
    return applied
