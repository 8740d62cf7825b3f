"""Load benchmark: a year's backlog, then one daily drop, against raw DuckDB doing the same reads.

    python3 bench/bench_load.py --scale 4

1. Backlog: `pilotage load` of a year of drops into a new warehouse, against a
   bare `CREATE TABLE … AS SELECT * FROM read_csv(…, all_varchar=true)` of the
   same files (text columns: the files hold bad rows a typed read would stop
   on; the fastest read of them all) (goal: at most 2.0×).
2. Daily drop: about 1 % of the contracts changed plus a day of payments,
   loaded into that warehouse (goal: at most 1 s), against raw DuckDB reading
   the same files and upserting them (DELETE + INSERT) in a copy of the same
   warehouse.
Peak memory of each step is its process's maximum resident set.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import OUT, drops_for, measured, report  # noqa: E402

BARE = """
import duckdb, glob
con = duckdb.connect(path)
start()
for kind in ("contracts", "payments", "prescriptions", "envelopes"):
    files = sorted(glob.glob(f"{drops}/*/{kind}.csv"))
    con.execute(f"CREATE TABLE {kind} AS SELECT * FROM read_csv({files!r}, delim=';', header=true, all_varchar=true)")
con.close()
"""

PILOTAGE = """
from pilotage.warehouse import Warehouse
from pilotage.etl.loader import load_drops
start()
r = load_drops(Warehouse(path), paths)
result["drops"] = len(r.drops)
result["refused"] = len(r.refused)
"""

RAW_DAILY = """
import duckdb
con = duckdb.connect(path)
start()
con.execute("BEGIN")
con.execute(f"CREATE TEMP TABLE c AS SELECT * FROM read_csv('{drop}/contracts.csv', delim=';', header=true)")
con.execute(f"CREATE TEMP TABLE p AS SELECT * FROM read_csv('{drop}/payments.csv', delim=';', header=true)")
con.execute("DELETE FROM contracts WHERE contract_id IN (SELECT contract_id FROM c)")
con.execute("INSERT INTO contracts BY NAME SELECT *, coalesce(actual_end_date, planned_end_date) AS end_date, "
            "DATE '2007-01-02' AS drop_date FROM c")
con.execute("INSERT INTO payments BY NAME SELECT p.*, DATE '2007-01-02' AS drop_date, c.department, c.measure, "
            "false AS contract_cancelled FROM p JOIN contracts c USING (contract_id)")
con.execute("COMMIT")
con.execute("CHECKPOINT")
con.close()
"""


def make_daily_drop(warehouse: Path, folder: Path, share: float = 0.01) -> Path:
    """A drop dated 2007-01-02: `share` of the contracts in a new version, and a day of payments."""
    import duckdb

    drop = folder / "2007-01-02"
    if drop.exists():
        shutil.rmtree(drop)
    drop.mkdir(parents=True)
    con = duckdb.connect(str(warehouse), read_only=True)
    columns = ("contract_id, version + 1 AS version, measure, department, employer_id, employer_type, "
               "prescriber_id, prescription_id, beneficiary_sex, beneficiary_birth_year, beneficiary_category, "
               "signed_date, start_date, planned_end_date, actual_end_date, end_reason, "
               "CASE WHEN weekly_hours > 20 THEN weekly_hours - 1 ELSE weekly_hours + 1 END AS weekly_hours, "
               "subsidy_rate, monthly_aid_eur, status")
    total = con.sql("SELECT count(*) FROM contracts").fetchall()[0][0]
    con.execute(f"COPY (SELECT {columns} FROM contracts USING SAMPLE {int(total * share)} ROWS (reservoir, 7)) "
                f"TO '{drop}/contracts.csv' (DELIMITER ';', HEADER)")
    per_day = con.sql("SELECT count(*) // count(DISTINCT drop_date) FROM payments").fetchall()[0][0]
    con.execute(f"""COPY (SELECT 'PAY-2007-B' || lpad(CAST(row_number() OVER () AS VARCHAR), 8, '0') AS payment_id,
                   contract_id, '2006-12' AS period_month, DATE '2007-01-02' AS paid_date, monthly_aid_eur AS amount_eur,
                   'AID' AS kind FROM contracts WHERE status = 'ACTIVE' AND monthly_aid_eur > 0
                   USING SAMPLE {per_day} ROWS (reservoir, 11))
                TO '{drop}/payments.csv' (DELIMITER ';', HEADER)""")
    con.close()
    (drop / "prescriptions.csv").write_text(
        "prescription_id;version;measure;department;prescriber_id;prescribed_date;status;contract_id\n")
    lines = ["file;rows;sha256"]
    for name in ("contracts.csv", "payments.csv", "prescriptions.csv"):
        data = (drop / name).read_bytes()
        rows = data.count(b"\n") - 1
        lines.append(f"{name};{rows};{hashlib.sha256(data).hexdigest()}")
    (drop / "control.csv").write_text("\n".join(lines) + "\n")
    return drop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=4.0)
    args = parser.parse_args()
    drops = drops_for(args.scale)
    size = sum(f.stat().st_size for f in drops.rglob("*.csv")) / 2**20
    work = OUT / f"load-s{args.scale:g}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    # each step starts with no dirty pages: the 600 MiB the bare read writes would otherwise be flushed
    # to disk while the next step runs, and counted in its time
    os.sync()
    bare = measured(BARE, path=str(work / "bare.duckdb"), drops=str(drops))
    paths = sorted(str(p) for p in drops.iterdir() if p.is_dir())
    os.sync()
    ours = measured(PILOTAGE, path=str(work / "w.duckdb"), paths=paths)

    daily = make_daily_drop(work / "w.duckdb", work / "daily")
    shutil.copyfile(work / "w.duckdb", work / "raw.duckdb")
    os.sync()  # the copy's dirty pages would otherwise be flushed by the raw side's checkpoint
    raw = measured(RAW_DAILY, path=str(work / "raw.duckdb"), drop=str(daily))
    one = measured(PILOTAGE, path=str(work / "w.duckdb"), paths=[str(daily)])
    warehouse_mib = (work / "w.duckdb").stat().st_size / 2**20
    rows = [
        ("backlog: bare CREATE TABLE AS read_csv", f"{bare['seconds']:.2f}", f"{bare['cpu_seconds']:.2f}",
         f"{bare['peak_mib']:.0f}", "", ""),
        (f"backlog: pilotage load ({ours['drops']} drops, {ours['refused']} refused)", f"{ours['seconds']:.2f}",
         f"{ours['cpu_seconds']:.2f}", f"{ours['peak_mib']:.0f}", f"{ours['seconds'] / bare['seconds']:.2f}x",
         f"{ours['cpu_seconds'] / bare['cpu_seconds']:.2f}x"),
        ("daily drop: raw DuckDB read + upsert", f"{raw['seconds']:.3f}", f"{raw['cpu_seconds']:.3f}",
         f"{raw['peak_mib']:.0f}", "", ""),
        ("daily drop: pilotage load", f"{one['seconds']:.3f}", f"{one['cpu_seconds']:.3f}", f"{one['peak_mib']:.0f}",
         f"{one['seconds'] / raw['seconds']:.2f}x", f"{one['cpu_seconds'] / raw['cpu_seconds']:.2f}x"),
    ]
    print(f"\nscale {args.scale:g}: {len(paths)} drops, {size:.0f} MiB of CSV; warehouse {warehouse_mib:.0f} MiB")
    report(rows, ("step", "seconds", "CPU s", "peak MiB", "ratio", "CPU ratio"))


if __name__ == "__main__":
    main()
