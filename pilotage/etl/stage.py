"""Reading a chunk of drops, as DuckDB parses them, into typed and checked rows.

All the files of one kind with the same header are read by one `read_csv`
call (columns as text, nothing guessed), typed and checked on the way
(validate.py), into a temporary table `typed_<kind>`. Inserting preserves the
file order, so a row's `rowid` gives its line:
`rowid - first rowid of its file + 2` (the header is line 1). Files where that
does not hold (blank lines, or lines DuckDB set aside for a wrong number of
fields) get an explicit line map built from the file's text.

Lines with a wrong number of fields are rows to reject; anything else DuckDB
cannot parse (bad encoding, an unterminated quote) makes the file unreadable,
and its drop is refused.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

import duckdb

import numpy as np
import pyarrow as pa

from pilotage.etl.drop import Drop, DropFile
from pilotage.etl.spec import FILES, FileSpec
from pilotage.etl.validate import create_typed_table, sql_string, typed_select, typed_table

ROW_LEVEL_ERRORS = ("MISSING COLUMNS", "TOO MANY COLUMNS")  # rejected rows; other errors refuse the file


@dataclass(frozen=True)
class StagedFile:
    file_id: int
    drop_seq: int  # position of the drop in the chunk (date order)
    drop: Drop
    file: DropFile


def sql_list(items) -> str:
    return "[" + ", ".join(sql_string(str(i)) for i in items) + "]"


def stage_chunk(con: duckdb.DuckDBPyConnection, drops: list[Drop]) -> tuple[list[StagedFile], dict[int, str]]:
    """Stage every file of `drops`; return the files and {drop_seq: refusal reason}."""
    staged = [
        StagedFile(file_id, seq, drop, f)
        for file_id, (seq, drop, f) in enumerate(
            (seq, drop, f) for seq, drop in enumerate(drops) for f in drop.files
        )
    ]
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _files (file_id INTEGER, drop_seq INTEGER, drop_date DATE, "
        "file VARCHAR, path VARCHAR, fast_lines BOOLEAN)"
    )
    if staged:
        con.executemany(
            "INSERT INTO _files VALUES (?, ?, ?, ?, ?, ?)",
            [(s.file_id, s.drop_seq, s.drop.date, s.file.spec.filename, str(s.file.path), s.file.blank_lines == 0)
             for s in staged],
        )
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _structural (file_id INTEGER, line BIGINT, error_type VARCHAR, "
        "raw VARCHAR, message VARCHAR)"
    )
    unreadable: dict[int, str] = {}
    for spec in FILES:
        create_typed_table(con, spec)
        groups: dict[tuple[str, ...], list[StagedFile]] = defaultdict(list)
        for s in staged:
            if s.file.spec is spec and s.file.rows:  # a header-only file has nothing to read
                groups[s.file.header].append(s)
        for header, group in groups.items():
            unreadable.update(_read_group(con, spec, header, group))
    refused = _refusals(con, staged, unreadable)
    return staged, refused


# Fields are read with a sentinel as the null string, so that an empty field
# reads as '' and a missing one (padded) as NULL: the two must not be confused
# when counting fields. One extra column catches a line with one field too many
# (DuckDB otherwise accepts a trailing separator); more are set aside by DuckDB.
_NO_NULL = "<pilotage:no-null>"
_EXTRA = "__pilotage_extra__"


def _read_group(con: duckdb.DuckDBPyConnection, spec: FileSpec, header: tuple[str, ...],
                group: list[StagedFile]) -> dict[int, str]:
    """Read files sharing a header; return {file_id: reason} for files DuckDB cannot read at all."""
    for attempt in (_strict, _lenient):
        try:
            attempt(con, spec, header, group)
            return {}
        except duckdb.Error as exc:
            error = exc
    if len(group) > 1:  # find which file it is
        unreadable = {}
        for one in group:
            unreadable.update(_read_group(con, spec, header, [one]))
        return unreadable
    return {group[0].file_id: str(error).splitlines()[0]}


def _select(spec: FileSpec, header: tuple[str, ...], group: list[StagedFile], extra_options: str = "") -> str:
    paths = [str(s.file.path) for s in group]
    columns = "{" + ", ".join(f"{sql_string(c)}: 'VARCHAR'" for c in header + (_EXTRA,)) + "}"
    options = (
        f"delim=';', quote='\"', escape='\"', header=true, auto_detect=false, columns={columns}, "
        f"filename=true, strict_mode=true, encoding='utf-8', null_padding=true, "
        f"nullstr={sql_string(_NO_NULL)}{extra_options}"
    )
    bad_fields = " OR ".join([f'"{_EXTRA}" IS NOT NULL'] + [f'"{c}" IS NULL' for c in header])
    position = f"list_position({sql_list(paths)}, filename)"
    source = (
        "(SELECT " + ", ".join(f"nullif(\"{c}\", '') AS \"{c}\"" for c in spec.column_names)
        + f", {bad_fields} AS _bad_fields"
        + f", ({sql_list([s.file_id for s in group])}::INTEGER[])[{position}] AS _file_id"
        + f", ({sql_list([s.drop_seq for s in group])}::INTEGER[])[{position}] AS _drop_seq"
        + f", ({sql_list([s.drop.date.isoformat() for s in group])}::DATE[])[{position}] AS drop_date"
        + f" FROM read_csv({sql_list(paths)}, {options}))"
    )
    return f"INSERT INTO {typed_table(spec)} {typed_select(spec, source)}"


def _strict(con: duckdb.DuckDBPyConnection, spec: FileSpec, header: tuple[str, ...], group: list[StagedFile]) -> None:
    con.execute(_select(spec, header, group))


def _lenient(con: duckdb.DuckDBPyConnection, spec: FileSpec, header: tuple[str, ...], group: list[StagedFile]) -> None:
    """Read again, letting DuckDB set aside the lines it cannot parse, and keep those."""
    con.execute("DROP TABLE IF EXISTS _rej_errors")
    con.execute("DROP TABLE IF EXISTS _rej_scans")
    con.execute(_select(spec, header, group, ", ignore_errors=true, store_rejects=true, "
                        "rejects_table='_rej_errors', rejects_scan='_rej_scans'"))
    paths = [str(s.file.path) for s in group]
    con.execute(
        f"""INSERT INTO _structural
        SELECT ({sql_list([s.file_id for s in group])}::INTEGER[])[list_position({sql_list(paths)}, s.file_path)],
               e.line, arg_min(e.error_type, e.column_idx), arg_min(e.csv_line, e.column_idx),
               arg_min(e.error_message, e.column_idx)
        FROM _rej_errors e JOIN _rej_scans s USING (scan_id, file_id)
        GROUP BY ALL"""
    )
    con.execute("DROP TABLE IF EXISTS _rej_errors")
    con.execute("DROP TABLE IF EXISTS _rej_scans")


def _refusals(con: duckdb.DuckDBPyConnection, staged: list[StagedFile], unreadable: dict[int, str]) -> dict[int, str]:
    """Drops to refuse: a file DuckDB cannot parse, or whose row count differs from its lines."""
    by_id = {s.file_id: s for s in staged}
    refused: dict[int, str] = {}
    for file_id, reason in unreadable.items():
        s = by_id[file_id]
        refused.setdefault(s.drop_seq, f"{s.file.spec.filename}: unreadable: {reason}")
    fatal = con.sql(
        "SELECT file_id, min(line), arg_min(error_type, line), arg_min(message, line) FROM _structural "
        f"WHERE error_type NOT IN {tuple(ROW_LEVEL_ERRORS)} GROUP BY file_id ORDER BY file_id"
    ).fetchall()
    for file_id, line, error_type, message in fatal:
        s = by_id[file_id]
        if error_type == "INVALID ENCODING":
            first = "not UTF-8 (the file is refused, not re-decoded)"
        else:
            first = f"{error_type.lower()}: " + (message or error_type).splitlines()[0]
        refused.setdefault(s.drop_seq, f"{s.file.spec.filename}: line {line}: {first}")
    counts = dict(
        con.sql(
            " UNION ALL ".join(f"SELECT _file_id, count(*) FROM {typed_table(spec)} GROUP BY 1" for spec in FILES)
        ).fetchall()
    )
    set_aside = dict(con.sql("SELECT file_id, count(*) FROM _structural GROUP BY 1").fetchall())
    for s in staged:
        parsed = counts.get(s.file_id, 0) + set_aside.get(s.file_id, 0)
        if parsed != s.file.rows and s.drop_seq not in refused:
            refused[s.drop_seq] = (
                f"{s.file.spec.filename}: {s.file.rows} data lines but {parsed} rows parsed "
                "(a quoted field spanning lines?)"
            )
    return refused


def build_line_maps(con: duckdb.DuckDBPyConnection) -> None:
    """_offsets: first rowid of each file; _linemap: k-th row -> line, where lines shift.

    Only for the files of `_files` (refused drops removed first: their text may not even decode).
    """
    con.execute(
        "CREATE OR REPLACE TEMP TABLE _offsets AS "
        + " UNION ALL ".join(
            f"SELECT _file_id AS file_id, min(rowid) AS first_row FROM {typed_table(spec)} GROUP BY 1"
            for spec in FILES
        )
    )
    con.execute("CREATE OR REPLACE TEMP TABLE _linemap (file_id INTEGER, k BIGINT, line BIGINT)")
    slow = con.sql(
        "SELECT DISTINCT f.file_id, f.path FROM _files f LEFT JOIN _structural s USING (file_id) "
        "WHERE NOT f.fast_lines OR s.file_id IS NOT NULL"
    ).fetchall()
    if not slow:
        return
    ids = [file_id for file_id, _ in slow]
    paths = [path for _, path in slow]
    con.execute(
        f"""INSERT INTO _linemap
        WITH text AS (
            SELECT ({sql_list(ids)}::INTEGER[])[list_position({sql_list(paths)}, filename)] AS file_id,
                   string_split(content, chr(10)) AS lines
            FROM read_text({sql_list(paths)})
        ), numbered AS (
            SELECT file_id, generate_subscripts(lines, 1) AS line, rtrim(unnest(lines), chr(13)) AS text
            FROM text
        )
        SELECT file_id, row_number() OVER (PARTITION BY file_id ORDER BY line) AS k, line
        FROM numbered n
        WHERE line > 1 AND text <> '' AND NOT EXISTS (
            SELECT 1 FROM _structural s WHERE s.file_id = n.file_id AND s.line = n.line)"""
    )


def with_lines(relation: str) -> str:
    """SQL selecting `relation` (with _file_id, _row) plus its physical `line`."""
    return f"""
        SELECT r.*, coalesce(m.line, r._row - o.first_row + 2)::INTEGER AS line
        FROM {relation} r
        JOIN _offsets o ON o.file_id = r._file_id
        LEFT JOIN _linemap m ON m.file_id = r._file_id AND m.k = r._row - o.first_row + 1"""


def add_raw_lines(con: duckdb.DuckDBPyConnection, relation: str, target: str,
                  line_ends: dict[str, np.ndarray] | None = None) -> None:
    """Create `target`: `relation` (with file_id, line) plus the `raw` text of that line, as written.

    Only the rejected lines are read, at the offsets of `line_ends` ({path:
    offsets of its line ends}, found when the drop was inspected); for a file
    missing there, numpy finds its line ends.
    """
    wanted = con.sql(
        f"SELECT f.file_id, f.path, list(DISTINCT r.line ORDER BY r.line) FROM _files f "
        f"JOIN {relation} r USING (file_id) GROUP BY ALL ORDER BY 1"
    ).fetchall()
    ids, lines, raws = [], [], []
    for file_id, path, numbers in wanted:
        ends = (line_ends or {}).get(path)
        for line, raw in zip(numbers, _cut_lines(path, numbers, ends)):
            ids.append(file_id)
            lines.append(line)
            raws.append(raw)
    picked = pa.table({"file_id": pa.array(ids, pa.int32()), "line": pa.array(lines, pa.int32()),
                       "raw": pa.array(raws, pa.string())})
    con.register("_picked", picked)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {target} AS "
        f"SELECT r.*, p.raw FROM {relation} r LEFT JOIN _picked p USING (file_id, line)"
    )
    con.unregister("_picked")


def _cut_lines(path: str, numbers: list[int], ends: np.ndarray | None = None) -> list[str]:
    """The text of the given physical lines (1-based) of a file, without their line end.

    With the offsets of the file's line ends known, only those lines are read.
    """
    with open(path, "rb") as handle:
        if ends is None:
            data = handle.read()
            ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
            size = len(data)

            def read(start: int, end: int) -> bytes:
                return data[start:end]
        else:
            size = os.fstat(handle.fileno()).st_size

            def read(start: int, end: int) -> bytes:
                handle.seek(start)
                return handle.read(end - start)

        cut = []
        for number in numbers:
            start = 0 if number == 1 else int(ends[number - 2]) + 1
            end = int(ends[number - 1]) if number - 1 < len(ends) else size
            cut.append(read(start, end).rstrip(b"\r").decode("utf-8", errors="replace"))
    return cut
